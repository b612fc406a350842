//! The one address classifier moat judges by, pure: validation refuses private endpoints that
//! point home, the egress guard never dials such an address, ingress never counts moat's own
//! bridges as private networks. Every IPv6 address that carries an IPv4 one (mapped
//! `::ffff:a.b.c.d`, compatible `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`) is judged as that IPv4
//! address, so no spelling slips past a rule about it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// What kind of address, in the order the checks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// `0.0.0.0/8` ("this network") and `::`.
    Unspecified,
    /// `127.0.0.0/8`, `::1`: the host itself.
    Loopback,
    /// `169.254.0.0/16` (a cloud's metadata service among them), `fe80::/10`.
    LinkLocal,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`, and the reserved `240.0.0.0/4`.
    Reserved,
    /// RFC 1918, `fc00::/7`.
    Private,
    /// `100.64.0.0/10`: a carrier's NAT.
    SharedNat,
    /// `192.0.2.0/24`, `198.51.100.0/24`, `203.0.113.0/24`, `2001:db8::/32`.
    Documentation,
    Public,
}

impl Class {
    /// Addresses a connection may never be relayed to: they lead back into the machine, to
    /// its neighbours on the link, or to many hosts at once.
    pub fn points_home(self) -> bool {
        matches!(
            self,
            Class::Unspecified | Class::Loopback | Class::LinkLocal | Class::Multicast | Class::Reserved
        )
    }
}

impl std::fmt::Display for Class {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Class::Unspecified => "unspecified",
            Class::Loopback => "loopback (this machine)",
            Class::LinkLocal => "link-local (the metadata service's range)",
            Class::Multicast => "multicast",
            Class::Reserved => "reserved",
            Class::Private => "private",
            Class::SharedNat => "shared address space (carrier NAT)",
            Class::Documentation => "documentation",
            Class::Public => "public",
        })
    }
}

/// The IPv4 address an IPv6 one carries, if it carries one; else the address itself.
pub fn canonical(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else { return ip };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    let s = v6.segments();
    // IPv4-compatible (deprecated, but still routed by some stacks): ::a.b.c.d, not :: or ::1.
    if s[..6] == [0; 6] && (s[6] != 0 || s[7] > 1) {
        return IpAddr::V4(Ipv4Addr::from(((s[6] as u32) << 16) | s[7] as u32));
    }
    // NAT64's well-known prefix: a translator on the path would deliver it to the IPv4 one.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return IpAddr::V4(Ipv4Addr::from(((s[6] as u32) << 16) | s[7] as u32));
    }
    ip
}

pub fn classify(ip: IpAddr) -> Class {
    match canonical(ip) {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Class {
    let [a, b, c, _] = ip.octets();
    match (a, b, c) {
        (0, _, _) => Class::Unspecified,
        (127, _, _) => Class::Loopback,
        (169, 254, _) => Class::LinkLocal,
        (224..=239, _, _) => Class::Multicast,
        (240..=255, _, _) => Class::Reserved,
        (10, _, _) | (192, 168, _) => Class::Private,
        (172, 16..=31, _) => Class::Private,
        (100, 64..=127, _) => Class::SharedNat,
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => Class::Documentation,
        _ => Class::Public,
    }
}

fn classify_v6(ip: Ipv6Addr) -> Class {
    let s = ip.segments();
    if ip.is_unspecified() {
        Class::Unspecified
    } else if ip.is_loopback() {
        Class::Loopback
    } else if s[0] & 0xffc0 == 0xfe80 {
        Class::LinkLocal
    } else if s[0] & 0xff00 == 0xff00 {
        Class::Multicast
    } else if s[0] & 0xfe00 == 0xfc00 {
        Class::Private
    } else if s[0] == 0x2001 && s[1] == 0x0db8 {
        Class::Documentation
    } else {
        Class::Public
    }
}

/// Whether `ip` (in any spelling) is inside one of `nets`.
pub fn within(ip: IpAddr, nets: &[IpNet]) -> bool {
    let ip = canonical(ip);
    nets.iter().any(|n| n.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    /// Each class with its edges and the neighbours just outside them.
    #[test]
    fn every_class_with_its_edges_and_their_neighbours() {
        use Class::*;
        #[rustfmt::skip]
        let table = [
            ("0.0.0.0", Unspecified), ("0.255.255.255", Unspecified), ("1.0.0.0", Public),
            ("126.255.255.255", Public), ("127.0.0.0", Loopback), ("127.255.255.255", Loopback), ("128.0.0.0", Public),
            ("169.253.255.255", Public), ("169.254.0.0", LinkLocal), ("169.254.169.254", LinkLocal),
            ("169.254.255.255", LinkLocal), ("169.255.0.0", Public),
            ("9.255.255.255", Public), ("10.0.0.0", Private), ("10.255.255.255", Private), ("11.0.0.0", Public),
            ("172.15.255.255", Public), ("172.16.0.0", Private), ("172.31.255.255", Private), ("172.32.0.0", Public),
            ("192.167.255.255", Public), ("192.168.0.0", Private), ("192.168.255.255", Private), ("192.169.0.0", Public),
            ("100.63.255.255", Public), ("100.64.0.0", SharedNat), ("100.127.255.255", SharedNat), ("100.128.0.0", Public),
            ("192.0.1.255", Public), ("192.0.2.0", Documentation), ("192.0.2.255", Documentation), ("192.0.3.0", Public),
            ("203.0.112.255", Public), ("203.0.113.7", Documentation), ("203.0.114.0", Public),
            ("223.255.255.255", Public), ("224.0.0.0", Multicast), ("239.255.255.255", Multicast),
            ("240.0.0.0", Reserved), ("255.255.255.255", Reserved),
            ("::", Unspecified), ("::1", Loopback), ("::2", Unspecified),
            ("fe7f:ffff::", Public), ("fe80::", LinkLocal), ("febf:ffff::1", LinkLocal), ("fec0::", Public),
            ("fbff:ffff::", Public), ("fc00::", Private), ("fdff:ffff::1", Private), ("fe00::", Public),
            ("ff00::", Multicast), ("ff02::1", Multicast),
            ("2001:db8::1", Documentation), ("2001:db9::", Public), ("2606:4700::1111", Public),
        ];
        for (text, class) in table {
            assert_eq!(classify(ip(text)), class, "{text}");
        }
    }

    #[test]
    fn ipv6_that_carries_ipv4_is_judged_as_the_ipv4_it_carries() {
        for (text, class) in [
            ("::ffff:127.0.0.1", Class::Loopback),
            ("::ffff:169.254.169.254", Class::LinkLocal),
            ("::ffff:10.0.1.4", Class::Private),
            ("::169.254.169.254", Class::LinkLocal),
            ("::127.0.0.1", Class::Loopback),
            ("64:ff9b::169.254.169.254", Class::LinkLocal),
            ("64:ff9b::8.8.8.8", Class::Public),
            ("64:ff9b:1::a9fe:a9fe", Class::Public),
        ] {
            assert_eq!(classify(ip(text)), class, "{text}");
        }
        assert_eq!(canonical(ip("::ffff:10.0.1.4")), ip("10.0.1.4"));
        assert_eq!(canonical(ip("::1")), ip("::1"), "loopback is not ::0.0.0.1");
    }

    #[test]
    fn only_addresses_that_lead_home_or_to_many_are_never_relayed_to() {
        let home: Vec<bool> = [
            "127.0.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "10.0.1.4",
            "203.0.113.5",
        ]
        .iter()
        .map(|t| classify(ip(t)).points_home())
        .collect();
        assert_eq!(home, [true, true, true, true, true, false, false]);
    }

    #[test]
    fn within_a_network_in_any_spelling() {
        let nets: Vec<IpNet> = vec!["172.18.0.0/16".parse().expect("net")];
        assert!(within(ip("172.18.0.5"), &nets));
        assert!(within(ip("::ffff:172.18.0.5"), &nets));
        assert!(!within(ip("172.19.0.5"), &nets));
    }
}
