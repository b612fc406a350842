//! The client a request comes from: the TCP peer, unless the peer is a trusted balancer;
//! then its PROXY header says, or for plain HTTP without one, `X-Forwarded-For` read from the
//! right, skipping trusted hops. From anyone else `X-Forwarded-For` means nothing.

use std::net::{IpAddr, SocketAddr};

use http::HeaderName;
use ipnet::IpNet;

use super::IngressConfig;
use super::proxy_protocol::ProxyHeader;
use crate::fields::Fields;

/// What is known of a connection when it is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connection {
    pub peer: SocketAddr,
    /// The PROXY header a trusted balancer sent, if any.
    pub proxy: Option<ProxyHeader>,
}

/// Where one request comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// None: a balancer's LOCAL connection (a health probe), which counts as public.
    pub client: Option<IpAddr>,
    pub link_id: Option<u32>,
}

/// `::ffff:a.b.c.d` is the IPv4 address it carries.
pub use moat_net::{canonical, within};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

pub fn origin(conn: &Connection, headers: &impl Fields, config: &IngressConfig) -> Origin {
    let peer = canonical(conn.peer.ip());
    if !within(peer, &config.trusted_proxies) {
        return Origin { client: Some(peer), link_id: None };
    }
    if let Some(header) = conn.proxy {
        return Origin { client: header.source.map(|s| canonical(s.ip())), link_id: header.link_id };
    }
    Origin { client: Some(forwarded_for(headers, &config.trusted_proxies).unwrap_or(peer)), link_id: None }
}

/// The right-most `X-Forwarded-For` address that is not a trusted hop (or, if all are, the
/// left-most). Unparsable entries end the walk: nothing left of them can be believed.
fn forwarded_for(headers: &impl Fields, trusted: &[IpNet]) -> Option<IpAddr> {
    let hops: Vec<&str> = headers
        .all(&X_FORWARDED_FOR)
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .collect();
    let mut last = None;
    for hop in hops.iter().rev() {
        let ip = hop.parse::<IpAddr>().ok().or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))?;
        let ip = canonical(ip);
        if !within(ip, trusted) {
            return Some(ip);
        }
        last = Some(ip);
    }
    last
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;

    use super::*;

    fn config(trusted: &[&str]) -> IngressConfig {
        IngressConfig {
            trusted_proxies: trusted.iter().map(|t| t.parse().expect("cidr")).collect(),
            ..IngressConfig::default()
        }
    }

    fn conn(peer: &str, proxy: Option<ProxyHeader>) -> Connection {
        Connection { peer: peer.parse().expect("peer"), proxy }
    }

    fn xff(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", value.parse().expect("header"));
        h
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().expect("ip"))
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let c = config(&["10.9.0.0/16"]);
        let header = ProxyHeader { source: Some("10.0.0.5:1".parse().expect("addr")), link_id: Some(7) };
        let o = origin(&conn("198.51.100.7:4000", Some(header)), &xff("10.0.0.5"), &c);
        assert_eq!(o, Origin { client: ip("198.51.100.7"), link_id: None });
    }

    #[test]
    fn a_trusted_balancer_speaks_for_the_client() {
        let c = config(&["10.9.0.0/16"]);
        let header =
            ProxyHeader { source: Some("198.51.100.7:4000".parse().expect("addr")), link_id: Some(7) };
        assert_eq!(
            origin(&conn("10.9.0.4:1", Some(header)), &HeaderMap::new(), &c),
            Origin { client: ip("198.51.100.7"), link_id: Some(7) }
        );
        let local = ProxyHeader { source: None, link_id: None };
        assert_eq!(origin(&conn("10.9.0.4:1", Some(local)), &HeaderMap::new(), &c).client, None);
    }

    #[test]
    fn forwarded_for_is_read_from_the_right_past_trusted_hops() {
        let c = config(&["10.9.0.0/16"]);
        let peer = conn("10.9.0.4:1", None);
        assert_eq!(origin(&peer, &xff("203.0.113.9, 198.51.100.7, 10.9.0.8"), &c).client, ip("198.51.100.7"));
        assert_eq!(origin(&peer, &xff("10.9.0.2, 10.9.0.3"), &c).client, ip("10.9.0.2"));
        assert_eq!(origin(&peer, &xff("::ffff:198.51.100.7"), &c).client, ip("198.51.100.7"), "mapped IPv4");
        assert_eq!(
            origin(&peer, &xff("nonsense, 10.9.0.3"), &c).client,
            ip("10.9.0.4"),
            "unparsable: the peer"
        );
        assert_eq!(origin(&peer, &HeaderMap::new(), &c).client, ip("10.9.0.4"));
    }

    #[test]
    fn private_networks_by_default_and_their_edges() {
        let c = IngressConfig::default();
        for (addr, private) in [
            ("10.0.0.1", true),
            ("10.255.255.255", true),
            ("11.0.0.1", false),
            ("172.16.0.1", true),
            ("172.31.255.255", true),
            ("172.32.0.1", false),
            ("172.15.255.255", false),
            ("192.168.1.1", true),
            ("192.169.0.1", false),
            ("127.0.0.1", true),
            ("100.64.0.1", false),
            ("169.254.169.254", false),
            ("198.51.100.7", false),
            ("::1", true),
            ("fd00::1", true),
            ("fe80::1", false),
            ("2001:db8::1", false),
            ("::ffff:10.0.0.1", true),
            ("::ffff:198.51.100.7", false),
        ] {
            let ip: IpAddr = addr.parse().expect("ip");
            assert_eq!(within(ip, &c.private_networks), private, "{addr}");
        }
    }
}
