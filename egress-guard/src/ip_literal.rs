//! IP literals in every spelling a resolver or a URL parser accepts: dotted quads, but also
//! `inet_aton`'s shorter forms (`10.260`, `167772420`), octal (`012.0.1.4`), hex
//! (`0xa.0.1.4`, `0xa000104`), and IPv6 with IPv4 inside (`::ffff:10.0.1.4`, bracketed).
//! A literal counts as the address it denotes, so a rule about `10.0.1.4` catches them all.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The address `host` denotes if it is an IP literal, canonical (IPv4-mapped IPv6 becomes
/// IPv4); None if it is a name.
pub fn parse(host: &str) -> Option<IpAddr> {
    let host = host.strip_suffix('.').unwrap_or(host);
    let bracketed = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    if let Ok(v6) = bracketed.unwrap_or(host).parse::<Ipv6Addr>() {
        return Some(canonical(IpAddr::V6(v6)));
    }
    if bracketed.is_some() {
        return None;
    }
    ipv4(host).map(IpAddr::V4)
}

/// An IPv6 address that carries an IPv4 one is that IPv4 address (moat's one classifier).
pub use moat_net::canonical;

/// `inet_aton`: one to four parts, each decimal, octal (leading 0) or hex (0x); the last
/// part fills the bytes that are left.
fn ipv4(host: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = host.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let values: Vec<u64> = parts.iter().map(|p| number(p)).collect::<Option<_>>()?;
    let (last, leading) = values.split_last()?;
    if leading.iter().any(|&v| v > 0xFF) {
        return None;
    }
    let last_bits = 8 * (4 - leading.len() as u32);
    if *last >= 1u64 << last_bits {
        return None;
    }
    let value = leading.iter().enumerate().fold(*last, |acc, (i, &v)| acc | v << (24 - 8 * i as u32));
    Some(Ipv4Addr::from(u32::try_from(value).ok()?))
}

fn number(part: &str) -> Option<u64> {
    let (digits, radix) = if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
        (hex, 16)
    } else if part.len() > 1 && part.starts_with('0') {
        (&part[1..], 8)
    } else {
        (part, 10)
    };
    if digits.is_empty() && radix != 16 {
        return None;
    }
    if digits.is_empty() {
        return Some(0);
    }
    if !digits.chars().all(|c| c.is_digit(radix)) || digits.len() > 12 {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_an_address_is_that_address() {
        let want: IpAddr = "10.0.1.4".parse().expect("ip");
        for spelling in [
            "10.0.1.4",
            "10.0.1.4.",
            "012.0.1.04",
            "0xa.0x0.0x1.0x4",
            "0xA.0.1.4",
            "167772420",
            "0xa000104",
            "01200000404",
            "10.260",
            "10.0.260",
            "::ffff:10.0.1.4",
            "[::ffff:10.0.1.4]",
            "::ffff:a00:104",
        ] {
            assert_eq!(parse(spelling), Some(want), "{spelling}");
        }
    }

    #[test]
    fn names_and_out_of_range_numbers_are_not_addresses() {
        for name in [
            "example.com",
            "10.0.1.4.example.com",
            "0x1g.0.0.1",
            "256.0.0.1",
            "1.2.3.4.5",
            "4294967296",
            "",
            "08.1.1.1",
            "[10.0.1.4]",
        ] {
            assert_eq!(parse(name), None, "{name}");
        }
        assert_eq!(parse("4294967295"), Some("255.255.255.255".parse().expect("ip")));
        assert_eq!(parse("2001:db8::1"), Some("2001:db8::1".parse().expect("ip")));
    }
}
