//! The TLS listener with a real certificate (made with openssl for each run): HTTP/2 and
//! HTTP/1.1 by ALPN, and a certificate swapped without a restart when its files change.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use moat_gateway::tls::{TlsFiles, acceptor};
use moat_gateway::{Config, Credentials, Gateway, Routes};
use moat_test_support::TempDir;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::net::TcpListener;

/// A self-signed certificate for localhost and 127.0.0.1, written to `cert.pem`/`key.pem`.
fn self_signed(dir: &Path, name: &str) -> TlsFiles {
    let (cert, key) = moat_test_support::self_signed_certificate(dir, name, "DNS:localhost,IP:127.0.0.1");
    TlsFiles { cert, key }
}

async fn tls_gateway(files: &TlsFiles) -> (SocketAddr, moat_gateway::tls::Reloader) {
    let up = common::upstream("[1.0]").await;
    let routes = Routes::default();
    let credentials = Credentials::Keys(vec![b"tls-test-key".to_vec()]);
    routes.publish(common::table_of_one(up, credentials));
    let gw = Gateway::new(Config::default(), routes, moat_gateway::access_log::discard());
    let (tls, reloader) = acceptor(files).expect("certificate loads");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(moat_gateway::serve_tls(listener, tls, gw, std::future::pending(), Duration::from_secs(1)));
    (addr, reloader)
}

/// Scores over TLS trusting only `root`; the HTTP version the connection settled on.
async fn score(addr: SocketAddr, root: &Path, h2: bool) -> Result<hyper::Version, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(root).expect("pem") {
        roots.add(cert.expect("cert")).expect("root");
    }
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config).https_only();
    let https = if h2 { builder.enable_all_versions().build() } else { builder.enable_http1().build() };
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    let request = hyper::Request::post(format!("https://localhost:{}/endpoints/ep/score", addr.port()))
        .header("authorization", "Bearer tls-test-key")
        .body(Empty::new())
        .expect("request");
    let response = client.request(request).await.map_err(|e| format!("{e:?}"))?;
    let version = response.version();
    let status = response.status();
    // The container's own fields arrive (HTTP/2 writes them from the map); moat's request id
    // and deployment replace any the container gave.
    let fields = response.headers();
    assert_eq!(fields.get("x-model-version").map(|v| v.as_bytes()), Some(&b"7"[..]), "{version:?}");
    let ids: Vec<_> = fields.get_all("x-request-id").iter().collect();
    assert!(ids.len() == 1 && ids[0] != "container-made-this", "{version:?}: {ids:?}");
    assert_eq!(fields.get_all("azureml-model-deployment").iter().collect::<Vec<_>>(), ["blue"]);
    let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    assert_eq!((status.as_u16(), &body[..]), (200, &b"[1.0]"[..]));
    Ok(version)
}

fn temp() -> TempDir {
    TempDir::new("moat-tls")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_http2_and_http1_by_alpn() {
    let temp = temp();
    let dir = temp.path();
    let files = self_signed(dir, "first");
    let (addr, _reloader) = tls_gateway(&files).await;
    assert_eq!(score(addr, &files.cert, true).await, Ok(hyper::Version::HTTP_2));
    assert_eq!(score(addr, &files.cert, false).await, Ok(hyper::Version::HTTP_11));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_certificate_is_served_without_a_restart() {
    let temp = temp();
    let dir = temp.path();
    let files = self_signed(dir, "first");
    let (addr, mut reloader) = tls_gateway(&files).await;
    let old_root = dir.join("old-root.pem");
    std::fs::copy(&files.cert, &old_root).expect("copy");
    assert!(score(addr, &old_root, true).await.is_ok());

    let next = self_signed(dir, "second");
    // A half-written change (the new certificate with the old key) is refused; the old stays.
    std::fs::copy(&next.cert, &files.cert).expect("copy cert");
    assert!(!reloader.check(), "a certificate that does not match its key is not taken");
    assert!(score(addr, &old_root, true).await.is_ok());

    std::fs::copy(&next.key, &files.key).expect("copy key");
    assert!(reloader.check(), "the new pair is taken");
    assert!(score(addr, &next.cert, true).await.is_ok(), "new connections get the new certificate");
    assert!(score(addr, &old_root, true).await.is_err(), "the old certificate is gone");
}
