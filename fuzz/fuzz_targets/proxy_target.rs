//! What a private container asks the guard's proxy for (`CONNECT host:port`, an absolute-form
//! URI) and every spelling of an IP literal: never a panic, and nothing passes the allowlist
//! but a listed name or exactly a listed address, on a listed port.
#![no_main]

use std::net::{IpAddr, SocketAddr};
use std::sync::LazyLock;

use http::{Method, Uri};
use libfuzzer_sys::fuzz_target;
use moat_egress_guard::acl::{Endpoint, Verdict, judge};
use moat_egress_guard::{ip_literal, names, proxy};

static ENDPOINTS: LazyLock<Vec<Endpoint>> = LazyLock::new(|| {
    vec![Endpoint {
        name: "vault".into(),
        fqdn: "kv.vault.azure.net".into(),
        aliases: vec!["kv.privatelink.vaultcore.azure.net".into()],
        ips: vec!["10.0.1.5".parse().expect("ip")],
        ports: vec![443],
        tls_ports: vec![],
    }]
});

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = ip_literal::parse(text);
    let _ = names::canonical(text);
    for method in [Method::CONNECT, Method::GET] {
        let Ok(uri) = text.parse::<Uri>() else { continue };
        let Some((host, port, _)) = proxy::destination(&method, &uri) else { continue };
        if let Verdict::Allow { dial, .. } = judge(&ENDPOINTS, &host, port) {
            let listed = SocketAddr::new(IpAddr::from([10, 0, 1, 5]), 443);
            assert_eq!(dial, listed, "{text} dials {dial}");
            let by_name = names::canonical(&host).is_some_and(|n| ENDPOINTS[0].has_name(&n));
            let by_address = ip_literal::parse(&host) == Some(listed.ip());
            assert!(by_name || by_address, "{text} passed as {host}:{port}");
        }
    }
});
