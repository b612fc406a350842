//! The access policy, in order:
//!
//! 1. the workspace and the endpoint both have public network access enabled: anyone;
//! 2. else the request must be private ingress: its LINKID is one of `private_link_ids`, or
//!    its client address is in `private_networks` but not in one of moat's own bridge
//!    networks (a container is never private ingress, whatever subnet Docker gave it; a
//!    LINKID not listed proves nothing);
//! 3. anything else is refused with the reason.

use ipnet::IpNet;
use moat_net::within;

use super::IngressConfig;
use super::origin::Origin;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny(Reason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    PublicAccessDisabled,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::PublicAccessDisabled => "public_access_disabled",
        }
    }
}

/// `public_access`: the workspace's and the endpoint's settings taken together;
/// `moat_networks`: the bridge subnets of moat's own containers.
pub fn decide(
    public_access: bool,
    origin: &Origin,
    config: &IngressConfig,
    moat_networks: &[IpNet],
) -> Decision {
    if public_access {
        return Decision::Allow;
    }
    let by_link = origin.link_id.is_some_and(|id| config.private_link_ids.contains(&id));
    let by_address =
        origin.client.is_some_and(|ip| within(ip, &config.private_networks) && !within(ip, moat_networks));
    if by_link || by_address { Decision::Allow } else { Decision::Deny(Reason::PublicAccessDisabled) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(client: Option<&str>, link_id: Option<u32>) -> Origin {
        Origin { client: client.map(|c| c.parse().expect("ip")), link_id }
    }

    #[test]
    fn public_access_lets_anyone_in() {
        let c = IngressConfig::default();
        assert_eq!(decide(true, &from(Some("198.51.100.7"), None), &c, &[]), Decision::Allow);
        assert_eq!(decide(true, &from(None, None), &c, &[]), Decision::Allow);
    }

    #[test]
    fn without_it_only_private_ingress_gets_in() {
        let c = IngressConfig { private_link_ids: vec![42], ..IngressConfig::default() };
        let deny = Decision::Deny(Reason::PublicAccessDisabled);
        assert_eq!(decide(false, &from(Some("10.0.0.7"), None), &c, &[]), Decision::Allow);
        assert_eq!(decide(false, &from(Some("198.51.100.7"), None), &c, &[]), deny);
        assert_eq!(
            decide(false, &from(Some("198.51.100.7"), Some(42)), &c, &[]),
            Decision::Allow,
            "listed LINKID"
        );
        assert_eq!(decide(false, &from(Some("198.51.100.7"), Some(43)), &c, &[]), deny, "unlisted LINKID");
        assert_eq!(decide(false, &from(None, None), &c, &[]), deny, "a LOCAL probe counts as public");
    }

    #[test]
    fn a_container_on_a_moat_bridge_is_never_private_ingress() {
        let c = IngressConfig::default();
        let bridges: Vec<IpNet> = vec!["172.18.0.0/16".parse().expect("net")];
        let deny = Decision::Deny(Reason::PublicAccessDisabled);
        assert_eq!(
            decide(false, &from(Some("172.18.0.2"), None), &c, &bridges),
            deny,
            "inside 172.16.0.0/12"
        );
        assert_eq!(
            decide(false, &from(Some("::ffff:172.18.0.2"), None), &c, &bridges),
            deny,
            "in any spelling"
        );
        assert_eq!(
            decide(false, &from(Some("172.19.0.2"), None), &c, &bridges),
            Decision::Allow,
            "another network"
        );
    }
}
