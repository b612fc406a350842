//! Token auth with real keys: aml tokens signed with the workspace secret, and AAD tokens
//! checked against a local JWKS server holding a real RSA and a real EC key (made with
//! openssl for each run).

mod common;

use common::keys::{b64, keys, openssl, sign};

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use moat_gateway::auth::aad::AadConfig;
use moat_gateway::auth::aml::{AmlKey, audience, now};
use moat_gateway::auth::principals::Principals;
use moat_gateway::{Admissions, Config, Credentials, Gateway, RouteTable, Routes};
use moat_test_support::{Reply, TempDir, http};
use serde_json::json;
use tokio::net::TcpListener;

/// A JWKS server that counts its fetches, can be taken down, and answers with a
/// `Cache-Control` when given one.
struct Jwks {
    addr: SocketAddr,
    set: Arc<Mutex<serde_json::Value>>,
    fetches: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
    cache_control: Arc<Mutex<Option<String>>>,
}

async fn jwks(set: serde_json::Value) -> Jwks {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (set, fetches, down) =
        (Arc::new(Mutex::new(set)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
    let cache_control = Arc::new(Mutex::new(None::<String>));
    let shared = (set.clone(), fetches.clone(), down.clone(), cache_control.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let shared = shared.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_req: hyper::Request<hyper::body::Incoming>| {
                    let (set, fetches, down, cache_control) = shared.clone();
                    async move {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        let mut r = hyper::Response::new(Full::new(Bytes::from(
                            set.lock().expect("set").to_string(),
                        )));
                        if down.load(Ordering::SeqCst) {
                            *r.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
                        }
                        if let Some(value) = cache_control.lock().expect("cache control").clone() {
                            r.headers_mut()
                                .insert(hyper::header::CACHE_CONTROL, value.parse().expect("header"));
                        }
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Jwks { addr, set, fetches, down, cache_control }
}

const ISSUER: &str = "https://login.example.test/tenant/v2.0";
const AUDIENCE: &str = "https://ml.azure.com";
/// The object id `aad-ep` allows (the tokens of `claims()` carry it), an application id and
/// an app role it allows too.
const USER_OID: &str = "6f1e3a52-5b0f-4d1e-9c59-0b8f6cd0a111";
const APP_ID: &str = "0c9a44d7-3f4e-4b8e-8d3e-7a6a1b2c3d4e";
const ROLE: &str = "Endpoint.Score";

/// A gateway whose AAD key set is fetched again at most once per `refresh_gap`.
async fn gateway(jwks_addr: SocketAddr, aml: Arc<AmlKey>, refresh_gap: Duration) -> SocketAddr {
    let up = common::upstream("{}").await;
    let admissions = Admissions::default();
    let endpoint =
        |name: &str, credentials: Credentials| common::endpoint(&admissions, name, up, credentials, true);
    let routes = Routes::default();
    routes.publish(RouteTable {
        moat_networks: Vec::new(),
        endpoints: HashMap::from_iter([
            endpoint(
                "aad-ep",
                Credentials::AadToken {
                    allowed: Principals::new(&[USER_OID.into()], &[APP_ID.into()], &[ROLE.into()]),
                },
            ),
            endpoint("aad-nobody", Credentials::AadToken { allowed: Principals::default() }),
            endpoint(
                "aml-ep",
                Credentials::AmlToken { key: aml.clone(), audience: audience("ws", "aml-ep") },
            ),
            endpoint("aml-other", Credentials::AmlToken { key: aml, audience: audience("ws", "aml-other") }),
        ]),
    });
    let config = Config {
        aad: Some(AadConfig {
            issuer: ISSUER.into(),
            jwks_uri: format!("http://{jwks_addr}/keys"),
            audience: AUDIENCE.into(),
            refresh_gap,
        }),
        ..Config::default()
    };
    let gw = Gateway::new(config, routes, moat_gateway::access_log::discard());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(moat_gateway::serve(listener, gw, std::future::pending(), Duration::from_secs(1)));
    addr
}

async fn score(addr: SocketAddr, endpoint: &str, token: &str) -> Reply {
    let (path, auth) = (format!("/endpoints/{endpoint}/score"), format!("Bearer {token}"));
    tokio::task::spawn_blocking(move || {
        http(addr, "POST", &path, &[("Authorization", &auth)], "{}").expect("call")
    })
    .await
    .expect("join")
}

fn claims() -> serde_json::Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "iat": now(), "nbf": now() - 10, "exp": now() + 600, "sub": "user", "oid": USER_OID})
}

fn with(mut base: serde_json::Value, key: &str, value: serde_json::Value) -> serde_json::Value {
    base[key] = value;
    base
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aad_tokens_pass_only_with_the_issuers_keys_and_claims() {
    let key_dir = TempDir::new("moat-jwks");
    let keys = keys(key_dir.path());
    let server = jwks(json!({"keys": [keys.rsa_jwk, keys.ec_jwk]})).await;
    let addr = gateway(server.addr, Arc::new(AmlKey::new(b"unused")), Duration::from_secs(3600)).await;

    let rsa = sign(Algorithm::RS256, "rsa-1", &keys.rsa_pem, claims());
    let ec = sign(Algorithm::ES256, "ec-1", &keys.ec_pem, claims());
    assert_eq!(score(addr, "aad-ep", &rsa).await.status, 200, "RS256");
    assert_eq!(score(addr, "aad-ep", &ec).await.status, 200, "ES256");
    assert_eq!(server.fetches.load(Ordering::SeqCst), 1, "the key set is fetched once and cached");

    let refused = [
        (
            "wrong audience",
            sign(Algorithm::RS256, "rsa-1", &keys.rsa_pem, with(claims(), "aud", json!("api://other"))),
        ),
        (
            "wrong issuer",
            sign(Algorithm::RS256, "rsa-1", &keys.rsa_pem, with(claims(), "iss", json!("https://evil.test"))),
        ),
        (
            "expired",
            sign(Algorithm::RS256, "rsa-1", &keys.rsa_pem, with(claims(), "exp", json!(now() - 3600))),
        ),
        (
            "not yet valid",
            sign(Algorithm::RS256, "rsa-1", &keys.rsa_pem, with(claims(), "nbf", json!(now() + 3600))),
        ),
        ("another key, same kid", sign(Algorithm::RS256, "rsa-1", &keys.other_rsa_pem, claims())),
        ("EC key named as RSA", sign(Algorithm::ES256, "rsa-1", &keys.ec_pem, claims())),
        (
            "alg none",
            format!("{}.{}.", b64(br#"{"alg":"none","kid":"rsa-1"}"#), b64(claims().to_string().as_bytes())),
        ),
    ];
    for (what, token) in refused {
        let r = score(addr, "aad-ep", &token).await;
        assert_eq!(r.status, 401, "{what}");
        assert!(
            !r.body.contains("audience") && !r.body.contains("expired"),
            "{what}: the message helps nobody forge: {}",
            r.body
        );
    }
    let hs256 = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("rsa-1".into());
        jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(b"guess")).expect("token")
    };
    assert_eq!(score(addr, "aad-ep", &hs256).await.status, 401, "HS256");

    // Unknown kids within the refresh gap (an hour here) fetch nothing: a flood of made-up
    // kids cannot hammer the issuer. (When the gap is over is the pure `Refresh` rule's.)
    let stranger = sign(Algorithm::RS256, "rsa-2", &keys.other_rsa_pem, claims());
    assert_eq!(score(addr, "aad-ep", &stranger).await.status, 401);
    assert_eq!(score(addr, "aad-ep", &stranger).await.status, 401);
    assert_eq!(server.fetches.load(Ordering::SeqCst), 1, "rate-limited refresh");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_in_key_is_found_by_a_refresh_and_an_unreachable_set_fails_closed() {
    let key_dir = TempDir::new("moat-jwks");
    let keys = keys(key_dir.path());
    let server = jwks(json!({"keys": [keys.rsa_jwk.clone()]})).await;
    // No gap: every unknown kid fetches the set again.
    let addr = gateway(server.addr, Arc::new(AmlKey::new(b"unused")), Duration::ZERO).await;
    let rsa = sign(Algorithm::RS256, "rsa-1", &keys.rsa_pem, claims());
    assert_eq!(score(addr, "aad-ep", &rsa).await.status, 200);
    let stranger = sign(Algorithm::RS256, "rsa-2", &keys.other_rsa_pem, claims());
    assert_eq!(score(addr, "aad-ep", &stranger).await.status, 401, "not in the set yet");

    let mut rotated = keys.rsa_jwk.clone();
    rotated["kid"] = json!("rsa-2");
    let other_modulus = {
        let path = key_dir.path().join("other.pem");
        std::fs::write(&path, &keys.other_rsa_pem).expect("write");
        let out =
            String::from_utf8(openssl(&["rsa", "-in", &path.display().to_string(), "-noout", "-modulus"]))
                .expect("utf8");
        let hex = out.trim().trim_start_matches("Modulus=").to_string();
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect::<Vec<u8>>()
    };
    rotated["n"] = json!(b64(&other_modulus));
    server.set.lock().expect("set")["keys"].as_array_mut().expect("keys").push(rotated);
    assert_eq!(score(addr, "aad-ep", &stranger).await.status, 200, "rotated key accepted after a refresh");

    // With the key set unreachable, a kid it does not know is 503, never a pass.
    server.down.store(true, Ordering::SeqCst);
    let unknown = sign(Algorithm::RS256, "rsa-3", &keys.other_rsa_pem, claims());
    let r = score(addr, "aad-ep", &unknown).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.header("retry-after").is_some());
    assert_eq!(score(addr, "aad-ep", &rsa).await.status, 200, "known keys keep working from the cache");
}

/// Like a role assignment on the endpoint: a valid token of the tenant scores only when its
/// principal is one the endpoint allows; otherwise 403, with a message that names no secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_principals_an_endpoint_allows_may_score_it() {
    let key_dir = TempDir::new("moat-jwks");
    let keys = keys(key_dir.path());
    let server = jwks(json!({"keys": [keys.rsa_jwk]})).await;
    let addr = gateway(server.addr, Arc::new(AmlKey::new(b"unused")), Duration::from_secs(3600)).await;
    let token = |claims| sign(Algorithm::RS256, "rsa-1", &keys.rsa_pem, claims);
    let anonymous = || {
        let mut c = claims();
        c.as_object_mut().expect("claims").remove("oid");
        c
    };
    let stranger = "11111111-2222-3333-4444-555555555555";
    for (who, claims, endpoint, status) in [
        ("the allowed object id", claims(), "aad-ep", 200),
        ("the allowed application (v1 appid)", with(anonymous(), "appid", json!(APP_ID)), "aad-ep", 200),
        (
            "the allowed application (v2 azp)",
            with(anonymous(), "azp", json!(APP_ID.to_uppercase())),
            "aad-ep",
            200,
        ),
        ("the allowed app role", with(anonymous(), "roles", json!(["Reader", ROLE])), "aad-ep", 200),
        ("another object id", with(claims(), "oid", json!(stranger)), "aad-ep", 403),
        ("another role", with(anonymous(), "roles", json!(["Reader"])), "aad-ep", 403),
        ("no principal claim", anonymous(), "aad-ep", 403),
        ("an endpoint that allows nobody", claims(), "aad-nobody", 403),
    ] {
        let presented = token(claims);
        let r = score(addr, endpoint, &presented).await;
        assert_eq!(r.status, status, "{who}: {}", r.body);
        if status == 403 {
            assert!(r.body.contains("not allowed to score this endpoint"), "{who}: {}", r.body);
            assert!(!r.body.contains(&presented) && !r.body.contains(stranger), "{who}: {}", r.body);
        }
    }
}

/// The issuer says how long its keys may be cached; after that the set is fetched again
/// whole, and a key it no longer lists stops passing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_the_issuer_removed_stops_passing_when_the_cache_lifetime_ends() {
    let key_dir = TempDir::new("moat-jwks");
    let keys = keys(key_dir.path());
    let server = jwks(json!({"keys": [keys.rsa_jwk, keys.ec_jwk.clone()]})).await;
    *server.cache_control.lock().expect("cache control") = Some("public, max-age=1".into());
    let addr = gateway(server.addr, Arc::new(AmlKey::new(b"unused")), Duration::from_millis(100)).await;
    let rsa = sign(Algorithm::RS256, "rsa-1", &keys.rsa_pem, claims());
    let ec = sign(Algorithm::ES256, "ec-1", &keys.ec_pem, claims());
    assert_eq!(score(addr, "aad-ep", &rsa).await.status, 200);
    *server.set.lock().expect("set") = json!({"keys": [keys.ec_jwk]});
    assert_eq!(score(addr, "aad-ep", &rsa).await.status, 200, "cached for the second the issuer allows");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = score(addr, "aad-ep", &rsa).await.status;
        if status == 401 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the removed key still passes ({status})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(server.fetches.load(Ordering::SeqCst) >= 2, "fetched again once the lifetime ended");
    assert_eq!(score(addr, "aad-ep", &ec).await.status, 200, "the key it still lists passes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aml_tokens_pass_for_their_endpoint_until_they_expire() {
    let server = jwks(json!({"keys": []})).await;
    let key = Arc::new(AmlKey::new(b"workspace secret, thirty-two+ bytes"));
    let addr = gateway(server.addr, key.clone(), Duration::from_secs(3600)).await;
    let issued = key.issue(&audience("ws", "aml-ep"), Duration::from_secs(60)).expect("token");
    assert_eq!(score(addr, "aml-ep", &issued.token).await.status, 200);
    assert_eq!(score(addr, "aml-other", &issued.token).await.status, 401, "scoped to its endpoint");
    // Issued 61 s ago for 60 s: expired a second ago (aml tokens have no leeway).
    let lapsed = key.issue_at(&audience("ws", "aml-ep"), Duration::from_secs(60), now() - 61).expect("token");
    assert_eq!(score(addr, "aml-ep", &lapsed.token).await.status, 401, "expired");
    let last_second =
        key.issue_at(&audience("ws", "aml-ep"), Duration::from_secs(60), now() - 55).expect("token");
    assert_eq!(score(addr, "aml-ep", &last_second.token).await.status, 200, "valid to its last second");
    let forged = AmlKey::new(b"not the workspace secret")
        .issue(&audience("ws", "aml-ep"), Duration::from_secs(60))
        .expect("token");
    assert_eq!(score(addr, "aml-ep", &forged.token).await.status, 401, "bad signature");
}
