//! The per-request decision path, without sockets: target, access policy, credential,
//! deployment pick and admission (instance pick), as one request would take them; and the
//! credential checks alone: key, and AAD tokens signed with real RSA and EC keys (made by
//! openssl for the run, as in the token tests).
//!
//! `cargo bench -p moat-gateway --bench decision`; results in BENCHMARKS.md.

use std::collections::HashMap;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

#[path = "../tests/common/mod.rs"]
mod common;

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use http::{HeaderMap, HeaderValue, Method, Request};
use jsonwebtoken::Algorithm;
use moat_gateway::auth::aad::{Aad, AadConfig};
use moat_gateway::auth::aml::{AmlKey, audience};
use moat_gateway::ingress::IngressConfig;
use moat_gateway::ingress::origin::{self, Connection};
use moat_gateway::ingress::policy::{self, Decision};
use moat_gateway::{
    Admissions, Credentials, DeploymentRoute, EndpointRoute, Limits, RouteTable, Routes, Upstream, auth,
    pick, target,
};

fn table(credentials: Credentials) -> Routes {
    let admissions = Admissions::default();
    let deployment = |name: &str| {
        let limits =
            Limits { max_per_instance: 1000, max_queue_wait: Duration::from_millis(500), instance_count: 3 };
        let instances = (0..3)
            .map(|i| {
                Upstream::new(
                    format!("{name}-{i}"),
                    SocketAddr::from(([10, 0, 0, i as u8 + 1], 5001)),
                    Default::default(),
                )
            })
            .collect();
        let admission = admissions.get(&moat_id::DeploymentId::new("ep", name), limits);
        (
            name.to_string(),
            Arc::new(DeploymentRoute::new(
                name,
                "/score",
                Duration::from_secs(5),
                admission,
                instances,
                limits,
            )),
        )
    };
    let endpoint = EndpointRoute {
        name: "ep".into(),
        public_access: false,
        credentials,
        traffic: vec![("blue".into(), 90), ("green".into(), 10)],
        mirror: None,
        deployments: HashMap::from_iter([deployment("blue"), deployment("green")]),
    };
    let routes = Routes::default();
    routes.publish(RouteTable {
        endpoints: HashMap::from_iter([("ep".to_string(), endpoint)]),
        moat_networks: Vec::new(),
    });
    routes
}

/// Everything the gateway decides for one request before it forwards it.
fn decide(routes: &Routes, request: &Request<()>, ingress: &IngressConfig, aad: Option<&Aad>) -> bool {
    let table = routes.load();
    let Ok(t) = target::resolve(request, request.headers(), None) else { return false };
    let Some(endpoint) = table.endpoints.get(&t.endpoint) else { return false };
    let conn = Connection { peer: SocketAddr::from(([10, 1, 2, 3], 40000)), proxy: None };
    let origin = origin::origin(&conn, request.headers(), ingress);
    if policy::decide(endpoint.public_access, &origin, ingress, &[]) != Decision::Allow {
        return false;
    }
    let (_, allowed) =
        auth::check(&endpoint.credentials, aad, request.headers()).now_or_never().expect("ready");
    if allowed.is_err() {
        return false;
    }
    let Ok(deployment) = pick::deployment(endpoint, request.headers()) else { return false };
    // The slot is given back at once, as if the request had ended.
    deployment.admission.try_admit().is_some()
}

fn request(token: &str) -> Request<()> {
    Request::builder()
        .method(Method::POST)
        .uri("/endpoints/ep/score")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(())
        .expect("request")
}

fn bench(c: &mut Criterion) {
    // As the daemon does first: jsonwebtoken keeps the provider of its first use.
    moat_gateway::auth::signatures::install();
    // Public access disabled: the policy finds the client (10.1.2.3) in the private networks.
    let ingress = IngressConfig::default();
    let key = "k".repeat(40);
    let keys = table(Credentials::Keys(vec![key.clone().into_bytes(), "s".repeat(40).into_bytes()]));
    let keyed = request(&key);
    assert!(decide(&keys, &keyed, &ingress, None));
    c.bench_function("decision path, key auth", |b| {
        b.iter(|| black_box(decide(&keys, black_box(&keyed), &ingress, None)))
    });

    let aml = Arc::new(AmlKey::new(b"a workspace secret of thirty-two bytes!"));
    let token = aml.issue(&audience("ws", "ep"), Duration::from_secs(3600)).expect("token").token;
    let tokens = table(Credentials::AmlToken { key: aml, audience: audience("ws", "ep") });
    let with_token = request(&token);
    assert!(decide(&tokens, &with_token, &ingress, None));
    c.bench_function("decision path, aml_token auth", |b| {
        b.iter(|| black_box(decide(&tokens, black_box(&with_token), &ingress, None)))
    });

    let mut headers = HeaderMap::new();
    headers.insert("authorization", HeaderValue::from_str(&format!("Bearer {key}")).expect("header"));
    let credentials = Credentials::Keys(vec![key.clone().into_bytes(), "s".repeat(40).into_bytes()]);
    c.bench_function("credential check, key", |b| {
        b.iter(|| black_box(auth::check(&credentials, None, black_box(&headers)).now_or_never()))
    });

    // AAD: the issuer's key set is already cached, as it is after the first request.
    let dir = moat_test_support::TempDir::new("moat-bench-jwks");
    let keys = common::keys::keys(dir.path());
    let (issuer, aud) = ("https://login.example.test/tenant/v2.0", "https://ml.azure.com");
    let aad = Aad::new(AadConfig {
        issuer: issuer.into(),
        jwks_uri: "http://127.0.0.1:9/never-fetched".into(),
        audience: aud.into(),
        refresh_gap: Duration::from_secs(3600),
    });
    let set = serde_json::json!({"keys": [keys.rsa_jwk, keys.ec_jwk]});
    aad.preload(&serde_json::from_value(set).expect("a JWK set"));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let oid = "6f1e3a52-5b0f-4d1e-9c59-0b8f6cd0a111";
    let claims = serde_json::json!({"iss": issuer, "aud": aud, "nbf": now - 10, "exp": now + 3600, "sub": "user", "oid": oid});
    let allowed = moat_gateway::auth::principals::Principals::new(&[oid.into()], &[], &[]);
    let aad_table = table(Credentials::AadToken { allowed });
    for (alg, kid, pem) in
        [(Algorithm::RS256, "rsa-1", &keys.rsa_pem), (Algorithm::ES256, "ec-1", &keys.ec_pem)]
    {
        let signed = request(&common::keys::sign(alg, kid, pem, claims.clone()));
        assert!(decide(&aad_table, &signed, &ingress, Some(&aad)), "{alg:?} token refused");
        c.bench_function(&format!("decision path, aad_token auth ({alg:?})"), |b| {
            b.iter(|| black_box(decide(&aad_table, black_box(&signed), &ingress, Some(&aad))))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
