//! The PROXY protocol (v1 and v2), as a load balancer prefixes it to a connection, parsed
//! from bytes alone. Azure Private Link adds a v2 TLV (type 0xEE, subtype 0x01) carrying the
//! private endpoint's LINKID, a little-endian u32.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
const V1_PREFIX: &[u8] = b"PROXY ";
/// v1 lines are at most 107 bytes, CRLF included.
const V1_MAX: usize = 107;
/// Larger v2 headers (many TLVs) are refused rather than buffered.
pub const V2_MAX: usize = 2048;
const TLV_AZURE: u8 = 0xEE;
const AZURE_LINKID: u8 = 0x01;

/// What a PROXY header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    /// The client, or None for a LOCAL command (a health probe) or an unknown family.
    pub source: Option<SocketAddr>,
    /// Azure Private Link's LINKID, when the header carries one.
    pub link_id: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// The bytes cannot start a PROXY header.
    NotProxy,
    /// They may: more bytes are needed to tell.
    Incomplete,
    /// A header of `len` bytes.
    Header { header: ProxyHeader, len: usize },
    /// A PROXY signature followed by something malformed.
    Invalid(&'static str),
}

pub fn parse(buf: &[u8]) -> Parsed {
    if buf.starts_with(&V2_SIGNATURE) {
        return v2(buf);
    }
    if buf.starts_with(V1_PREFIX) {
        return v1(buf);
    }
    let could_be = |signature: &[u8]| {
        let n = buf.len().min(signature.len());
        buf[..n] == signature[..n]
    };
    if could_be(&V2_SIGNATURE) || could_be(V1_PREFIX) { Parsed::Incomplete } else { Parsed::NotProxy }
}

fn v1(buf: &[u8]) -> Parsed {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Parsed::Invalid("PROXY v1 line too long")
        } else {
            Parsed::Incomplete
        };
    };
    let len = end + 2;
    let Ok(line) = std::str::from_utf8(&buf[..end]) else {
        return Parsed::Invalid("PROXY v1 line is not text");
    };
    let words: Vec<&str> = line.split(' ').collect();
    let source = match words.as_slice() {
        ["PROXY", "UNKNOWN", ..] => None,
        ["PROXY", family @ ("TCP4" | "TCP6"), src, _dst, sport, _dport] => {
            let Ok(ip) = src.parse::<IpAddr>() else { return Parsed::Invalid("PROXY v1 source address") };
            let Ok(port) = sport.parse::<u16>() else { return Parsed::Invalid("PROXY v1 source port") };
            if ip.is_ipv4() != (*family == "TCP4") {
                return Parsed::Invalid("PROXY v1 address does not match its family");
            }
            Some(SocketAddr::new(ip, port))
        }
        _ => return Parsed::Invalid("PROXY v1 line"),
    };
    Parsed::Header { header: ProxyHeader { source, link_id: None }, len }
}

fn v2(buf: &[u8]) -> Parsed {
    if buf.len() < 16 {
        return Parsed::Incomplete;
    }
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0F);
    if version != 2 {
        return Parsed::Invalid("PROXY v2 version");
    }
    let rest = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let len = 16 + rest;
    if len > V2_MAX {
        return Parsed::Invalid("PROXY v2 header too long");
    }
    if buf.len() < len {
        return Parsed::Incomplete;
    }
    let body = &buf[16..len];
    let (family, transport) = (buf[13] >> 4, buf[13] & 0x0F);
    let (source, tlvs) = match (command, family) {
        // LOCAL: the balancer speaking for itself (a health probe); no client.
        (0x0, _) => (None, &body[body.len()..]),
        (0x1, 0x1) if body.len() >= 12 => {
            let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            let port = u16::from_be_bytes([body[8], body[9]]);
            (Some(SocketAddr::new(IpAddr::V4(ip), port)), &body[12..])
        }
        (0x1, 0x2) if body.len() >= 36 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&body[..16]);
            let port = u16::from_be_bytes([body[32], body[33]]);
            (Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), port)), &body[36..])
        }
        (0x1, 0x0 | 0x3) => (None, &body[body.len()..]),
        (0x1, _) => return Parsed::Invalid("PROXY v2 addresses are cut short"),
        _ => return Parsed::Invalid("PROXY v2 command"),
    };
    if command == 0x1 && family != 0x0 && transport != 0x1 {
        return Parsed::Invalid("PROXY v2 transport is not a stream");
    }
    match link_id(tlvs) {
        Ok(link_id) => Parsed::Header { header: ProxyHeader { source, link_id }, len },
        Err(why) => Parsed::Invalid(why),
    }
}

/// Azure's LINKID TLV, if present: type 0xEE, value 0x01 then a little-endian u32.
fn link_id(mut tlvs: &[u8]) -> Result<Option<u32>, &'static str> {
    let mut found = None;
    while !tlvs.is_empty() {
        if tlvs.len() < 3 {
            return Err("PROXY v2 TLV is cut short");
        }
        let (kind, len) = (tlvs[0], usize::from(u16::from_be_bytes([tlvs[1], tlvs[2]])));
        let Some(value) = tlvs.get(3..3 + len) else { return Err("PROXY v2 TLV is cut short") };
        if kind == TLV_AZURE && value.first() == Some(&AZURE_LINKID) {
            let Some(id) = value.get(1..5) else { return Err("PROXY v2 Azure LINKID is cut short") };
            found = Some(u32::from_le_bytes([id[0], id[1], id[2], id[3]]));
        }
        tlvs = &tlvs[3 + len..];
    }
    Ok(found)
}

/// A v2 header, for tests and for tools that play the balancer.
pub fn v2_header(source: Option<SocketAddr>, destination: SocketAddr, link_id: Option<u32>) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    let mut body = Vec::new();
    match (source, destination) {
        (Some(SocketAddr::V4(s)), SocketAddr::V4(d)) => {
            out.extend([0x21, 0x11]);
            body.extend(s.ip().octets());
            body.extend(d.ip().octets());
            body.extend(s.port().to_be_bytes());
            body.extend(d.port().to_be_bytes());
        }
        (Some(s), d) => {
            out.extend([0x21, 0x21]);
            let v6 = |a: SocketAddr| match a.ip() {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            body.extend(v6(s).octets());
            body.extend(v6(d).octets());
            body.extend(s.port().to_be_bytes());
            body.extend(d.port().to_be_bytes());
        }
        (None, _) => out.extend([0x20, 0x00]),
    }
    if let Some(id) = link_id {
        body.extend([TLV_AZURE, 0x00, 0x05, AZURE_LINKID]);
        body.extend(id.to_le_bytes());
    }
    out.extend((body.len() as u16).to_be_bytes());
    out.extend(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("address")
    }

    fn header(parsed: Parsed) -> (ProxyHeader, usize) {
        match parsed {
            Parsed::Header { header, len } => (header, len),
            other => panic!("not a header: {other:?}"),
        }
    }

    #[test]
    fn ordinary_first_bytes_are_not_proxy_and_prefixes_wait_for_more() {
        for http in [&b"POST /endpoints/e/score HTTP/1.1\r\n"[..], b"GET / HTTP/1.1", b"\x16\x03\x01\x02\x00"]
        {
            assert_eq!(parse(http), Parsed::NotProxy, "{http:?}");
        }
        for partial in [&b""[..], b"P", b"PROX", b"\r\n", b"\r\n\r\n\0\r\nQU"] {
            assert_eq!(parse(partial), Parsed::Incomplete, "{partial:?}");
        }
    }

    #[test]
    fn v1_gives_the_client_and_its_length() {
        let line = b"PROXY TCP4 198.51.100.7 10.0.0.1 5555 443\r\nPOST /";
        let (h, len) = header(parse(line));
        assert_eq!((h.source, h.link_id, len), (Some(addr("198.51.100.7:5555")), None, 43));
        let (h, _) = header(parse(b"PROXY TCP6 2001:db8::7 2001:db8::1 5555 443\r\n"));
        assert_eq!(h.source, Some(addr("[2001:db8::7]:5555")));
        assert_eq!(header(parse(b"PROXY UNKNOWN\r\n")).0.source, None);
        assert!(matches!(parse(b"PROXY TCP4 2001:db8::7 10.0.0.1 1 2\r\n"), Parsed::Invalid(_)));
        assert!(matches!(parse(b"PROXY TCP4 nonsense\r\n"), Parsed::Invalid(_)));
        assert!(matches!(parse(&[b"PROXY ".as_slice(), &[b'x'; 120]].concat()), Parsed::Invalid(_)));
    }

    #[test]
    fn v2_gives_the_client_the_linkid_and_local_probes() {
        let dst = addr("10.0.0.1:443");
        let bytes = v2_header(Some(addr("10.1.2.3:4000")), dst, Some(0x0102_0304));
        let (h, len) = header(parse(&bytes));
        assert_eq!((h.source, h.link_id, len), (Some(addr("10.1.2.3:4000")), Some(0x0102_0304), bytes.len()));
        // The LINKID travels little-endian.
        assert_eq!(&bytes[bytes.len() - 4..], &[0x04, 0x03, 0x02, 0x01]);
        let v6 = v2_header(Some(addr("[2001:db8::7]:4000")), addr("[2001:db8::1]:443"), None);
        assert_eq!(header(parse(&v6)).0.source, Some(addr("[2001:db8::7]:4000")));
        let local = v2_header(None, dst, None);
        assert_eq!(header(parse(&local)).0, ProxyHeader { source: None, link_id: None });
    }

    #[test]
    fn v2_waits_for_its_whole_length_and_refuses_what_is_malformed() {
        let bytes = v2_header(Some(addr("10.1.2.3:4000")), addr("10.0.0.1:443"), Some(7));
        assert_eq!(parse(&bytes[..bytes.len() - 1]), Parsed::Incomplete);
        let mut wrong_version = bytes.clone();
        wrong_version[12] = 0x11;
        assert!(matches!(parse(&wrong_version), Parsed::Invalid(_)));
        let mut cut_tlv = bytes.clone();
        let n = cut_tlv.len();
        cut_tlv[14..16].copy_from_slice(&((n - 16 - 2) as u16).to_be_bytes());
        assert!(matches!(parse(&cut_tlv[..n - 2]), Parsed::Invalid(_)));
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend([0x21, 0x11, 0xFF, 0xFF]);
        assert!(matches!(parse(&huge), Parsed::Invalid(_)));
    }
}
