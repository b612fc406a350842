//! Ingress isolation: where a request comes from, and whether an endpoint that has public
//! network access disabled may answer it.
//!
//! - [`proxy_protocol`]: PROXY v1/v2 headers (and Azure Private Link's LINKID), from bytes.
//! - [`accept`]: reading (or refusing) a PROXY header at the start of a connection.
//! - [`origin`]: the client address of a request: the peer, or what a trusted balancer says.
//! - [`policy`]: the decision, a pure function of the endpoint's access and the origin.

pub mod accept;
pub mod origin;
pub mod policy;
pub mod proxy_protocol;

use ipnet::IpNet;

/// CONTRACT.md's `ingress` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressConfig {
    pub private_networks: Vec<IpNet>,
    pub trusted_proxies: Vec<IpNet>,
    pub private_link_ids: Vec<u32>,
    pub mode: Mode,
}

/// `enforce` refuses; `report` serves, and counts and logs what it would have refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Enforce,
    Report,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Report => "report",
        }
    }
}

/// RFC 1918, loopback, and unique-local IPv6.
pub const DEFAULT_PRIVATE_NETWORKS: [&str; 6] =
    ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "::1/128", "fc00::/7"];

impl Default for IngressConfig {
    fn default() -> Self {
        IngressConfig {
            private_networks: DEFAULT_PRIVATE_NETWORKS.iter().filter_map(|n| n.parse().ok()).collect(),
            trusted_proxies: Vec::new(),
            private_link_ids: Vec::new(),
            mode: Mode::Enforce,
        }
    }
}
