//! A scoring container for moat's tests, controlled through requests to it.
//!
//! - `GET /` and `GET /ready`: 200 while ready (503 when told not to be); `GET /live`: 200
//!   while live (500 when told not to be).
//! - `POST /control` `{"ready": bool, "live": bool, "exit": code, "ready_in_ms": n}`: flips its
//!   health, or exits with the code right after answering; `ready_in_ms` turns it ready again
//!   after that long (a container that is still starting).
//! - `POST /score` `{"delay_ms": n}`: answers `{"version", "hostname"}` after the delay.
//! - `POST /stream` `{"events": n, "gap_ms": g}`: answers `text/event-stream`, n events g ms
//!   apart, each `data: {"i", "traceparent"}` (the `traceparent` it was sent, if any), sent
//!   only as fast as the reader takes them.
//! - `GET /inspect`: what the container sees of itself (`/proc/1/status`, cgroup limits,
//!   environment), for the hardening tests.
//! - `POST /probe`: the container tries to reach something (see [`probe`]).
//!
//! Environment: `VERSION` (echoed), `START_DELAY_MS` (wait before listening), `EXIT_AT_START`
//! (exit at once with this code), `EXIT_AFTER_MS` (serve, then exit with code 3 after this
//! long: a crash loop). SIGTERM: stop accepting, finish open requests, exit 0.

mod probe;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

struct State {
    version: String,
    live: AtomicBool,
    ready: AtomicBool,
    in_flight: AtomicUsize,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
    match runtime {
        Ok(rt) => rt.block_on(serve()),
        Err(e) => {
            eprintln!("test-scorer: runtime: {e}");
            std::process::exit(1);
        }
    }
}

async fn serve() {
    let version = env("VERSION").unwrap_or_else(|| "v1".into());
    println!("test-scorer {version} starting");
    if let Some(code) = env("EXIT_AT_START").and_then(|c| c.parse::<i32>().ok()) {
        eprintln!("test-scorer: told to exit at start with code {code}");
        std::process::exit(code);
    }
    if let Some(ms) = env("START_DELAY_MS").and_then(|c| c.parse::<u64>().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let listener = match tokio::net::TcpListener::bind("0.0.0.0:5001").await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("test-scorer: listen: {e}");
            std::process::exit(1);
        }
    };
    println!("test-scorer {version} listening on 5001");
    if let Some(ms) = env("EXIT_AFTER_MS").and_then(|c| c.parse::<u64>().ok()) {
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            eprintln!("test-scorer: crashing after {ms} ms as told");
            std::process::exit(3);
        });
    }

    let state = Arc::new(State {
        version,
        live: AtomicBool::new(true),
        ready: AtomicBool::new(true),
        in_flight: AtomicUsize::new(0),
    });
    let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("test-scorer: SIGTERM handler: {e}");
            std::process::exit(1);
        }
    };
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            _ = terminate.recv() => break,
        }
    }
    println!("test-scorer: SIGTERM, finishing {} open requests", state.in_flight.load(Ordering::SeqCst));
    for _ in 0..300 {
        if state.in_flight.load(Ordering::SeqCst) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("test-scorer: exiting");
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Answer>, Infallible> {
    state.in_flight.fetch_add(1, Ordering::SeqCst);
    let response = if req.uri().path() == "/stream" {
        stream(req).await
    } else {
        route(&state, req).await.map(Answer::Whole)
    };
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    Ok(response)
}

/// An answer: whole, or events fed by a task as the reader takes them.
enum Answer {
    Whole(Full<Bytes>),
    Events(tokio::sync::mpsc::Receiver<Bytes>),
}

impl Body for Answer {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Answer::Whole(full) => std::pin::Pin::new(full).poll_frame(cx),
            Answer::Events(rx) => rx.poll_recv(cx).map(|piece| piece.map(|b| Ok(Frame::data(b)))),
        }
    }

    // A whole answer keeps its length (Content-Length on the wire); events go chunked.
    fn is_end_stream(&self) -> bool {
        match self {
            Answer::Whole(full) => full.is_end_stream(),
            Answer::Events(_) => false,
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            Answer::Whole(full) => full.size_hint(),
            Answer::Events(_) => hyper::body::SizeHint::default(),
        }
    }
}

async fn stream(req: Request<Incoming>) -> Response<Answer> {
    let traceparent =
        req.headers().get("traceparent").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let body: Value = match req.into_body().collect().await {
        Ok(b) => serde_json::from_slice(&b.to_bytes()).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    };
    let (events, gap) = (body["events"].as_u64().unwrap_or(3), body["gap_ms"].as_u64().unwrap_or(100));
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        for i in 0..events {
            // A zero gap sends as fast as the reader takes them (a sleep would wait a tick).
            if i > 0 && gap > 0 {
                tokio::time::sleep(Duration::from_millis(gap)).await;
            }
            let event = format!("data: {}\n\n", json!({"i": i, "traceparent": traceparent}));
            if tx.send(Bytes::from(event)).await.is_err() {
                return;
            }
        }
    });
    let mut response = Response::new(Answer::Events(rx));
    response
        .headers_mut()
        .insert("content-type", hyper::header::HeaderValue::from_static("text/event-stream"));
    response
}

async fn route(state: &Arc<State>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let body: Value = match req.into_body().collect().await {
        Ok(b) => serde_json::from_slice(&b.to_bytes()).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    };
    let flag = |f: &AtomicBool, up: StatusCode, down: StatusCode| {
        if f.load(Ordering::SeqCst) { reply(up, json!("ok")) } else { reply(down, json!("not ok")) }
    };
    match (method, path.as_str()) {
        (Method::GET, "/" | "/ready") => flag(&state.ready, StatusCode::OK, StatusCode::SERVICE_UNAVAILABLE),
        (Method::GET, "/live") => flag(&state.live, StatusCode::OK, StatusCode::INTERNAL_SERVER_ERROR),
        (Method::POST, "/control") => {
            if let Some(ready) = body["ready"].as_bool() {
                state.ready.store(ready, Ordering::SeqCst);
                println!("test-scorer: ready={ready}");
            }
            if let Some(ms) = body["ready_in_ms"].as_u64() {
                let state = state.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    state.ready.store(true, Ordering::SeqCst);
                    println!("test-scorer: ready=true after {ms} ms");
                });
            }
            if let Some(live) = body["live"].as_bool() {
                state.live.store(live, Ordering::SeqCst);
                println!("test-scorer: live={live}");
            }
            if let Some(code) = body["exit"].as_i64() {
                println!("test-scorer: exiting with code {code} as told");
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    std::process::exit(code as i32);
                });
            }
            reply(StatusCode::OK, json!("done"))
        }
        (Method::POST, "/score") => {
            if let Some(ms) = body["delay_ms"].as_u64() {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            let hostname = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
            reply(StatusCode::OK, json!({"version": state.version, "hostname": hostname.trim()}))
        }
        (Method::GET, "/inspect") => reply(StatusCode::OK, inspect()),
        (Method::POST, "/probe") => {
            let result = tokio::task::spawn_blocking(move || probe::run(&body)).await;
            reply(
                StatusCode::OK,
                result.unwrap_or_else(|_| json!({"ok": false, "detail": "the probe panicked"})),
            )
        }
        (Method::GET, "/swagger.json") => {
            reply(StatusCode::OK, json!({"swagger": "2.0", "info": {"title": "test"}}))
        }
        _ => reply(StatusCode::NOT_FOUND, json!("not found")),
    }
}

fn inspect() -> Value {
    let read = |p: &str| std::fs::read_to_string(p).ok().map(|s| s.trim().to_string());
    let cgroup_files = [
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
        "/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes",
        "/sys/fs/cgroup/cpu/cpu.cfs_quota_us",
        "/sys/fs/cgroup/cpu/cpu.cfs_period_us",
        "/sys/fs/cgroup/pids/pids.max",
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/cpu.max",
        "/sys/fs/cgroup/pids.max",
    ];
    let cgroup: serde_json::Map<String, Value> =
        cgroup_files.iter().filter_map(|p| Some((p.to_string(), json!(read(p)?)))).collect();
    let env: serde_json::Map<String, Value> = std::env::vars().map(|(k, v)| (k, json!(v))).collect();
    json!({"proc_status": read("/proc/1/status"), "cgroup": cgroup, "env": env})
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("content-type", hyper::header::HeaderValue::from_static("application/json"));
    response
}
