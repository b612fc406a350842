//! Connections to instances, kept alive and reused: one idle list per instance address. A
//! call takes an idle connection (or dials one) and returns the container's answer as soon as
//! its head has come: the body follows as [`Streaming`], which owns the connection while the
//! container sends it and gives it back to the idle list once it has been read whole. A
//! stream dropped before its end (a client gone, a cut) closes the connection, so the
//! container stops working for nobody.
//!
//! While a connection is in use, its hyper connection future is polled by whoever reads it
//! (the request's task for the head, the client connection's task for the body): no
//! connection task to hand the request to and no pool checkout future, which cost the gateway
//! a good part of its CPU per request (BENCHMARKS.md). Nothing is read from the container
//! faster than the client takes it: the connection future is only polled when the body is.
//!
//! An idle connection the container has closed is noticed when it is taken (its connection
//! future has ended) or when the request never went out on it; either way the request goes
//! out on a fresh one, so a container's keep-alive timeout is never a client's error. Every
//! few seconds, a returning connection sweeps the lists: closed and long-idle connections go,
//! and so do the lists of instances that are gone.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
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
    /// The answer's head; its body streams on the connection, which comes along.
    Answered(http::response::Parts, Incoming, Connection),
    /// The request never went out (the connection had closed); here it is back.
    NotSent(Request<Full<Bytes>>),
    Failed(String),
}

thread_local! {
    /// Each worker thread keeps its own connections: a socket belongs to the reactor of the
    /// runtime that opened it (see [`crate::workers`]), and nothing needs a lock.
    static POOL: Pool = Pool::default();
}

/// Sends `request` to the instance at `addr` over one of this thread's connections and returns
/// the answer once its head has come; its body streams from the container as it is read.
pub async fn call(addr: SocketAddr, request: Request<Full<Bytes>>) -> Result<Response<Streaming>, Failure> {
    // A reused connection may turn out closed before the request leaves; then the request
    // comes back and goes again, on another connection.
    let mut request = request;
    let mut reused = POOL.with(|pool| pool.take(addr));
    loop {
        let fresh = reused.is_none();
        let connection = match reused.take() {
            Some(c) => c,
            None => dial(addr).await?,
        };
        match exchange(connection, request).await {
            Exchange::Answered(parts, incoming, connection) => {
                let keep = !parts
                    .headers
                    .get(header::CONNECTION)
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
                let body = Streaming { incoming, connection: Some(connection), addr, keep, ended: false };
                return Ok(Response::from_parts(parts, body));
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

/// A container's answer body as it arrives, with the connection it arrives on.
pub struct Streaming {
    incoming: Incoming,
    /// None once the connection has ended (or gone back to the idle list).
    connection: Option<Connection>,
    addr: SocketAddr,
    /// The container did not say `Connection: close`.
    keep: bool,
    /// The body has come whole (a chunked body's end is not in its length).
    ended: bool,
}

impl Body for Streaming {
    type Data = Bytes;
    type Error = Failure;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Failure>>> {
        let this = &mut *self;
        let lost = |e: hyper::Error| Failure::Lost(format!("reading the answer: {}", describe(&e)));
        if let Poll::Ready(frame) = Pin::new(&mut this.incoming).poll_frame(cx) {
            this.ended = frame.is_none();
            return Poll::Ready(frame.map(|f| f.map_err(lost)));
        }
        // The body waits for the connection: drive it (which registers this task's interest),
        // then look again, since that may have read what the body waits for (the usual case
        // for a small answer: no second wake-up, no gap timer).
        let Some(connection) = this.connection.as_mut() else { return Poll::Pending };
        let gone = connection.ended || connection.driver.as_mut().poll(cx).is_ready();
        connection.ended = gone;
        match Pin::new(&mut this.incoming).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.ended = frame.is_none();
                Poll::Ready(frame.map(|f| f.map_err(lost)))
            }
            // The connection is gone and hyper has not ended the body: it was cut short.
            Poll::Pending if gone => {
                Poll::Ready(Some(Err(Failure::Lost("the container closed the connection".into()))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

impl Drop for Streaming {
    /// A body read whole gives its connection back; any other closes it.
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take()
            && self.keep
            && !connection.ended
            && self.is_end_stream()
        {
            POOL.with(|pool| pool.give_back(self.addr, connection));
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

/// One request and the head of its answer, the connection driven alongside.
async fn exchange(mut connection: Connection, request: Request<Full<Bytes>>) -> Exchange {
    match head(&mut connection, request).await {
        Ok(response) => {
            let (parts, incoming) = response.into_parts();
            Exchange::Answered(parts, incoming, connection)
        }
        Err(other) => other,
    }
}

async fn head(
    connection: &mut Connection,
    request: Request<Full<Bytes>>,
) -> Result<Response<Incoming>, Exchange> {
    let Connection { sender, driver, ended, .. } = connection;
    let call = async {
        // The connection takes a new request once its driver has finished the last one.
        if sender.ready().await.is_err() {
            return Err(Exchange::NotSent(request));
        }
        match sender.try_send_request(request).await {
            Ok(response) => Ok(response),
            // hyper never wrote it: the connection was closing.
            Err(mut e) => Err(match e.take_message() {
                Some(request) => Exchange::NotSent(request),
                None => Exchange::Failed(describe(e.error())),
            }),
        }
    };
    let mut call = std::pin::pin!(call);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(done) = call.as_mut().poll(cx) {
            return Poll::Ready(done);
        }
        if !*ended && driver.as_mut().poll(cx).is_ready() {
            // The connection is gone; hyper has told the call (with the request back if it
            // never went out).
            *ended = true;
            return Poll::Ready(match call.as_mut().poll(cx) {
                Poll::Ready(done) => done,
                Poll::Pending => Err(Exchange::Failed("the container closed the connection".into())),
            });
        }
        Poll::Pending
    })
    .await
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
