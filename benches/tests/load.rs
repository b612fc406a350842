//! moat-bench against servers of the test's own: what it counts, how it corrects latency for
//! a stall, how it sorts failures, and HTTP/2 and TLS.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const BENCH: &str = env!("CARGO_BIN_EXE_moat-bench");

/// What the server saw of the last request: (method, x-test header, body).
type Seen = Arc<Mutex<(String, String, String)>>;

/// A server's TLS: its certificate and key (PEM), and how long it waits before each handshake.
struct Tls {
    pem: (Vec<u8>, Vec<u8>),
    handshake_wait: Duration,
}

/// An HTTP/1.1 and HTTP/2 server; request number `stall_at` (counting from 1) waits
/// `stall` before its answer. With `tls`, it speaks TLS.
async fn server(stall_at: u64, stall: Duration, tls: Option<Tls>) -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen: Seen = Arc::default();
    let count = Arc::new(AtomicU64::new(0));
    let handshake_wait = tls.as_ref().map_or(Duration::ZERO, |tls| tls.handshake_wait);
    let acceptor = tls.map(|Tls { pem: (cert, key), .. }| {
        use rustls::pki_types::pem::PemObject;
        let certs = rustls::pki_types::CertificateDer::pem_slice_iter(&cert).collect::<Result<Vec<_>, _>>();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(&key).expect("key");
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_no_client_auth()
                .with_single_cert(certs.expect("certificate"), key)
                .expect("config");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    });
    let service = {
        let seen = seen.clone();
        move |request: hyper::Request<hyper::body::Incoming>| {
            let (seen, count) = (seen.clone(), count.clone());
            async move {
                let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                let method = request.method().to_string();
                let header =
                    request.headers().get("x-test").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                *seen.lock().expect("seen") = (method, header, String::from_utf8_lossy(&body).into_owned());
                if n == stall_at {
                    tokio::time::sleep(stall).await;
                }
                Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"[1.0]"))))
            }
        }
    };
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let (service, acceptor) = (service.clone(), acceptor.clone());
            tokio::spawn(async move {
                let builder = auto::Builder::new(TokioExecutor::new());
                match acceptor {
                    None => drop(builder.serve_connection(TokioIo::new(stream), service_fn(service)).await),
                    Some(acceptor) => {
                        tokio::time::sleep(handshake_wait).await;
                        let Ok(tls) = acceptor.accept(stream).await else { return };
                        drop(builder.serve_connection(TokioIo::new(tls), service_fn(service)).await)
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// A server that answers every connection the same broken way.
async fn broken(answer: &'static [u8], hang: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let _ = stream.write_all(answer).await;
                if hang {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
            });
        }
    });
    addr
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn bench(args: &[&str], env: &[(&str, &str)]) -> Run {
    let out = tokio::process::Command::new(BENCH)
        .kill_on_drop(true)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .await
        .expect("moat-bench runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn json(args: &[&str]) -> Value {
    let run = bench(&[&["--json"], args].concat(), &[]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_loop_sends_exactly_n_requests_with_the_given_method_headers_and_body() {
    let (addr, seen) = server(0, Duration::ZERO, None).await;
    let url = format!("http://{addr}/score");
    let dir = moat_test_support::TempDir::new("moat-bench-body");
    let body = dir.path().join("body.json");
    std::fs::write(&body, r#"{"data": [[1, 2]]}"#).expect("body");
    let report =
        json(&["-c", "4", "-n", "300", "-H", "X-Test: yes", "-D", &body.display().to_string(), &url]).await;
    assert_eq!(report["requests"], 300);
    assert_eq!(report["status"], serde_json::json!({"200": 300}));
    assert!(report["errors"].as_object().expect("errors").values().all(|n| n == 0), "{report}");
    assert!(report["latency_us"]["p50"].as_u64().expect("p50") > 0);
    assert_eq!(
        report["latency_us"], report["uncorrected_latency_us"],
        "a closed loop has nothing to correct"
    );
    let (method, header, sent) = seen.lock().expect("seen").clone();
    assert_eq!((method.as_str(), header.as_str(), sent.as_str()), ("POST", "yes", r#"{"data": [[1, 2]]}"#));

    let human = bench(&["-c", "2", "-n", "50", "-m", "PUT", "-d", "x", &url], &[]).await;
    assert_eq!(human.code, 0, "{}", human.stderr);
    assert!(human.stdout.contains("50 requests") && human.stdout.contains("p99"), "{}", human.stdout);
    assert!(human.stdout.contains("200: 50"), "{}", human.stdout);
    assert_eq!(seen.lock().expect("seen").0, "PUT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_loop_counts_a_stall_against_every_request_that_waited_for_it() {
    // One connection at 200/s; the 40th answer takes 500 ms, so about 100 requests fall due
    // while it waits. Counted from their due times, they are slow; counted from when they
    // went out (the uncorrected view), they are not.
    let (addr, _) = server(40, Duration::from_millis(500), None).await;
    let url = format!("http://{addr}/score");
    let report = json(&["-c", "1", "-q", "200", "-z", "2s", &url]).await;
    assert_eq!(report["offered_rps"], 200.0);
    assert_eq!(report["requests"], 400, "{report}");
    assert!(report["late"].as_u64().expect("late") >= 50, "{report}");
    let corrected = report["latency_us"]["p90"].as_u64().expect("p90");
    let uncorrected = report["uncorrected_latency_us"]["p90"].as_u64().expect("p90");
    assert!(corrected >= 100_000, "the stall is missing from the corrected p90: {report}");
    assert!(uncorrected < 100_000, "{report}");
    assert!(report["latency_us"]["max"].as_u64().expect("max") >= 450_000, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_opened_before_the_clock_starts() {
    // Each TLS handshake waits a second. Opened by the first requests, the connections
    // would make them a second late (counted from their due times) and the run a second
    // longer; opened before the clock starts, neither.
    let dir = moat_test_support::TempDir::new("moat-bench-opening");
    let (cert, key) =
        moat_test_support::self_signed_certificate(dir.path(), "bench", "DNS:localhost,IP:127.0.0.1");
    let pem = (std::fs::read(&cert).expect("cert"), std::fs::read(&key).expect("key"));
    let (slow, _) =
        server(0, Duration::ZERO, Some(Tls { pem, handshake_wait: Duration::from_secs(1) })).await;
    let url = format!("https://127.0.0.1:{}/score", slow.port());
    for http2 in [false, true] {
        let mut args = vec!["--insecure", "-c", "2", "-q", "50", "-z", "1s"];
        if http2 {
            args.push("--http2");
        }
        args.push(&url);
        let report = json(&args).await;
        assert_eq!(report["status"], serde_json::json!({"200": 50}), "http2={http2}: {report}");
        let max = report["latency_us"]["max"].as_u64().expect("max");
        assert!(max < 500_000, "http2={http2}: the handshake counted in a request's latency: {report}");
        let seconds = report["duration_s"].as_f64().expect("duration");
        assert!(seconds < 1.5, "http2={http2}: the handshake counted in the run's time: {report}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_counted_by_kind() {
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let closed_addr = closed.local_addr().expect("addr");
    drop(closed);
    let reset = broken(b"", false).await;
    let garbage = broken(b"SSH-2.0-OpenSSH_9.2\r\n\r\n", false).await;
    let silent = broken(b"", true).await;
    let (plain, _) = server(0, Duration::ZERO, None).await;
    for (url, extra, kind) in [
        (format!("http://{closed_addr}/"), vec![], "connect"),
        (format!("http://{reset}/"), vec![], "reset"),
        (format!("http://{garbage}/"), vec![], "protocol"),
        (format!("http://{silent}/"), vec!["--timeout", "200ms"], "timeout"),
        // The handshake never ends: opening the connection before the clock gives up within
        // the timeout too, rather than at the server's whim (30 s).
        (format!("https://{silent}/"), vec!["--insecure", "--timeout", "200ms"], "timeout"),
        (format!("https://127.0.0.1:{}/", plain.port()), vec!["--insecure"], "tls"),
    ] {
        let mut args = vec!["-c", "1", "-n", "3"];
        args.extend(extra);
        args.push(&url);
        let report = tokio::time::timeout(Duration::from_secs(15), json(&args))
            .await
            .unwrap_or_else(|_| panic!("{kind}: the run outlived its requests' timeouts"));
        assert_eq!(report["requests"], 3, "{kind}: {report}");
        assert_eq!(report["errors"][kind], 3, "{kind}: {report}");
        assert_eq!(report["status"], serde_json::json!({}), "{kind}: {report}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_and_tls_work_and_an_untrusted_certificate_is_refused() {
    let (plain, _) = server(0, Duration::ZERO, None).await;
    let report = json(&["-c", "2", "-n", "100", "--http2", &format!("http://{plain}/score")]).await;
    assert_eq!(report["status"], serde_json::json!({"200": 100}), "{report}");

    let dir = moat_test_support::TempDir::new("moat-bench-tls");
    let (cert, key) =
        moat_test_support::self_signed_certificate(dir.path(), "bench", "DNS:localhost,IP:127.0.0.1");
    let pem = (std::fs::read(&cert).expect("cert"), std::fs::read(&key).expect("key"));
    let (tls, _) = server(0, Duration::ZERO, Some(Tls { pem, handshake_wait: Duration::ZERO })).await;
    let url = format!("https://127.0.0.1:{}/score", tls.port());
    for http2 in [false, true] {
        let mut args = vec!["--json", "-c", "2", "-n", "50"];
        if http2 {
            args.push("--http2");
        }
        args.push(&url);
        let trusted = bench(&args, &[("SSL_CERT_FILE", &cert.display().to_string())]).await;
        let report: Value = serde_json::from_str(&trusted.stdout).expect("json");
        assert_eq!(report["status"], serde_json::json!({"200": 50}), "http2={http2}: {report}");
    }
    let untrusted = json(&["-c", "1", "-n", "2", &url]).await;
    assert_eq!(untrusted["errors"]["tls"], 2, "{untrusted}");
}

#[tokio::test]
async fn bad_flags_exit_2_and_name_the_flag() {
    for (args, flag) in [
        (vec!["-z", "ten", "http://127.0.0.1:1/"], "-z"),
        (vec!["-q", "0", "http://127.0.0.1:1/"], "-q"),
        (vec!["-H", "no colon", "http://127.0.0.1:1/"], "-H"),
        (vec!["ftp://127.0.0.1:1/"], "URL"),
        (vec!["-c", "many", "http://127.0.0.1:1/"], "-c"),
    ] {
        let run = bench(&args, &[]).await;
        assert_eq!(run.code, 2, "{args:?}");
        assert!(run.stderr.contains(flag), "{args:?}: {}", run.stderr);
        assert!(run.stdout.is_empty());
    }
}
