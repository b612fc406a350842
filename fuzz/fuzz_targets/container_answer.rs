//! A container's answer as the gateway reads it (`gateway::wire`): the head parsed, then the
//! body taken piece by piece however the bytes arrive. Never a panic; every field kept is one
//! `http` would take (they go to the client as they came); a body framed by a length never
//! yields more than that length, and no body yields more than was sent.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use moat_gateway::fields::Fields;
use moat_gateway::wire::{self, BodyFraming, Next};

fuzz_target!(|data: &[u8]| {
    let Some((&step, wire)) = data.split_first() else { return };
    let step = usize::from(step % 64) + 1;
    let head_only = step % 2 == 0;
    let mut buf = BytesMut::new();
    let mut fed = 0;
    let head = loop {
        match wire::parse_head(&mut buf, head_only) {
            Ok(Some(head)) => break head,
            Err(_) => return,
            Ok(None) if fed == wire.len() => return,
            Ok(None) => {
                let n = step.min(wire.len() - fed);
                buf.extend_from_slice(&wire[fed..fed + n]);
                fed += n;
            }
        }
    };
    for (name, value) in head.fields.each() {
        assert!(http::HeaderName::from_bytes(name).is_ok(), "name {name:?}");
        assert!(http::HeaderValue::from_bytes(value).is_ok(), "value {value:?}");
    }
    let announced = head.body.exact();
    let mut framing = head.body;
    let mut got = 0u64;
    loop {
        match framing.next(&mut buf) {
            Ok(Next::Data(d)) => {
                assert!(!d.is_empty(), "an empty piece");
                got += d.len() as u64;
            }
            Ok(Next::End) | Err(_) => break,
            Ok(Next::More) if fed == wire.len() => break,
            Ok(Next::More) => {
                let n = step.min(wire.len() - fed);
                buf.extend_from_slice(&wire[fed..fed + n]);
                fed += n;
            }
        }
    }
    if let Some(n) = announced {
        assert!(got <= n, "{got} bytes of a {n}-byte body");
        if framing == BodyFraming::Length(0) {
            assert_eq!(got, n, "a finished body of the wrong length");
        }
    }
    assert!(got <= wire.len() as u64);
});
