//! Connections to instances, kept alive and reused: one idle list per instance address. A
//! call takes an idle connection (or dials one) and gives it back once the answer has been
//! read whole. While a connection is in use, its hyper connection future is polled by the
//! request's own task, next to the request: no connection task to hand the request to and
//! no pool checkout future, which cost the gateway a good part of its CPU per request
//! (BENCHMARKS.md). An idle connection the container has closed is noticed when it is taken
//! (its connection future has ended) or when the request never went out on it; either way
//! the request goes out on a fresh one, so a container's keep-alive timeout is never a
//! client's error. Every few seconds, a returning connection sweeps the lists: closed and
//! long-idle connections go, and so do the lists of instances that are gone.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Idle longer than this, a connection is closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle connections kept per instance, at most.
const IDLE_MAX: usize = 1024;
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Why a call got no answer.
#[derive(Debug)]
pub enum Failure {
    /// The connection could not be made: nothing reached the container.
    Connect(String),
    /// The container took the request and gave no (whole) answer.
    Lost(String),
}

struct Connection {
    sender: http1::SendRequest<Full<Bytes>>,
    driver: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// The connection future has ended: never poll it again, never reuse the connection.
    ended: bool,
    idle_since: Instant,
}

impl Connection {
    /// Whether it can carry a request: its connection future has not ended (polled without a
    /// waker, which only asks; the next real poll registers interest again).
    fn open(&mut self) -> bool {
        if self.ended || self.idle_since.elapsed() >= IDLE_TIMEOUT {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        self.ended = self.driver.as_mut().poll(&mut cx).is_ready();
        !self.ended
    }
}

/// How an exchange on one connection ended.
enum Exchange {
    Answered(Response<Bytes>, bool),
    /// The request never went out (the connection had closed); here it is back.
    NotSent(Request<Full<Bytes>>),
    Failed(String),
}

thread_local! {
    /// Each worker thread keeps its own connections: a socket belongs to the reactor of the
    /// runtime that opened it (see [`crate::workers`]), and nothing needs a lock.
    static POOL: Pool = Pool::default();
}

/// Sends `request` to the instance at `addr` over one of this thread's connections and reads
/// the whole answer.
pub async fn call(addr: SocketAddr, request: Request<Full<Bytes>>) -> Result<Response<Bytes>, Failure> {
    // A reused connection may turn out closed before the request leaves; then the request
    // comes back and goes again, on another connection.
    let mut request = request;
    let mut reused = POOL.with(|pool| pool.take(addr));
    loop {
        let fresh = reused.is_none();
        let mut connection = match reused.take() {
            Some(c) => c,
            None => dial(addr).await?,
        };
        match exchange(&mut connection, request).await {
            Exchange::Answered(response, keep) => {
                if keep {
                    POOL.with(|pool| pool.give_back(addr, connection));
                }
                return Ok(response);
            }
            Exchange::NotSent(back) if !fresh => {
                request = back;
                reused = POOL.with(|pool| pool.take(addr));
            }
            Exchange::NotSent(_) => return Err(Failure::Lost("the connection closed at once".into())),
            Exchange::Failed(e) => return Err(Failure::Lost(e)),
        }
    }
}

#[derive(Default)]
struct Pool {
    idle: RefCell<Idle>,
}

#[derive(Default)]
struct Idle {
    by_instance: HashMap<SocketAddr, Vec<Connection>>,
    swept: Option<Instant>,
}

impl Pool {
    /// An open idle connection to `addr`, if there is one; closed ones are dropped.
    fn take(&self, addr: SocketAddr) -> Option<Connection> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.by_instance.get_mut(&addr)?;
        while let Some(mut connection) = list.pop() {
            if connection.open() {
                return Some(connection);
            }
        }
        None
    }

    fn give_back(&self, addr: SocketAddr, mut connection: Connection) {
        let now = Instant::now();
        connection.idle_since = now;
        let mut idle = self.idle.borrow_mut();
        if idle.swept.is_none_or(|at| now.duration_since(at) >= SWEEP_EVERY) {
            idle.swept = Some(now);
            idle.by_instance.retain(|_, list| {
                list.retain_mut(Connection::open);
                !list.is_empty()
            });
        }
        let list = idle.by_instance.entry(addr).or_default();
        if list.len() < IDLE_MAX {
            list.push(connection);
        }
    }
}

async fn dial(addr: SocketAddr) -> Result<Connection, Failure> {
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(Failure::Connect(format!("connecting to {addr}: {e}"))),
        Err(_) => return Err(Failure::Connect(format!("connecting to {addr}: timed out"))),
    };
    let _ = stream.set_nodelay(true);
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Failure::Connect(format!("connecting to {addr}: {e}")))?;
    let driver = Box::pin(async move { drop(connection.await) });
    Ok(Connection { sender, driver, ended: false, idle_since: Instant::now() })
}

/// One request and its whole answer, the connection driven alongside.
async fn exchange(connection: &mut Connection, request: Request<Full<Bytes>>) -> Exchange {
    let Connection { sender, driver, ended, .. } = connection;
    let call = async {
        // The connection takes a new request once its driver has finished the last one.
        if sender.ready().await.is_err() {
            return Exchange::NotSent(request);
        }
        let response = match sender.try_send_request(request).await {
            Ok(response) => response,
            Err(mut e) => {
                return match e.take_message() {
                    // hyper never wrote it: the connection was closing.
                    Some(request) => Exchange::NotSent(request),
                    None => Exchange::Failed(describe(e.error())),
                };
            }
        };
        let (parts, incoming) = response.into_parts();
        let keep = !parts
            .headers
            .get(header::CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        match incoming.collect().await {
            Ok(body) => Exchange::Answered(Response::from_parts(parts, body.to_bytes()), keep),
            Err(e) => Exchange::Failed(format!("reading the answer: {}", describe(&e))),
        }
    };
    let mut call = std::pin::pin!(call);
    let done = std::future::poll_fn(|cx| {
        if let Poll::Ready(done) = call.as_mut().poll(cx) {
            return Poll::Ready(done);
        }
        if !*ended && driver.as_mut().poll(cx).is_ready() {
            // The connection is gone; hyper has told the call (with the request back if it
            // never went out).
            *ended = true;
            return Poll::Ready(match call.as_mut().poll(cx) {
                Poll::Ready(done) => done,
                Poll::Pending => Exchange::Failed("the container closed the connection".into()),
            });
        }
        Poll::Pending
    })
    .await;
    match done {
        Exchange::Answered(response, keep) => Exchange::Answered(response, keep && !*ended),
        other => other,
    }
}

/// The error text of a failed call, down to its root cause.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
