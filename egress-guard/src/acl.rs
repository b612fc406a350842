//! The allow/deny decision for one destination, as a pure function. In order:
//!
//! 1. an IP literal (any spelling, see [`crate::ip_literal`]) passes only when it is exactly a
//!    listed address of a private endpoint, on one of that endpoint's ports;
//! 2. a name passes when, in canonical form ([`crate::names`]), it is an endpoint's fqdn or
//!    one of its aliases, on one of that endpoint's ports;
//! 3. everything else is denied, with the reason.
//!
//! An allowed destination is dialled at the endpoint's listed address, never at what the name
//! might resolve to, so DNS cannot steer a connection elsewhere.

use std::net::{IpAddr, SocketAddr};

use crate::{ip_literal, names};

/// A private endpoint as the guard enforces it (names already canonical).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub name: String,
    pub fqdn: String,
    pub aliases: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub ports: Vec<u16>,
    /// Ports besides 443 that carry TLS: a connection to one must open with a ClientHello
    /// naming the endpoint.
    pub tls_ports: Vec<u16>,
}

/// The port that always carries TLS.
pub const HTTPS: u16 = 443;

impl Endpoint {
    pub fn is_tls(&self, port: u16) -> bool {
        port == HTTPS || self.tls_ports.contains(&port)
    }

    pub fn has_name(&self, canonical: &str) -> bool {
        self.fqdn == canonical || self.aliases.iter().any(|a| a == canonical)
    }

    /// The address to dial: the first listed one.
    pub fn dial(&self, port: u16) -> Option<SocketAddr> {
        self.ips.first().map(|ip| SocketAddr::new(*ip, port))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// To endpoint number `endpoint`, at `dial`.
    Allow {
        endpoint: usize,
        dial: SocketAddr,
    },
    Deny(Reason),
}

/// Why (CONTRACT.md's `reason` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Allowlisted,
    NotAllowlisted,
    PortNotAllowed,
    IpLiteral,
    SniMismatch,
    DnsRefused,
    Kernel,
    /// The destination leads back home (loopback, link-local, a moat network, ...).
    PointsHome,
    /// The deployment had as many connections open as it may.
    ConnectionCap,
    /// A TLS port, and the connection did not open with a ClientHello.
    NotTls,
    /// A ClientHello beyond what the guard reads (16 KiB).
    ClientHelloTooLarge,
    /// No complete ClientHello (or DNS message, or proxy request) in time.
    HandshakeTimeout,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Allowlisted => "allowlisted",
            Reason::NotAllowlisted => "not_allowlisted",
            Reason::PortNotAllowed => "port_not_allowed",
            Reason::IpLiteral => "ip_literal",
            Reason::SniMismatch => "sni_mismatch",
            Reason::DnsRefused => "dns_refused",
            Reason::Kernel => "kernel",
            Reason::PointsHome => "points_home",
            Reason::ConnectionCap => "connection_cap",
            Reason::NotTls => "not_tls",
            Reason::ClientHelloTooLarge => "client_hello_too_large",
            Reason::HandshakeTimeout => "handshake_timeout",
        }
    }
}

pub fn judge(endpoints: &[Endpoint], host: &str, port: u16) -> Verdict {
    let found = match ip_literal::parse(host) {
        Some(ip) => match endpoints.iter().position(|e| e.ips.contains(&ip)) {
            Some(i) => Some((i, SocketAddr::new(ip, port))),
            None => return Verdict::Deny(Reason::IpLiteral),
        },
        None => {
            let Some(name) = names::canonical(host) else { return Verdict::Deny(Reason::NotAllowlisted) };
            let Some(i) = endpoints.iter().position(|e| e.has_name(&name)) else {
                return Verdict::Deny(Reason::NotAllowlisted);
            };
            endpoints[i].dial(port).map(|dial| (i, dial))
        }
    };
    match found {
        Some((i, dial)) if endpoints[i].ports.contains(&port) => Verdict::Allow { endpoint: i, dial },
        Some(_) => Verdict::Deny(Reason::PortNotAllowed),
        None => Verdict::Deny(Reason::NotAllowlisted),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints() -> Vec<Endpoint> {
        vec![
            Endpoint {
                name: "registry".into(),
                fqdn: "crdemo.azurecr.io".into(),
                aliases: vec!["crdemo.privatelink.azurecr.io".into()],
                ips: vec!["10.0.1.4".parse().expect("ip")],
                ports: vec![443],
                tls_ports: vec![],
            },
            Endpoint {
                name: "vault".into(),
                fqdn: "kvdemo.vault.azure.net".into(),
                aliases: vec![],
                ips: vec!["10.0.1.5".parse().expect("ip"), "10.0.1.6".parse().expect("ip")],
                ports: vec![443, 8443],
                tls_ports: vec![8443],
            },
        ]
    }

    fn allow(endpoint: usize, dial: &str) -> Verdict {
        Verdict::Allow { endpoint, dial: dial.parse().expect("addr") }
    }

    #[test]
    fn names_and_aliases_of_endpoints_pass_to_the_listed_address() {
        let e = endpoints();
        assert_eq!(judge(&e, "crdemo.azurecr.io", 443), allow(0, "10.0.1.4:443"));
        assert_eq!(judge(&e, "CRDEMO.privatelink.azurecr.io.", 443), allow(0, "10.0.1.4:443"));
        assert_eq!(judge(&e, "kvdemo.vault.azure.net", 8443), allow(1, "10.0.1.5:8443"));
    }

    #[test]
    fn other_names_ports_and_literals_are_denied_with_their_reason() {
        let e = endpoints();
        for (host, port, reason) in [
            ("example.com", 443, Reason::NotAllowlisted),
            ("crdemo.azurecr.io.evil.com", 443, Reason::NotAllowlisted),
            ("azurecr.io", 443, Reason::NotAllowlisted),
            ("crdemo.azurecr.io", 80, Reason::PortNotAllowed),
            ("203.0.113.5", 443, Reason::IpLiteral),
            ("0xcb007105", 443, Reason::IpLiteral),
            ("[::ffff:203.0.113.5]", 443, Reason::IpLiteral),
            ("10.0.1.4", 22, Reason::PortNotAllowed),
            ("not a name", 443, Reason::NotAllowlisted),
        ] {
            assert_eq!(judge(&e, host, port), Verdict::Deny(reason), "{host}:{port}");
        }
    }

    #[test]
    fn a_listed_address_passes_in_any_spelling_but_only_exactly() {
        let e = endpoints();
        for spelling in ["10.0.1.6", "167772422", "012.0.1.06", "::ffff:10.0.1.6"] {
            assert_eq!(judge(&e, spelling, 443), allow(1, "10.0.1.6:443"), "{spelling}");
        }
        assert_eq!(judge(&e, "10.0.1.7", 443), Verdict::Deny(Reason::IpLiteral), "a neighbour");
    }
}
