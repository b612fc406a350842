//! DNS messages from a private container: never a panic; a reply answers only names of the
//! zone, with the guard's address for them, and never carries more than one answer.
#![no_main]

use std::net::Ipv4Addr;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use moat_egress_guard::dns::{Answer, Zone, respond};

static ZONE: LazyLock<Zone> = LazyLock::new(|| Zone {
    entries: vec![
        ("crdemo.azurecr.io".into(), Ipv4Addr::new(172, 20, 255, 254)),
        ("kv.vault.azure.net".into(), Ipv4Addr::new(172, 20, 255, 253)),
    ],
});

fuzz_target!(|data: &[u8]| {
    if let Some((reply, asked)) = respond(&ZONE, data) {
        if let Answer::Address(ip) = asked.answer {
            assert!(ZONE.entries.iter().any(|(_, a)| *a == ip), "an address outside the zone");
        }
        let reply = hickory_reply(&reply);
        assert!(reply <= 1, "{reply} answers");
    }
});

/// The number of answers in a reply moat made (it must parse).
fn hickory_reply(bytes: &[u8]) -> usize {
    // The answer count sits at bytes 6-7 of the header.
    assert!(bytes.len() >= 12, "a reply shorter than a DNS header");
    usize::from(u16::from_be_bytes([bytes[6], bytes[7]]))
}
