//! The test scorer as the network tests drive it: its `/probe` (the network as a container
//! sees it) and the plain servers it is sent to reach.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::http;

/// What the container says when it tries: (ok, detail).
pub fn probe(container: SocketAddr, request: Value) -> (bool, String) {
    let reply =
        http(container, "POST", "/probe", &[("Content-Type", "application/json")], &request.to_string())
            .expect("probe request");
    let v: Value = serde_json::from_str(&reply.body).unwrap_or_else(|_| {
        panic!("probe {request} at {container} answered {}: {}", reply.status, reply.body)
    });
    (v["ok"] == true, v["detail"].as_str().unwrap_or_default().to_string())
}

/// Answers every connection on `addr` with `text` after reading what the client sent (an
/// HTTP request gets an HTTP answer). Runs until the process ends: call it in a test host's
/// thread.
pub fn tcp_server(addr: SocketAddr, text: &'static str) {
    let listener = TcpListener::bind(addr).expect("bind");
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        std::thread::spawn(move || {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 2048];
            let _ = stream.read(&mut buf);
            let reply = if buf.starts_with(b"GET ") {
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                    text.len()
                )
            } else {
                format!("{text}\n")
            };
            let _ = stream.write_all(reply.as_bytes());
        });
    }
}

/// A listener that counts the connections it gets and answers each with `text`.
pub fn counting_listener(listener: TcpListener, text: &'static str) -> Arc<AtomicUsize> {
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            let _ = stream.write_all(format!("{text}\n").as_bytes());
        }
    });
    seen
}
