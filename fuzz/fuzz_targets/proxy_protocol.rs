//! PROXY v1/v2 headers from a balancer (or anyone who reaches the listener): never a panic,
//! a header never longer than the bytes, and a header that parses parses the same with more
//! bytes after it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use moat_gateway::ingress::proxy_protocol::{Parsed, parse};

fuzz_target!(|data: &[u8]| {
    if let Parsed::Header { header, len } = parse(data) {
        assert!(len <= data.len(), "a header of {len} bytes in {}", data.len());
        let mut longer = data[..len].to_vec();
        longer.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(parse(&longer), Parsed::Header { header, len }, "what follows the header changed it");
    }
});
