//! The ClientHello reader on a TLS port: never a panic, and the same verdict however the
//! bytes are cut into segments (the reassembly must not depend on how TCP delivered them).
#![no_main]

use libfuzzer_sys::fuzz_target;
use moat_egress_guard::sni::{Hello, Reassembly, client_hello};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, bytes)) = data.split_first() else { return };
    let whole = client_hello(bytes);
    let mut pieces = Reassembly::default();
    let mut last = Hello::Incomplete;
    for segment in bytes.chunks(usize::from(cut).max(1)) {
        last = pieces.feed(segment);
        if last != Hello::Incomplete {
            break;
        }
    }
    assert_eq!(last, whole, "cut into segments of {cut}");
});
