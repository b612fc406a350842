//! Client connections as the gateway keeps them: header sections over the limit and heads it
//! cannot parse (answered and logged), idle keep-alive, slow clients.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::harness::{PRIMARY, bearer, call, gateway};
use moat_gateway::Config;

/// Sends `bytes` as they are on a fresh connection and returns the whole answer.
async fn raw(addr: SocketAddr, bytes: Vec<u8>) -> String {
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        s.write_all(&bytes).expect("write");
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    })
    .await
    .expect("join")
}

#[tokio::test]
async fn refused_heads_get_their_status_and_an_access_line() {
    let h = gateway(Config { max_header_bytes: 16 * 1024, ..Config::default() }).await;
    let big = "x".repeat(20 * 1024);
    // A whole oversized head in one write, and one in pieces.
    let r = call(h.addr, "POST", "/endpoints/ep/score", &[("X-Big", &big)], "{}").await;
    assert_eq!(r.status, 431);
    let pieces = {
        let mut head = b"POST /endpoints/ep/score HTTP/1.1\r\nHost: x\r\n".to_vec();
        for i in 0..100 {
            head.extend_from_slice(format!("X-Part-{i}: {}\r\n", "y".repeat(200)).as_bytes());
        }
        head
    };
    assert!(raw(h.addr, pieces).await.starts_with("HTTP/1.1 431"));
    assert!(raw(h.addr, b"NOT A REQUEST\r\n\r\n".to_vec()).await.starts_with("HTTP/1.1 400"));
    // The line is written once the connection has ended, which the client may see first.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while h.logs.lock().expect("logs").len() < 3 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let logs = h.logs.lock().expect("logs").clone();
    // In the order the connections ended, which need not be the order they were sent in.
    let mut statuses: Vec<String> = logs
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| format!("{} {}", v["status"], v["error"].as_str().unwrap_or_default()))
        .collect();
    statuses.sort();
    assert_eq!(
        statuses,
        [
            "400 the request's HTTP version is not HTTP/1.0 or HTTP/1.1",
            "431 the request head is over max_header_bytes (16384 bytes)",
            "431 the request head is over max_header_bytes (16384 bytes)"
        ],
        "{logs:?}"
    );
    assert!(logs.iter().all(|l| l.contains("\"client\":\"127.0.0.1\"")), "{logs:?}");
}

/// Opens a connection and sends the start of a request, then nothing more.
fn slow_client(addr: SocketAddr) -> std::net::TcpStream {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.write_all(b"POST /endpoints/ep/score HTTP/1.1\r\nHost: x\r\nX-Slow: ").expect("write");
    s
}

/// Sends one scoring request on `s` and reads its answer (head and a body of the length it
/// announces), leaving the connection as the server left it.
fn score_on_stream(s: &mut std::net::TcpStream) -> String {
    use std::io::{Read, Write};
    let auth = bearer(PRIMARY);
    let request = format!(
        "POST /endpoints/ep/score HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Length: 2\r\n\r\n{{}}"
    );
    s.write_all(request.as_bytes()).expect("write");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while !answer.ends_with(b"\r\n\r\n") && s.read(&mut byte).expect("answer") == 1 {
        answer.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&answer).into_owned();
    let length = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    s.read_exact(&mut body).expect("body");
    head + &String::from_utf8_lossy(&body)
}

/// Whether the server has closed the connection (reads end or fail within a few seconds).
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
    // They connected first, so they hold every slot (accept takes connections in order).
    let auth = bearer(PRIMARY);
    let r = call(h.addr, "POST", "/endpoints/ep/score", &[("Authorization", &auth)], "{}").await;
    assert_eq!(r.status, 200, "served once the slow headers timed out");
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
        let answer = score_on_stream(&mut s);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        // Closed once idle for longer than the timeout (the clocks themselves are proven
        // under paused time in the gateway's `timeouts` tests).
        closed_by_server(s)
    })
    .await
    .expect("join");
    assert!(outcome, "the idle connection stayed open");
}
