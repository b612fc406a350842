//! Answers stream: a container's body reaches the client as the container sends it, bounded
//! by the gap between two pieces and by `max_response_bytes`, and a client that goes away
//! closes the container's connection. Request bodies are bounded the other way: a deadline
//! and the node's body budget.

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use moat_gateway::{
    AccessRecord, Admissions, Config, Credentials, DeploymentRoute, EndpointRoute, Gateway, Limits,
    RouteTable, Routes, Upstream,
};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const KEY: &str = "streaming-test-key";
const GAP: Duration = Duration::from_millis(1000);
const EVENT_GAP: Duration = Duration::from_millis(400);
const EVENTS: usize = 6;

type Answer = BoxBody<Bytes, std::io::Error>;

/// What the container saw: connections, when it sent its last event, answers cut off.
#[derive(Default)]
struct Container {
    connections: AtomicUsize,
    last_event_sent: Mutex<Option<Instant>>,
    /// Streams whose reader went away before the container had finished.
    abandoned: AtomicUsize,
    /// Small answers given.
    small: AtomicUsize,
    /// Pieces of `/large` answers the container got rid of.
    large_pieces: AtomicUsize,
}

/// A body fed by a task through a channel of one piece: the task waits while the reader does
/// not read, and learns the reader is gone when a send fails.
fn channel_body() -> (mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>, Answer) {
    let (tx, mut rx) = mpsc::channel(1);
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    (tx, BodyExt::boxed(StreamBody::new(stream)))
}

fn event(i: usize) -> Frame<Bytes> {
    Frame::data(Bytes::from(format!("data: {{\"token\": {i}}}\n\n")))
}

/// The answer for each path the deployments call.
fn answer(path: &str, seen: Arc<Container>) -> hyper::Response<Answer> {
    let (tx, body) = channel_body();
    let mut response = hyper::Response::new(body);
    response.headers_mut().insert("content-type", "text/event-stream".parse().expect("ct"));
    match path {
        // Six events 400 ms apart: 2 s in all, every gap well under the 1 s limit.
        "/events" | "/failing" => {
            if path == "/failing" {
                *response.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
            }
            tokio::spawn(async move {
                for i in 0..EVENTS {
                    if i > 0 {
                        tokio::time::sleep(EVENT_GAP).await;
                    }
                    if i == EVENTS - 1 {
                        *seen.last_event_sent.lock().expect("lock") = Some(Instant::now());
                    }
                    if tx.send(Ok(event(i))).await.is_err() {
                        return;
                    }
                }
            });
        }
        // One event, then nothing for longer than the limit.
        "/stall" => {
            tokio::spawn(async move {
                let _ = tx.send(Ok(event(0))).await;
                tokio::time::sleep(Duration::from_secs(30)).await;
                drop(tx);
            });
        }
        // Two events, then the connection breaks.
        "/abrupt" => {
            tokio::spawn(async move {
                let _ = tx.send(Ok(event(0))).await;
                let _ = tx.send(Ok(event(1))).await;
                // Long enough for both to be on the wire before the break.
                tokio::time::sleep(Duration::from_millis(200)).await;
                let _ = tx.send(Err(std::io::Error::other("the scorer crashed"))).await;
            });
        }
        // 64 MiB in 64 KiB pieces, with no length announced.
        "/large" => {
            tokio::spawn(async move {
                let piece = Bytes::from(vec![b'x'; 64 * 1024]);
                for _ in 0..1024 {
                    if tx.send(Ok(Frame::data(piece.clone()))).await.is_err() {
                        return;
                    }
                    seen.large_pieces.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
        // An event every 50 ms until the reader goes away.
        "/endless" => {
            tokio::spawn(async move {
                for i in 0.. {
                    if tx.send(Ok(event(i))).await.is_err() {
                        seen.abandoned.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            });
        }
        // An announced length over the gateway's limit.
        "/announced" => {
            let body = Full::new(Bytes::from(vec![b'y'; 3 * 1024 * 1024]));
            return hyper::Response::new(body.map_err(|never| match never {}).boxed());
        }
        // A small answer of announced length, read by the request body's tests.
        _ => {
            seen.small.fetch_add(1, Ordering::SeqCst);
            let body = Full::new(Bytes::from_static(b"[1.0]"));
            return hyper::Response::new(body.map_err(|never| match never {}).boxed());
        }
    }
    response
}

async fn container() -> (SocketAddr, Arc<Container>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Container::default());
    let counts = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counts.connections.fetch_add(1, Ordering::SeqCst);
            let seen = counts.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<Incoming>| {
                    let seen = seen.clone();
                    async move {
                        // Read the request whole first, as a scorer does.
                        let path = req.uri().path().to_string();
                        let _ = req.into_body().collect().await;
                        Ok::<_, Infallible>(answer(&path, seen))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

/// Polls `check` every 50 ms until it holds; fails the test naming `what` after `timeout`.
async fn eventually<F: std::future::Future<Output = bool>>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> F,
) {
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "waited {timeout:?} for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Harness {
    addr: SocketAddr,
    seen: Arc<Container>,
    logs: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Harness {
    /// The access line of the request whose answer carried `request_id`, once written.
    async fn line(&self, request_id: &str) -> serde_json::Value {
        let found =
            || self.logs.lock().expect("logs").iter().find(|l| l["request_id"] == request_id).cloned();
        eventually(Duration::from_secs(10), "the access line", || std::future::ready(found().is_some()))
            .await;
        found().expect("access line")
    }
}

/// The gateway in front of the container; each deployment calls one of its paths.
async fn gateway(config: Config) -> Harness {
    gateway_on(config, None).await
}

/// The same, serving TLS (HTTP/2 by ALPN) with `tls` when given.
async fn gateway_on(config: Config, tls: Option<tokio_rustls::TlsAcceptor>) -> Harness {
    let (up, seen) = container().await;
    let admissions = Admissions::default();
    let limits = Limits { max_per_instance: 64, max_queue_wait: Duration::from_secs(1), instance_count: 1 };
    let route = |name: &str| {
        let instances = vec![Upstream::new(format!("{name}-0"), up, Default::default())];
        let admission = admissions.get(&moat_id::DeploymentId::new("ep", name), limits);
        let path = format!("/{name}");
        (name.to_string(), Arc::new(DeploymentRoute::new(name, &path, GAP, admission, instances, limits)))
    };
    let names = ["events", "failing", "stall", "abrupt", "large", "endless", "announced", "small"];
    let endpoint = EndpointRoute {
        name: "ep".into(),
        public_access: true,
        credentials: Credentials::Keys(vec![KEY.into()]),
        traffic: vec![("small".into(), 100)],
        mirror: None,
        deployments: names.iter().map(|n| route(n)).collect(),
    };
    let routes = Routes::default();
    routes.publish(RouteTable {
        moat_networks: Vec::new(),
        endpoints: HashMap::from_iter([("ep".into(), endpoint)]),
    });
    let logs = Arc::new(Mutex::new(Vec::new()));
    let sink = {
        let logs = logs.clone();
        Arc::new(move |r: &AccessRecord| {
            logs.lock().expect("logs").push(serde_json::to_value(r).expect("json"))
        })
    };
    let gw = Gateway::new(config, routes, sink);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (never, grace) = (std::future::pending(), Duration::from_secs(1));
    match tls {
        None => tokio::spawn(moat_gateway::serve(listener, gw, never, grace)),
        Some(tls) => tokio::spawn(moat_gateway::serve_tls(listener, tls, gw, never, grace)),
    };
    Harness { addr, seen, logs }
}

/// A client connection to the gateway, kept alive.
async fn client(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(connection);
    sender
}

/// Scores `deployment`; the answer's head, its body still to read.
async fn score(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    deployment: &str,
) -> hyper::Response<Incoming> {
    let request = hyper::Request::post("/endpoints/ep/score")
        .header("host", "gateway")
        .header("authorization", format!("Bearer {KEY}"))
        .header("azureml-model-deployment", deployment)
        .body(Full::new(Bytes::from_static(b"{\"data\": [[1, 2]]}")))
        .expect("request");
    sender.ready().await.expect("ready");
    sender.send_request(request).await.expect("answer's head")
}

fn request_id(response: &hyper::Response<Incoming>) -> String {
    response.headers()["x-request-id"].to_str().expect("id").to_string()
}

/// The body's pieces with the time each came, up to its end or its failure.
async fn pieces(body: &mut Incoming) -> (Vec<(Instant, Bytes)>, Option<hyper::Error>) {
    let mut got = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    got.push((Instant::now(), data));
                }
            }
            Err(e) => return (got, Some(e)),
        }
    }
    (got, None)
}

fn text(pieces: &[(Instant, Bytes)]) -> String {
    pieces.iter().map(|(_, b)| String::from_utf8_lossy(b).into_owned()).collect()
}

#[tokio::test]
async fn events_reach_the_client_as_they_are_sent_and_a_long_stream_with_short_gaps_passes() {
    let h = gateway(Config::default()).await;
    let mut sender = client(h.addr).await;
    let mut response = score(&mut sender, "events").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let id = request_id(&response);
    let (got, error) = pieces(response.body_mut()).await;
    assert!(error.is_none(), "the stream ended cleanly: {error:?}");
    let all = text(&got);
    assert_eq!(all.matches("data: ").count(), EVENTS, "{all}");
    let last_sent = h.seen.last_event_sent.lock().expect("lock").expect("sent");
    assert!(got[0].0 < last_sent, "the first event came before the last was sent");
    let line = h.line(&id).await;
    assert_eq!(line["status"], 200);
    assert_eq!(line["error"], serde_json::Value::Null);
    assert!(line["duration_ms"].as_f64().expect("duration") >= 1900.0, "logged at the end: {line}");

    // The connection went back to the container's idle list: a second stream reuses it.
    let mut again = score(&mut sender, "events").await;
    let (got, _) = pieces(again.body_mut()).await;
    assert_eq!(text(&got).matches("data: ").count(), EVENTS);
    assert_eq!(h.seen.connections.load(Ordering::SeqCst), 1, "one connection for both streams");
}

#[tokio::test]
async fn a_container_error_streams_through_as_424() {
    let h = gateway(Config::default()).await;
    let mut sender = client(h.addr).await;
    let mut response = score(&mut sender, "failing").await;
    assert_eq!(response.status(), 424);
    assert_eq!(response.headers()["ms-azureml-model-error-statuscode"], "503");
    let (got, error) = pieces(response.body_mut()).await;
    assert!(error.is_none());
    assert_eq!(text(&got).matches("data: ").count(), EVENTS);
}

#[tokio::test]
async fn a_stall_longer_than_request_timeout_cuts_the_stream_and_is_logged() {
    let h = gateway(Config::default()).await;
    let mut sender = client(h.addr).await;
    let started = Instant::now();
    let mut response = score(&mut sender, "stall").await;
    assert_eq!(response.status(), 200, "the head came in time");
    let id = request_id(&response);
    let (got, error) = pieces(response.body_mut()).await;
    assert_eq!(text(&got).matches("data: ").count(), 1);
    assert!(error.is_some(), "a cut answer does not end like a whole one");
    assert!(started.elapsed() >= GAP);
    let line = h.line(&id).await;
    assert_eq!(line["error"], "stream_timeout", "{line}");
    assert_eq!(line["status"], 200);
}

#[tokio::test]
async fn a_container_that_breaks_mid_stream_cuts_the_answer() {
    let h = gateway(Config::default()).await;
    let mut sender = client(h.addr).await;
    let mut response = score(&mut sender, "abrupt").await;
    let id = request_id(&response);
    let (got, error) = pieces(response.body_mut()).await;
    assert_eq!(text(&got).matches("data: ").count(), 2);
    assert!(error.is_some());
    let line = h.line(&id).await;
    assert!(line["error"].as_str().expect("error").starts_with("upstream_lost"), "{line}");
}

/// The resident memory of this process (the gateway's, here), from /proc.
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb * 1024
}

#[tokio::test]
async fn a_large_answer_streams_through_in_flat_memory_and_the_limit_holds_both_ways() {
    let h = gateway(Config::default()).await;
    let mut sender = client(h.addr).await;
    let before = resident_bytes();
    let mut response = score(&mut sender, "large").await;
    let (mut bytes, mut peak) = (0usize, before);
    while let Some(frame) = response.body_mut().frame().await {
        bytes += frame.expect("piece").into_data().map_or(0, |d| d.len());
        peak = peak.max(resident_bytes());
    }
    assert_eq!(bytes, 64 * 1024 * 1024);
    let grown = peak.saturating_sub(before);
    assert!(grown < 16 * 1024 * 1024, "64 MiB went through; memory grew by {grown} bytes");

    // The same answers against a 2 MiB limit: refused when announced, cut when streamed.
    let h = gateway(Config { max_response_bytes: 2 * 1024 * 1024, ..Config::default() }).await;
    let mut sender = client(h.addr).await;
    let mut announced = score(&mut sender, "announced").await;
    assert_eq!(announced.status(), 502);
    let (got, _) = pieces(announced.body_mut()).await;
    assert!(text(&got).contains("max_response_bytes (2097152 bytes)"), "{}", text(&got));

    let mut streamed = score(&mut sender, "large").await;
    assert_eq!(streamed.status(), 200);
    let id = request_id(&streamed);
    let (got, error) = pieces(streamed.body_mut()).await;
    let received: usize = got.iter().map(|(_, b)| b.len()).sum();
    assert!(error.is_some() && received <= 2 * 1024 * 1024, "cut at the limit: {received} bytes");
    assert_eq!(h.line(&id).await["error"], "response_too_large");
}

#[tokio::test]
async fn a_client_that_reads_slowly_slows_the_container_down() {
    let h = gateway(Config::default()).await;
    let mut sender = client(h.addr).await;
    let mut response = score(&mut sender, "large").await;
    // The client reads nothing: the container gets rid of what the buffers on the way hold
    // (sockets, hyper's), then waits. Its count settles below the 1024 pieces.
    let mut last = usize::MAX;
    let settled = || {
        let now = h.seen.large_pieces.load(Ordering::SeqCst);
        let same = now == last && now > 0;
        last = now;
        std::future::ready(same)
    };
    eventually(Duration::from_secs(10), "the container to stop sending", settled).await;
    let held = h.seen.large_pieces.load(Ordering::SeqCst);
    // Without backpressure all would have left at once (the gateway reading into memory).
    assert!(held < 512, "{held} of 1024 pieces (64 KiB each) left the container with nobody reading");
    let (got, error) = pieces(response.body_mut()).await;
    assert!(error.is_none());
    assert_eq!(got.iter().map(|(_, b)| b.len()).sum::<usize>(), 64 * 1024 * 1024, "then all of it comes");
}

#[tokio::test]
async fn a_client_that_goes_away_mid_stream_closes_the_containers_connection() {
    let h = gateway(Config::default()).await;
    let mut sender = client(h.addr).await;
    let mut response = score(&mut sender, "endless").await;
    let id = request_id(&response);
    let first = response.body_mut().frame().await.expect("a piece").expect("data");
    assert!(first.is_data());
    drop(response);
    drop(sender);
    let abandoned = || std::future::ready(h.seen.abandoned.load(Ordering::SeqCst) == 1);
    eventually(Duration::from_secs(10), "the container to see its reader gone", abandoned).await;
    assert_eq!(h.line(&id).await["error"], "client_closed");
}

/// A client that sends its head announcing `length` body bytes, then one byte a second.
async fn slow_upload(addr: SocketAddr, length: usize) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /endpoints/ep/score HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {KEY}\r\nContent-Length: {length}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    stream
}

#[tokio::test]
async fn slow_uploads_hold_neither_memory_nor_other_clients_and_end_at_the_deadline() {
    let config = Config {
        header_read_timeout: Duration::from_secs(2),
        max_body_bytes: 1024 * 1024,
        max_buffered_body_bytes: 4 * 1024 * 1024,
        ..Config::default()
    };
    let h = gateway(config).await;
    let before = resident_bytes();
    let mut uploads = Vec::new();
    for _ in 0..200 {
        uploads.push(slow_upload(h.addr, 1024 * 1024).await);
    }
    let started = Instant::now();
    // While they trickle, other clients are served.
    let mut sender = client(h.addr).await;
    let mut served = 0;
    while started.elapsed() < Duration::from_millis(1500) {
        for upload in &mut uploads {
            let _ = upload.write_all(b"x").await;
        }
        let mut response = score(&mut sender, "small").await;
        assert_eq!(response.status(), 200);
        let _ = pieces(response.body_mut()).await;
        served += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served >= 5, "{served} answers while 200 uploads trickled");
    let grown = resident_bytes().saturating_sub(before);
    assert!(grown < 32 * 1024 * 1024, "200 slow uploads; memory grew by {grown} bytes");

    // Each ends at the deadline with 408.
    let upload = &mut uploads[0];
    let mut answer = String::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        use tokio::io::AsyncReadExt;
        let _ = upload.read_to_string(&mut answer).await;
    });
    read.await.expect("answered");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("header_read_timeout_ms"), "{answer}");
}

#[tokio::test]
async fn request_bodies_share_one_budget_and_give_it_back() {
    let config =
        Config { max_body_bytes: 1024 * 1024, max_buffered_body_bytes: 1024 * 1024, ..Config::default() };
    let h = gateway(config).await;
    // One upload has sent 600 KiB of its 1 MiB and holds them.
    let mut holder = slow_upload(h.addr, 1024 * 1024).await;
    holder.write_all(&vec![b'x'; 600 * 1024]).await.expect("part of the body");
    let post = |length: usize| {
        let addr = h.addr;
        async move {
            let body = "x".repeat(length);
            let auth = format!("Bearer {KEY}");
            tokio::task::spawn_blocking(move || {
                moat_test_support::http(
                    addr,
                    "POST",
                    "/endpoints/ep/score",
                    &[("Authorization", &auth)],
                    &body,
                )
            })
            .await
            .expect("join")
            .expect("reply")
        }
    };
    // What the budget cannot hold now is refused before a byte of it is read (the probe
    // sends none); what fits passes.
    let refused_unread = || async {
        let mut probe = slow_upload(h.addr, 500 * 1024).await;
        let mut answer = vec![0u8; 12];
        use tokio::io::AsyncReadExt;
        let read = tokio::time::timeout(Duration::from_millis(300), probe.read_exact(&mut answer)).await;
        matches!(read, Ok(Ok(_))) && answer.as_slice() == b"HTTP/1.1 503"
    };
    eventually(Duration::from_secs(5), "a body the budget cannot hold refused unread", refused_unread).await;
    let refused = post(500 * 1024).await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(refused.body.contains("too many request bodies"), "{}", refused.body);
    assert_eq!(post(100).await.status, 200);
    // Once the holder's body is whole and answered, its share is back.
    holder.write_all(&vec![b'x'; 424 * 1024]).await.expect("the rest");
    let mut answer = vec![0u8; 12];
    use tokio::io::AsyncReadExt;
    holder.read_exact(&mut answer).await.expect("answer");
    assert_eq!(&answer, b"HTTP/1.1 200");
    drop(holder);
    let passes = || async { post(500 * 1024).await.status == 200 };
    eventually(Duration::from_secs(5), "the share given back", passes).await;
}

/// An HTTP/2 connection to the gateway over TLS, trusting the test's certificate.
async fn h2_client(addr: SocketAddr, root: &std::path::Path) -> h2::client::SendRequest<Bytes> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(root).expect("pem") {
        roots.add(cert.expect("cert")).expect("root");
    }
    let mut config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.expect("TLS");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (sender, connection) = h2::client::handshake(tls).await.expect("HTTP/2 handshake");
    tokio::spawn(connection);
    sender.ready().await.expect("ready")
}

/// Opens a stream scoring `deployment`; its answer's head.
async fn h2_score(
    sender: &mut h2::client::SendRequest<Bytes>,
    deployment: &str,
) -> h2::client::ResponseFuture {
    let request = hyper::Request::post("https://localhost/endpoints/ep/score")
        .header("authorization", format!("Bearer {KEY}"))
        .header("azureml-model-deployment", deployment)
        .body(())
        .expect("request");
    let (answer, mut body) = sender.send_request(request, false).expect("a stream");
    body.send_data(Bytes::from_static(b"{}"), true).expect("body");
    answer
}

#[tokio::test]
async fn over_http2_events_stream_and_a_connection_holds_at_most_its_streams() {
    let dir = moat_test_support::TempDir::new("moat-h2-streams");
    let (cert, key) =
        moat_test_support::self_signed_certificate(dir.path(), "h2", "DNS:localhost,IP:127.0.0.1");
    let files = moat_gateway::tls::TlsFiles { cert: cert.clone(), key };
    let (tls, _reloader) = moat_gateway::tls::acceptor(&files).expect("certificate loads");
    let config = Config { max_streams_per_connection: 3, ..Config::default() };
    let h = gateway_on(config, Some(tls)).await;
    let mut sender = h2_client(h.addr, &cert).await;

    // An event stream comes piece by piece over HTTP/2 as well.
    let response = h2_score(&mut sender, "events").await.await.expect("head");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let (mut first, mut events) = (None, 0);
    while let Some(piece) = body.data().await {
        let piece = piece.expect("piece");
        let _ = body.flow_control().release_capacity(piece.len());
        first.get_or_insert(Instant::now());
        events += String::from_utf8_lossy(&piece).matches("data: ").count();
    }
    let last_sent = h.seen.last_event_sent.lock().expect("lock").expect("sent");
    assert_eq!(events, EVENTS);
    assert!(first.expect("an event") < last_sent, "the first event came before the last was sent");
    // The server's settings have long come by now.
    assert_eq!(sender.current_max_send_streams(), 3, "the gateway announces its cap");

    // Three endless streams fill the connection: a fourth request waits for room (it never
    // reaches the container) while the three go on, and is answered once one of them ends.
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut sender = sender.clone().ready().await.expect("room for a stream");
        let response = h2_score(&mut sender, "endless").await.await.expect("head");
        open.push(response.into_body());
    }
    let fourth = tokio::spawn({
        let mut sender = sender.clone().ready().await.expect("sender");
        async move { h2_score(&mut sender, "small").await.await.expect("head").status() }
    });
    for _ in 0..5 {
        for body in &mut open {
            let piece = body.data().await.expect("more").expect("piece");
            let _ = body.flow_control().release_capacity(piece.len());
        }
    }
    assert_eq!(h.seen.small.load(Ordering::SeqCst), 0, "the fourth waited while three were open");
    open.pop();
    let status =
        tokio::time::timeout(Duration::from_secs(10), fourth).await.expect("answered").expect("join");
    assert_eq!(status, 200);
    assert_eq!(h.seen.small.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_answer_of_known_length_keeps_its_length_and_a_stream_goes_chunked() {
    let h = gateway(Config::default()).await;
    let mut sender = client(h.addr).await;
    let small = score(&mut sender, "small").await;
    assert_eq!(small.headers().get("content-length").map(|v| v.as_bytes()), Some(&b"5"[..]));
    assert!(small.headers().get("transfer-encoding").is_none());
    let (got, _) = pieces(&mut small.into_body()).await;
    assert_eq!(text(&got), "[1.0]");
    let events = score(&mut sender, "events").await;
    assert_eq!(events.headers().get("transfer-encoding").map(|v| v.as_bytes()), Some(&b"chunked"[..]));
}
