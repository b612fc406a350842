//! The Authorization header and token decoding: bearer keys compared in constant time, moat's
//! own HS256 tokens, and the JWT header and principal claims of AAD tokens. Never a panic, and
//! nothing made up passes.
#![no_main]

use std::sync::{Arc, LazyLock};

use futures_util::FutureExt;
use http::HeaderMap;
use http::header::AUTHORIZATION;
use libfuzzer_sys::fuzz_target;
use moat_gateway::auth::aml::AmlKey;
use moat_gateway::auth::principals::{Claims, Principals};
use moat_gateway::auth::{self, Verdict};
use moat_gateway::table::Credentials;

static KEYS: LazyLock<Credentials> = LazyLock::new(|| {
    Credentials::Keys(vec![b"primary-key-0123456789".to_vec(), b"secondary-key-0123456789".to_vec()])
});
static AML: LazyLock<Credentials> = LazyLock::new(|| Credentials::AmlToken {
    key: Arc::new(AmlKey::new(b"a workspace secret of thirty-two bytes")),
    audience: "https://ws.test/endpoints/ep".into(),
});

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    if let Ok(value) = http::HeaderValue::from_bytes(data) {
        headers.insert(AUTHORIZATION, value);
    }
    // Neither check waits on anything: each must be ready at once.
    let (verdict, allowed) = auth::check(&KEYS, None, &headers).now_or_never().expect("ready");
    assert_eq!(verdict == Verdict::Accepted, allowed.is_ok());
    let presented = data.iter().position(|&b| b == b' ').and_then(|at| {
        let (scheme, rest) = data.split_at(at);
        scheme.eq_ignore_ascii_case(b"bearer").then(|| rest.trim_ascii())
    });
    let a_key = presented.is_some_and(|p| p == b"primary-key-0123456789" || p == b"secondary-key-0123456789");
    assert_eq!(verdict == Verdict::Accepted, a_key && headers.contains_key(AUTHORIZATION), "{data:?}");
    // Nobody forges an HMAC by chance: a token made up by the fuzzer never passes.
    let (verdict, _) = auth::check(&AML, None, &headers).now_or_never().expect("ready");
    assert_ne!(verdict, Verdict::Accepted, "a made-up aml token passed");
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = jsonwebtoken::decode_header(text);
        if let Ok(claims) = serde_json::from_str::<Claims>(text) {
            assert!(!Principals::default().admits(&claims), "an endpoint that allows none admitted someone");
        }
    }
});
