//! The gateway in front of an in-process upstream that echoes, fails, stalls or pauses as its
//! path says: the harness of the proxy and connection tests.

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
pub static RUNNING: AtomicUsize = AtomicUsize::new(0);
pub static PEAK: AtomicUsize = AtomicUsize::new(0);
/// Copies that reached the mirror deployment.
pub static MIRRORED: AtomicUsize = AtomicUsize::new(0);

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
                    // A name sent twice shows both values, as one list.
                    let mut headers: HashMap<String, String> = HashMap::new();
                    for (k, v) in req.headers() {
                        let v = v.to_str().unwrap_or("");
                        headers
                            .entry(k.to_string())
                            .and_modify(|l| *l = format!("{l}, {v}"))
                            .or_insert(v.into());
                    }
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
                    response
                        .headers_mut()
                        .insert("Azureml-Model-Deployment", "container-said".parse().expect("d"));
                    response.headers_mut().insert("x-model-output", "kept".parse().expect("output"));
                    response
                        .headers_mut()
                        .insert("x-ms-client-request-id", "container".parse().expect("cid"));
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

pub struct Harness {
    pub addr: SocketAddr,
    /// Every access line, as JSON.
    pub logs: Arc<Mutex<Vec<String>>>,
    /// One message per upstream connection that closed.
    pub closed: mpsc::UnboundedReceiver<()>,
}

pub const PRIMARY: &str = "primary-key-0123456789";
pub const SECONDARY: &str = "secondary-key-0123456789";

pub async fn gateway(config: Config) -> Harness {
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
        let admission = admissions.get(&moat_id::DeploymentId::new("ep", name), limits);
        (name.to_string(), Arc::new(DeploymentRoute::new(name, path, timeout, admission, instances, limits)))
    };
    let route = |name: &str, path: &str, ups: Vec<SocketAddr>| limited(name, path, ups, 8);
    let endpoint = EndpointRoute {
        name: "ep".into(),
        public_access: true,
        credentials: Credentials::Keys(vec![PRIMARY.into(), SECONDARY.into()]),
        traffic: vec![("blue".into(), 100)],
        mirror: None,
        deployments: HashMap::from_iter([
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
        deployments: Default::default(),
    };
    // `split` sends 90 % of its traffic to blue and 10 % to green.
    let split = EndpointRoute {
        name: "split".into(),
        public_access: true,
        credentials: Credentials::Keys(vec![PRIMARY.into()]),
        traffic: vec![("blue".into(), 90), ("green".into(), 10)],
        mirror: None,
        deployments: HashMap::from_iter([
            route("blue", "/echo", vec![up]),
            route("green", "/echo", vec![up]),
        ]),
    };
    // Every request to `mirrored` is copied to its deployment `copy`, which is slow.
    let mirrored = EndpointRoute {
        name: "mirrored".into(),
        public_access: true,
        credentials: Credentials::Keys(vec![PRIMARY.into()]),
        traffic: vec![("live".into(), 100)],
        mirror: Some(("copy".into(), 100)),
        deployments: HashMap::from_iter([
            route("live", "/echo", vec![up]),
            route("copy", "/mirror", vec![up]),
        ]),
    };
    let routes = Routes::default();
    routes.publish(RouteTable {
        moat_networks: Vec::new(),
        endpoints: HashMap::from_iter([
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

pub async fn call(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
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
pub async fn score_on(h: &Harness, deployment: &str) -> Reply {
    let auth = bearer(PRIMARY);
    let headers = [("Authorization", auth.as_str()), ("azureml-model-deployment", deployment)];
    call(h.addr, "POST", "/endpoints/ep/score", &headers, "{}").await
}

pub fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}
