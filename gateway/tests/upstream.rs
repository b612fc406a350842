//! The gateway's connections to a container, as the container sees them: reused call after
//! call, replaced when the container closes them (with or without saying so), a request the
//! container took and dropped never sent twice, and each way an answer's body can be framed.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use moat_gateway::{Config, Credentials, Gateway, Routes};
use moat_test_support::{Reply, http};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the container treats its connections.
#[derive(Clone, Copy)]
enum Habit {
    /// Answers request after request on one connection.
    KeepAlive,
    /// Closes a connection that has been idle this long (a keep-alive timeout).
    IdleClose(Duration),
    /// Answers, then closes without a word (no `Connection: close`).
    CloseAfterAnswer,
    /// Answers with `Connection: close`, then closes.
    AnnouncedClose,
    /// Reads the request and closes without answering.
    DropRequest,
    /// Answers every first request (of the test: one connection); reads the second and closes.
    DropSecond,
    /// HTTP/1.0: no length, the body ends with the connection.
    Http10,
    /// `100 Continue` first, then a chunked answer with a trailer, kept alive.
    ContinueThenChunked,
    /// Sends bytes past its Content-Length.
    ExtraBytes,
}

#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    requests: AtomicUsize,
}

/// A container speaking HTTP/1.1 by hand, so each habit is exactly what it says.
async fn container(habit: Habit) -> (SocketAddr, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Seen::default());
    let counts = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counts.connections.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(stream, habit, counts.clone()));
        }
    });
    (addr, seen)
}

async fn serve(mut stream: TcpStream, habit: Habit, seen: Arc<Seen>) {
    let mut buffer = Vec::new();
    loop {
        let idle_limit = match habit {
            Habit::IdleClose(limit) => limit,
            _ => Duration::from_secs(60),
        };
        let Ok(Some(())) = tokio::time::timeout(idle_limit, read_request(&mut stream, &mut buffer)).await
        else {
            return;
        };
        let nth = seen.requests.fetch_add(1, Ordering::SeqCst);
        let close = match habit {
            Habit::DropRequest => return,
            Habit::DropSecond if nth % 2 == 1 => return,
            Habit::AnnouncedClose => "Connection: close\r\n",
            _ => "",
        };
        let answer = match habit {
            Habit::Http10 => "HTTP/1.0 200 OK\r\n\r\n[1.0]".to_string(),
            Habit::ContinueThenChunked => "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n[1.\r\n2\r\n0]\r\n0\r\nx-trailer: 1\r\n\r\n".to_string(),
            Habit::ExtraBytes => "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n[1.0]HTTP/1.1 200 OK\r\n".to_string(),
            _ => format!("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n{close}\r\n[1.0]"),
        };
        if stream.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
        if matches!(habit, Habit::CloseAfterAnswer | Habit::AnnouncedClose | Habit::Http10) {
            return;
        }
    }
}

/// Reads one request (head and `Content-Length` body) off `stream`; None at its end.
async fn read_request(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<()> {
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buffer.len() >= end + 4 + length {
                buffer.drain(..end + 4 + length);
                return Some(());
            }
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
}

const KEY: &str = "upstream-test-key";

/// The gateway with endpoint `ep` whose only instance is the container at `up`.
async fn gateway(up: SocketAddr) -> SocketAddr {
    let routes = Routes::default();
    let credentials = Credentials::Keys(vec![KEY.as_bytes().to_vec()]);
    routes.publish(common::table_of_one(up, credentials));
    // One worker: idle connections are kept per worker thread (a socket belongs to its
    // thread's event loop), and these tests count what one idle list does.
    let config = Config { workers: 1, ..Config::default() };
    let gw = Gateway::new(config, routes, moat_gateway::access_log::discard());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(moat_gateway::serve(listener, gw, std::future::pending(), Duration::from_secs(1)));
    addr
}

async fn score(gateway: SocketAddr) -> Reply {
    tokio::task::spawn_blocking(move || {
        let auth = format!("Bearer {KEY}");
        http(gateway, "POST", "/endpoints/ep/score", &[("Authorization", &auth)], "{\"data\":[1]}")
    })
    .await
    .expect("join")
    .expect("request")
}

async fn three_whole_answers(gateway: SocketAddr) {
    for _ in 0..3 {
        let reply = score(gateway).await;
        assert_eq!((reply.status, reply.body.as_str()), (200, "[1.0]"));
    }
}

async fn statuses(gateway: SocketAddr, count: usize, pause: Duration) -> Vec<u16> {
    let mut statuses = Vec::new();
    for _ in 0..count {
        statuses.push(score(gateway).await.status);
        tokio::time::sleep(pause).await;
    }
    statuses
}

#[tokio::test]
async fn one_connection_carries_call_after_call() {
    let (up, seen) = container(Habit::KeepAlive).await;
    let gw = gateway(up).await;
    assert_eq!(statuses(gw, 20, Duration::ZERO).await, vec![200; 20]);
    assert_eq!(seen.requests.load(Ordering::SeqCst), 20);
    assert_eq!(seen.connections.load(Ordering::SeqCst), 1, "the connection was not reused");
}

#[tokio::test]
async fn concurrent_calls_use_no_more_connections_than_they_need() {
    let (up, seen) = container(Habit::KeepAlive).await;
    let gw = gateway(up).await;
    let clients: Vec<_> = (0..8).map(|_| tokio::spawn(statuses(gw, 25, Duration::ZERO))).collect();
    for client in clients {
        assert_eq!(client.await.expect("client"), vec![200; 25]);
    }
    assert_eq!(seen.requests.load(Ordering::SeqCst), 200);
    let connections = seen.connections.load(Ordering::SeqCst);
    assert!((1..=8).contains(&connections), "{connections} connections for 8 concurrent clients");
}

#[tokio::test]
async fn a_container_closing_idle_connections_never_fails_a_call() {
    let (up, seen) = container(Habit::IdleClose(Duration::from_millis(100))).await;
    let gw = gateway(up).await;
    // Each call finds the connection of the last one closed by the container.
    assert_eq!(statuses(gw, 5, Duration::from_millis(300)).await, vec![200; 5]);
    assert_eq!(seen.connections.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn a_container_closing_after_each_answer_never_fails_a_call() {
    for habit in [Habit::CloseAfterAnswer, Habit::AnnouncedClose] {
        let (up, seen) = container(habit).await;
        let gw = gateway(up).await;
        assert_eq!(statuses(gw, 20, Duration::ZERO).await, vec![200; 20]);
        assert_eq!(seen.connections.load(Ordering::SeqCst), 20);
    }
}

#[tokio::test]
async fn a_request_the_container_dropped_is_a_502_and_is_not_sent_again() {
    // On a fresh connection, and on one that carried an answer before.
    for (habit, before) in [(Habit::DropRequest, 0), (Habit::DropSecond, 1)] {
        let (up, seen) = container(habit).await;
        let gw = gateway(up).await;
        assert_eq!(statuses(gw, before, Duration::ZERO).await, vec![200; before]);
        let reply = score(gw).await;
        assert_eq!(reply.status, 502, "{}", reply.body);
        let requests = seen.requests.load(Ordering::SeqCst);
        assert_eq!(requests, before + 1, "a request that reached the container went again");
    }
}

#[tokio::test]
async fn answers_framed_by_the_connections_end_or_by_chunks_arrive_whole() {
    // HTTP/1.0 without a length: the body is all until the close; no connection is reused.
    let (up, seen) = container(Habit::Http10).await;
    let gw = gateway(up).await;
    three_whole_answers(gw).await;
    assert_eq!(seen.connections.load(Ordering::SeqCst), 3);

    // A 100 Continue is passed over; a chunked answer (with a trailer) keeps its connection.
    let (up, seen) = container(Habit::ContinueThenChunked).await;
    let gw = gateway(up).await;
    three_whole_answers(gw).await;
    assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn bytes_past_an_answers_length_are_never_read_as_the_next_answer() {
    let (up, seen) = container(Habit::ExtraBytes).await;
    let gw = gateway(up).await;
    three_whole_answers(gw).await;
    assert_eq!(seen.connections.load(Ordering::SeqCst), 3, "a connection with stray bytes was reused");
}
