//! The gateway in front of an in-process upstream: credentials, routing, status codes and
//! headers as a client sees them.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::sync::atomic::{AtomicUsize, Ordering};

use moat_gateway::{
    AccessRecord, Admissions, Config, Credentials, DeploymentRoute, EndpointRoute, Gateway, Limits,
    RouteTable, Routes, Upstream,
};
use moat_test_support::{Reply, http};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// Requests inside `/pause` now, and the most there ever were (one test uses `/pause`).
static RUNNING: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// Copies that reached the mirror deployment.
static MIRRORED: AtomicUsize = AtomicUsize::new(0);

/// An upstream that echoes the headers it got (`/echo`), fails (`/fail`), or stalls (`/slow`);
/// it reports every connection it sees close.
async fn upstream() -> (SocketAddr, mpsc::UnboundedReceiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (closed_tx, closed) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let closed_tx = closed_tx.clone();
            tokio::spawn(async move {
                let service = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let headers: HashMap<String, String> = req
                        .headers()
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                        .collect();
                    let (status, body) = match req.uri().path() {
                        "/echo" => (200, serde_json::json!(headers).to_string()),
                        "/swagger.json" => (200, "{\"swagger\":\"2.0\"}".to_string()),
                        "/fail" => (400, "{\"detail\":\"bad input\"}".to_string()),
                        "/mirror" => {
                            MIRRORED.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_secs(2)).await;
                            (500, "the mirror's answer is never seen".to_string())
                        }
                        "/pause" => {
                            let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
                            PEAK.fetch_max(now, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(400)).await;
                            RUNNING.fetch_sub(1, Ordering::SeqCst);
                            (200, "paused".to_string())
                        }
                        _ => {
                            tokio::time::sleep(Duration::from_secs(30)).await;
                            (200, "late".to_string())
                        }
                    };
                    let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
                    *response.status_mut() = hyper::StatusCode::from_u16(status).expect("status");
                    response
                        .headers_mut()
                        .insert("content-type", "application/problem+json".parse().expect("ct"));
                    response.headers_mut().insert("x-request-id", "container-made-this".parse().expect("id"));
                    Ok::<_, Infallible>(response)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                let _ = closed_tx.send(());
            });
        }
    });
    (addr, closed)
}

struct Harness {
    addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
    closed: mpsc::UnboundedReceiver<()>,
}

const PRIMARY: &str = "primary-key-0123456789";
const SECONDARY: &str = "secondary-key-0123456789";

async fn gateway(config: Config) -> Harness {
    let (up, closed) = upstream().await;
    // A port where nothing listens: an instance whose container is gone.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let admissions = Admissions::default();
    let limited = |name: &str, path: &str, ups: Vec<SocketAddr>, max_per_instance: usize| {
        let limits = Limits {
            max_per_instance,
            max_queue_wait: Duration::from_millis(100),
            instance_count: ups.len(),
        };
        let instances = ups
            .into_iter()
            .enumerate()
            .map(|(i, addr)| Upstream::new(format!("{name}-{i}"), addr, Default::default()))
            .collect();
        let timeout = Duration::from_millis(if name == "tight" { 2000 } else { 300 });
        let admission = admissions.get("ep", name, limits);
        (name.to_string(), Arc::new(DeploymentRoute::new(name, path, timeout, admission, instances, limits)))
    };
    let route = |name: &str, path: &str, ups: Vec<SocketAddr>| limited(name, path, ups, 8);
    let endpoint = EndpointRoute {
        name: "ep".into(),
        public_access: true,
        credentials: Credentials::Keys(vec![PRIMARY.into(), SECONDARY.into()]),
        traffic: vec![("blue".into(), 100)],
        mirror: None,
        deployments: HashMap::from([
            route("blue", "/echo", vec![up]),
            route("bad", "/fail", vec![up]),
            route("slow", "/slow", vec![up]),
            route("empty", "/echo", vec![]),
            route("gone", "/echo", vec![dead]),
            route("half", "/echo", vec![dead, up]),
            limited("tight", "/pause", vec![up], 1),
        ]),
    };
    let idle = EndpointRoute {
        name: "idle".into(),
        public_access: true,
        credentials: Credentials::Keys(vec![PRIMARY.into()]),
        traffic: vec![],
        mirror: None,
        deployments: HashMap::new(),
    };
    // `split` sends 90 % of its traffic to blue and 10 % to green.
    let split = EndpointRoute {
        name: "split".into(),
        public_access: true,
        credentials: Credentials::Keys(vec![PRIMARY.into()]),
        traffic: vec![("blue".into(), 90), ("green".into(), 10)],
        mirror: None,
        deployments: HashMap::from([route("blue", "/echo", vec![up]), route("green", "/echo", vec![up])]),
    };
    // Every request to `mirrored` is copied to its deployment `copy`, which is slow.
    let mirrored = EndpointRoute {
        name: "mirrored".into(),
        public_access: true,
        credentials: Credentials::Keys(vec![PRIMARY.into()]),
        traffic: vec![("live".into(), 100)],
        mirror: Some(("copy".into(), 100)),
        deployments: HashMap::from([route("live", "/echo", vec![up]), route("copy", "/mirror", vec![up])]),
    };
    let routes = Routes::default();
    routes.publish(RouteTable {
        endpoints: HashMap::from([
            ("ep".into(), endpoint),
            ("idle".into(), idle),
            ("mirrored".into(), mirrored),
            ("split".into(), split),
        ]),
    });
    let logs = Arc::new(Mutex::new(Vec::new()));
    let sink = {
        let logs = logs.clone();
        Arc::new(move |r: &AccessRecord| {
            logs.lock().expect("logs").push(serde_json::to_string(r).expect("json"))
        })
    };
    let gw = Gateway::new(config, routes, sink);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(moat_gateway::serve(listener, gw, std::future::pending(), Duration::from_secs(1)));
    Harness { addr, logs, closed }
}

async fn call(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let headers: Vec<(String, String)> =
        headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let (method, path, body) = (method.to_string(), path.to_string(), body.to_string());
    tokio::task::spawn_blocking(move || {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        http(addr, &method, &path, &h, &body)
    })
    .await
    .expect("join")
    .expect("request")
}

/// A scoring request with the primary key, targeted at one deployment.
async fn score_on(h: &Harness, deployment: &str) -> Reply {
    let auth = bearer(PRIMARY);
    let headers = [("Authorization", auth.as_str()), ("azureml-model-deployment", deployment)];
    call(h.addr, "POST", "/endpoints/ep/score", &headers, "{}").await
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

#[tokio::test]
async fn both_keys_score_and_the_key_never_reaches_the_container() {
    let h = gateway(Config::default()).await;
    for key in [PRIMARY, SECONDARY] {
        let auth = bearer(key);
        let r = call(h.addr, "POST", "/endpoints/ep/score", &[("Authorization", &auth)], "{}").await;
        assert_eq!(r.status, 200, "{}", r.body);
        let seen: HashMap<String, String> = serde_json::from_str(&r.body).expect("echo");
        assert!(!seen.contains_key("authorization"), "credential forwarded: {seen:?}");
        assert_eq!(r.header("azureml-model-deployment"), Some("blue"));
        let id = r.header("x-request-id").expect("request id");
        assert_ne!(id, "container-made-this");
        assert_eq!(seen.get("x-request-id").map(String::as_str), Some(id), "container sees the same id");
    }
    let logs = h.logs.lock().expect("logs").join("\n");
    assert!(!logs.contains(PRIMARY) && !logs.contains(SECONDARY), "a key in the access log");
}

#[tokio::test]
async fn the_container_gets_the_clients_headers_without_this_hops_own() {
    let h = gateway(Config::default()).await;
    let auth = bearer(PRIMARY);
    let headers = [
        ("Authorization", auth.as_str()),
        ("Host", "client.example"),
        ("Connection", "x-hop"),
        ("X-Hop", "1"),
        ("Keep-Alive", "timeout=5"),
        ("X-Model-Input", "kept"),
    ];
    let r = call(h.addr, "POST", "/endpoints/ep/score", &headers, "{}").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let seen: HashMap<String, String> = serde_json::from_str(&r.body).expect("echo");
    for gone in ["authorization", "x-hop", "keep-alive", "connection"] {
        assert!(!seen.contains_key(gone), "{gone} forwarded: {seen:?}");
    }
    assert_eq!(seen.get("x-model-input").map(String::as_str), Some("kept"));
    assert_eq!(seen.get("content-length").map(String::as_str), Some("2"));
    let host = seen.get("host").expect("a Host header");
    assert!(host.starts_with("127.0.0.1:"), "Host {host} is not the container's address");
}

#[tokio::test]
async fn wrong_or_missing_credentials_get_401_and_are_logged() {
    let h = gateway(Config::default()).await;
    for headers in [vec![("Authorization", "Bearer nope")], vec![("Authorization", "Basic x")], vec![]] {
        let r = call(h.addr, "POST", "/endpoints/ep/score", &headers, "{}").await;
        assert_eq!(r.status, 401, "{headers:?}");
        let body: serde_json::Value = serde_json::from_str(&r.body).expect("json error");
        assert_eq!(body["request_id"].as_str(), r.header("x-request-id"));
    }
    let logs = h.logs.lock().expect("logs").clone();
    assert_eq!(logs.len(), 3);
    assert!(logs[0].contains("\"auth\":\"invalid\"") && logs[2].contains("\"auth\":\"missing\""), "{logs:?}");
}

#[tokio::test]
async fn routing_by_header_and_the_404s_that_name_what_is_missing() {
    let h = gateway(Config::default()).await;
    let auth = bearer(PRIMARY);
    let r = score_on(&h, "nosuch").await;
    assert_eq!(r.status, 404);
    assert!(r.body.contains("nosuch"), "{}", r.body);
    let r = call(h.addr, "POST", "/endpoints/missing/score", &[("Authorization", &auth)], "{}").await;
    assert_eq!(r.status, 404);
    assert!(r.body.contains("missing"), "{}", r.body);
    let r = call(h.addr, "POST", "/endpoints/idle/score", &[("Authorization", &auth)], "{}").await;
    assert_eq!(r.status, 404);
    assert!(r.body.contains("positive traffic"), "{}", r.body);
    let r = call(h.addr, "GET", "/endpoints/ep/swagger.json", &[("Authorization", &auth)], "").await;
    assert_eq!((r.status, r.body.as_str()), (200, "{\"swagger\":\"2.0\"}"));
}

#[tokio::test]
async fn container_errors_become_424_with_the_containers_body() {
    let h = gateway(Config::default()).await;
    let r = score_on(&h, "bad").await;
    assert_eq!(r.status, 424);
    assert_eq!(r.header("ms-azureml-model-error-statuscode"), Some("400"));
    assert_eq!(r.header("ms-azureml-model-error-reason"), Some("Bad Request"));
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(r.body, "{\"detail\":\"bad input\"}");
}

#[tokio::test]
async fn no_ready_instance_is_503_with_retry_after_and_a_dead_one_is_502() {
    let h = gateway(Config::default()).await;
    let r = score_on(&h, "empty").await;
    assert_eq!(r.status, 503);
    assert!(r.header("retry-after").is_some());
    let r = score_on(&h, "gone").await;
    assert_eq!(r.status, 502, "{}", r.body);
}

#[tokio::test]
async fn a_connect_failure_is_retried_once_on_another_instance() {
    let h = gateway(Config::default()).await;
    for _ in 0..4 {
        let r = score_on(&h, "half").await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
}

#[tokio::test]
async fn a_slow_model_gets_408_and_its_connection_is_closed() {
    let mut h = gateway(Config::default()).await;
    let r = score_on(&h, "slow").await;
    assert_eq!(r.status, 408, "{}", r.body);
    let closed = tokio::time::timeout(Duration::from_secs(5), h.closed.recv()).await;
    assert!(matches!(closed, Ok(Some(()))), "the upstream connection stayed open");
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let h = gateway(Config { max_body_bytes: 1000, ..Config::default() }).await;
    let auth = bearer(PRIMARY);
    let r = call(h.addr, "POST", "/endpoints/ep/score", &[("Authorization", &auth)], &"x".repeat(1001)).await;
    assert_eq!(r.status, 413);
    let r = call(h.addr, "POST", "/endpoints/ep/score", &[("Authorization", &auth)], &"x".repeat(1000)).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn an_instance_never_runs_more_than_its_limit_and_the_rest_get_429_with_retry_after() {
    let h = gateway(Config::default()).await;
    let calls: Vec<_> = (0..3)
        .map(|i| {
            let h_addr = h.addr;
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(i * 30)).await;
                let auth = bearer(PRIMARY);
                let headers = [("Authorization", auth.as_str()), ("azureml-model-deployment", "tight")];
                call(h_addr, "POST", "/endpoints/ep/score", &headers, "{}").await
            })
        })
        .collect();
    let mut replies = Vec::new();
    for c in calls {
        replies.push(c.await.expect("join"));
    }
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    // One runs; one waits 100 ms in the queue and gives up; one finds the queue full.
    assert_eq!(statuses, [200, 429, 429], "{replies:?}");
    assert!(replies[1].body.contains("max_queue_wait_ms"), "{}", replies[1].body);
    assert!(replies[2].body.contains("too many requests"), "{}", replies[2].body);
    assert!(replies[1..].iter().all(|r| r.header("retry-after").is_some()));
    assert_eq!(PEAK.load(Ordering::SeqCst), 1, "the instance never had two in flight");
    let logs = h.logs.lock().expect("logs").clone();
    assert!(logs.iter().any(|l| l.contains("\"queue_ms\":1")), "queue time is logged: {logs:?}");
}

#[tokio::test]
async fn mirror_copies_never_touch_the_live_answer_and_targeted_requests_are_not_copied() {
    let h = gateway(Config::default()).await;
    let auth = bearer(PRIMARY);
    let before = MIRRORED.load(Ordering::SeqCst);
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let r = call(h.addr, "POST", "/endpoints/mirrored/score", &[("Authorization", &auth)], "{}").await;
        assert_eq!(r.status, 200, "the mirror's 500 stays out of the live answer");
        assert_eq!(r.header("azureml-model-deployment"), Some("live"));
        assert!(started.elapsed() < Duration::from_secs(1), "the mirror's 2 s never delay the live answer");
    }
    let targeted = [("Authorization", auth.as_str()), ("azureml-model-deployment", "live")];
    call(h.addr, "POST", "/endpoints/mirrored/score", &targeted, "{}").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(MIRRORED.load(Ordering::SeqCst) - before, 3, "three copies, none of the targeted request");
}

#[tokio::test]
async fn live_traffic_follows_the_split_within_a_statistical_bound() {
    let h = gateway(Config::default()).await;
    let addr = h.addr;
    let green = tokio::task::spawn_blocking(move || {
        let auth = bearer(PRIMARY);
        (0..1000)
            .filter(|_| {
                let r = http(addr, "POST", "/endpoints/split/score", &[("Authorization", &auth)], "{}")
                    .expect("call");
                assert_eq!(r.status, 200);
                r.header("azureml-model-deployment") == Some("green")
            })
            .count()
    })
    .await
    .expect("join");
    // Binomial(1000, 0.1): mean 100, standard deviation 9.5; five deviations either side.
    assert!((52..=148).contains(&green), "green took {green} of 1000 at a 10 % share");
}

#[tokio::test]
async fn an_oversized_header_section_gets_431() {
    let h = gateway(Config { max_header_bytes: 16 * 1024, ..Config::default() }).await;
    let big = "x".repeat(20 * 1024);
    let r = call(h.addr, "POST", "/endpoints/ep/score", &[("X-Big", &big)], "{}").await;
    assert_eq!(r.status, 431);
}

/// Opens a connection and sends the start of a request, then nothing more.
fn slow_client(addr: SocketAddr) -> std::net::TcpStream {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.write_all(b"POST /endpoints/ep/score HTTP/1.1\r\nHost: x\r\nX-Slow: ").expect("write");
    s
}

/// Whether the server has closed the connection (reads end or fail within a few seconds).
/// Sends one scoring request on `s` and reads its answer; whether the connection is still
/// open 100 ms after the answer.
fn score_on_stream(s: &mut std::net::TcpStream) -> (String, bool) {
    use std::io::{Read, Write};
    let auth = bearer(PRIMARY);
    let request = format!(
        "POST /endpoints/ep/score HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Length: 2\r\n\r\n{{}}"
    );
    s.write_all(request.as_bytes()).expect("write");
    s.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
    // Read the whole answer: until nothing more comes for 100 ms.
    let mut answer = Vec::new();
    let mut buf = vec![0u8; 4096];
    let still_open = loop {
        match s.read(&mut buf) {
            Ok(0) => break false,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(_) => break true,
        }
    };
    (String::from_utf8_lossy(&answer).into_owned(), still_open)
}

#[tokio::test]
async fn each_answer_restarts_the_idle_clock() {
    let h = gateway(Config { idle_timeout: Duration::from_millis(600), ..Config::default() }).await;
    let addr = h.addr;
    let outcome = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        let started = std::time::Instant::now();
        std::thread::sleep(Duration::from_millis(300));
        let (answer, _) = score_on_stream(&mut s);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        // Past the first idle deadline (600 ms after connecting), not yet the second.
        std::thread::sleep(Duration::from_millis(700).saturating_sub(started.elapsed()));
        let (answer, open) = score_on_stream(&mut s);
        assert!(answer.starts_with("HTTP/1.1 200"), "closed at the first deadline: {answer:?}");
        (open, closed_by_server(s))
    })
    .await
    .expect("join");
    assert_eq!(outcome, (true, true), "open after the second answer, closed once idle");
}

fn closed_by_server(mut s: std::net::TcpStream) -> bool {
    use std::io::Read;
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => return matches!(e.kind(), std::io::ErrorKind::ConnectionReset),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_holding_every_connection_cannot_starve_the_gateway() {
    let config =
        Config { max_connections: 20, header_read_timeout: Duration::from_millis(500), ..Config::default() };
    let h = gateway(config).await;
    let addr = h.addr;
    let slow: Vec<_> = tokio::task::spawn_blocking(move || (0..20).map(|_| slow_client(addr)).collect())
        .await
        .expect("join");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    let auth = bearer(PRIMARY);
    let r = call(h.addr, "POST", "/endpoints/ep/score", &[("Authorization", &auth)], "{}").await;
    assert_eq!(r.status, 200, "served once the slow headers timed out");
    assert!(started.elapsed() < Duration::from_secs(3), "waited {:?}", started.elapsed());
    let closed = tokio::task::spawn_blocking(move || {
        slow.into_iter().filter(|s| closed_by_server(s.try_clone().expect("clone"))).count()
    })
    .await
    .expect("join");
    assert_eq!(closed, 20, "every slow connection was cut");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let h = gateway(Config { idle_timeout: Duration::from_millis(300), ..Config::default() }).await;
    let addr = h.addr;
    let outcome = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        let (answer, still_open) = score_on_stream(&mut s);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(still_open, "kept alive past a short pause");
        // Closed once idle for longer than the timeout.
        std::thread::sleep(Duration::from_millis(400));
        closed_by_server(s)
    })
    .await
    .expect("join");
    assert!(outcome, "the idle connection stayed open");
}
