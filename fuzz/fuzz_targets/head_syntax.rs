//! The syntax of HTTP/1.1 heads (`gateway::syntax`), against httparse, which moat used before
//! and whose reading it keeps: for any bytes, read as a request and as an answer, both
//! parsers say the same (a head with the same parts and length, "more bytes", or the same
//! kind of refusal), with any limit from 1 to 16 on the number of fields.
#![no_main]

use libfuzzer_sys::fuzz_target;
use moat_gateway::syntax::differential::{ours, theirs};

fuzz_target!(|data: &[u8]| {
    let Some((&max, wire)) = data.split_first() else { return };
    // httparse needs room for one field at least to tell a head's end from too many fields.
    let max = usize::from(max % 16) + 1;
    for request in [true, false] {
        assert_eq!(ours(wire, max, request), theirs(wire, max, request), "request: {request}");
    }
});
