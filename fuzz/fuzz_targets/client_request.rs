//! A client's request as the gateway's HTTP/1.1 codec reads it (`gateway::http1::head`): the
//! head parsed however the bytes arrive, then the body taken piece by piece. Never a panic; a
//! head fed in pieces reads as it does whole; a refusal is one of the statuses the codec
//! answers with; every field is one `http` would take (they go on as they came); no body
//! yields more than was sent, nor more than its length.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use moat_gateway::fields::Fields;
use moat_gateway::http1::head::{self, Parsed, Refused};
use moat_gateway::wire::Next;

/// What a parse came to, comparable.
fn outcome(result: &Result<Option<Parsed>, Refused>) -> String {
    match result {
        Ok(Some(p)) => {
            let fields: Vec<_> = p.fields.each().collect();
            format!("{:?} {:?} {:?}", p.line, fields, p.body)
        }
        Ok(None) => "more".into(),
        Err(refused) => refused.status.to_string(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, wire)) = data.split_first() else { return };
    let max_head = 64 + usize::from(step) * 4;
    let step = usize::from(step % 32) + 1;
    let whole = head::parse_request(&mut BytesMut::from(wire), max_head);
    let mut buf = BytesMut::new();
    let mut fed = 0;
    let pieces = loop {
        match head::parse_request(&mut buf, max_head) {
            Ok(None) if fed < wire.len() => {
                let n = step.min(wire.len() - fed);
                buf.extend_from_slice(&wire[fed..fed + n]);
                fed += n;
            }
            other => break other,
        }
    };
    assert_eq!(outcome(&whole), outcome(&pieces), "whole and in pieces of {step}");
    let mut parsed = match pieces {
        Ok(Some(parsed)) => parsed,
        Ok(None) => return,
        Err(refused) => {
            assert!([400, 414, 431, 501].contains(&refused.status.as_u16()), "{refused:?}");
            return;
        }
    };
    for (name, value) in parsed.fields.each() {
        assert!(http::HeaderName::from_bytes(name).is_ok(), "name {name:?}");
        assert!(http::HeaderValue::from_bytes(value).is_ok(), "value {value:?}");
    }
    let announced = parsed.body.exact();
    let mut got = 0u64;
    loop {
        match parsed.body.next(&mut buf) {
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
    assert!(got <= announced.unwrap_or(u64::MAX), "{got} bytes of a body of {announced:?}");
    assert!(got <= wire.len() as u64);
});
