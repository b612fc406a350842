//! Connections to instances, kept alive and reused: one idle list per instance address. A
//! call takes an idle connection (or dials one), writes the request ([`crate::wire`] encoded
//! it) and returns the container's answer as soon as its head has come: the body follows as
//! [`Streaming`], which owns the connection while the container sends it and gives it back to
//! the idle list once it has been read whole. A stream dropped before its end (a client gone,
//! a cut) closes the connection, so the container stops working for nobody.
//!
//! Nothing runs beside the request: the socket is read only when the head or the body is
//! polled, so nothing is read from the container faster than the client takes it.
//!
//! An idle connection the container has closed is noticed when it is taken (the socket is
//! readable: at its end, or with bytes no request asked for), or when the request cannot be
//! written on it (the container reset it); either way the request goes out on a fresh
//! connection, so a container's keep-alive timeout is never a client's error. A request that
//! was written is never sent again: the container may have taken it. Every few seconds, a returning
//! connection sweeps the lists: closed and long-idle connections go, and so do the lists of
//! instances that are gone.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::Response;
use hyper::body::{Body, Frame, SizeHint};
use std::future::poll_fn;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;

use crate::fields::HeadFields;
use crate::timeouts::Alarm;
use crate::wire::{self, BodyFraming, Next, Outgoing};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Idle longer than this, a connection is closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle connections kept per instance, at most.
const IDLE_MAX: usize = 1024;
const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// Each read asks for at least this much room.
const READ_ROOM: usize = 16 * 1024;

/// Why a call got no answer.
#[derive(Debug)]
pub enum Failure {
    /// The connection could not be made: nothing reached the container.
    Connect(String),
    /// The container took the request and gave no (whole) answer.
    Lost(String),
    /// The deadline passed before the answer's head came.
    TimedOut,
}

/// Why an answer's body ended before its framing did: its only error (a body has no deadline
/// of its own; its gaps are bounded by whoever reads it).
#[derive(Debug)]
pub struct BodyLost(pub String);

struct Connection {
    stream: TcpStream,
    /// Read from the container and not yet taken: the head, then the body's pieces.
    buf: BytesMut,
    /// When the answer that last used it arrived: what it has been idle since, give or take
    /// the body's reading (a long stream makes it look idle longer, and so closed sooner).
    idle_since: Instant,
    /// The deadlines of the requests it carries, one after another.
    alarm: Alarm,
}

impl Connection {
    /// Whether it can carry a request at `now`: not idle too long, and nothing to read on it
    /// (an idle connection that is readable has ended or holds bytes nobody asked for). Asks
    /// the reactor first, so an idle connection costs no system call here.
    fn open(&mut self, now: Instant) -> bool {
        if !self.buf.is_empty() || now.saturating_duration_since(self.idle_since) >= IDLE_TIMEOUT {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        match self.stream.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Reads what the container has sent into `buf`; `Ok(0)` at the connection's end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        poll_fill(&mut self.stream, &mut self.buf, cx)
    }
}

/// Reads what the container has sent on `stream` into `buf`; `Ok(0)` at the stream's end.
fn poll_fill(stream: &mut TcpStream, buf: &mut BytesMut, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < READ_ROOM / 4 {
        buf.reserve(READ_ROOM);
    }
    tokio_util::io::poll_read_buf(Pin::new(stream), cx, buf)
}

thread_local! {
    /// Each worker thread keeps its own connections: a socket belongs to the reactor of the
    /// runtime that opened it (see [`crate::workers`]), and nothing needs a lock.
    static POOL: Pool = Pool::default();
}

/// A container's answer past its status line: its end-to-end header fields, as it wrote them,
/// and its body.
pub struct Answer {
    pub fields: HeadFields,
    pub body: Streaming,
}

/// Sends `request` to the instance at `addr` over one of this thread's connections and returns
/// the answer once its head has come; its body streams from the container as it is read. The
/// response's own header map is empty: the container's fields are the [`Answer`]'s. `now` is
/// the caller's reading of the clock as it calls, which idle connections are judged by; the
/// answer's head must have come by `deadline`.
pub async fn call(
    addr: SocketAddr,
    request: &Outgoing,
    now: Instant,
    deadline: tokio::time::Instant,
) -> Result<Response<Answer>, Failure> {
    let mut reused = POOL.with(|pool| pool.take(addr, now));
    loop {
        let fresh = reused.is_none();
        let connection = match reused.take() {
            Some(c) => c,
            None => tokio::time::timeout_at(deadline, dial(addr, now, deadline))
                .await
                .map_err(|_| Failure::TimedOut)??,
        };
        match exchange(connection, request, deadline).await {
            Exchange::Answered(head, connection) => {
                let body = Streaming {
                    framing: head.body,
                    connection: Some(connection),
                    addr,
                    keep: head.keep_alive,
                    arrived: Instant::now(),
                };
                let mut response = Response::new(Answer { fields: head.fields, body });
                *response.status_mut() = head.status;
                *response.version_mut() = head.version;
                return Ok(response);
            }
            // A reused connection the container had closed: the request never left.
            Exchange::NotSent(_) if !fresh => reused = POOL.with(|pool| pool.take(addr, now)),
            Exchange::NotSent(e) | Exchange::Failed(e) => return Err(Failure::Lost(e)),
            Exchange::TimedOut => return Err(Failure::TimedOut),
        }
    }
}

/// How an exchange on one connection ended.
enum Exchange {
    Answered(wire::Head, Connection),
    /// The request could not be written: the container had closed the connection.
    NotSent(String),
    Failed(String),
    TimedOut,
}

/// Writes the request and reads the answer's head, by `deadline`: each wait on the socket is
/// bounded by the connection's alarm.
async fn exchange(
    mut connection: Connection,
    request: &Outgoing,
    deadline: tokio::time::Instant,
) -> Exchange {
    let Connection { stream, buf, alarm, .. } = &mut connection;
    let mut within = |cx: &mut Context<'_>, io: Poll<io::Result<usize>>| match io {
        Poll::Pending if alarm.poll_passed(cx, deadline) => Poll::Ready(None),
        Poll::Pending => Poll::Pending,
        Poll::Ready(done) => Poll::Ready(Some(done)),
    };
    for part in [&request.head[..], &request.body[..]] {
        let mut sent = 0;
        while sent < part.len() {
            let wrote = poll_fn(|cx| {
                let io = Pin::new(&mut *stream).poll_write(cx, &part[sent..]);
                within(cx, io)
            })
            .await;
            match wrote {
                None => return Exchange::TimedOut,
                Some(Ok(0)) => {
                    return Exchange::NotSent("sending the request: the connection took no bytes".into());
                }
                Some(Ok(n)) => sent += n,
                Some(Err(e)) => return Exchange::NotSent(format!("sending the request: {e}")),
            }
        }
    }
    loop {
        match wire::parse_head(buf, request.head_only) {
            Ok(Some(head)) => return Exchange::Answered(head, connection),
            Ok(None) => {}
            Err(e) => return Exchange::Failed(e),
        }
        let read = poll_fn(|cx| {
            let io = poll_fill(stream, buf, cx);
            within(cx, io)
        });
        let why = match read.await {
            None => return Exchange::TimedOut,
            Some(Ok(0)) if buf.is_empty() => "the container closed the connection before answering".into(),
            Some(Ok(0)) => "the container closed the connection within the answer's head".into(),
            Some(Ok(_)) => continue,
            Some(Err(e)) => format!("reading the answer: {e}"),
        };
        return Exchange::Failed(why);
    }
}

/// A container's answer body as it arrives, with the connection it arrives on.
pub struct Streaming {
    framing: BodyFraming,
    /// None once the body has failed (the connection is closed then).
    connection: Option<Connection>,
    addr: SocketAddr,
    /// The answer's framing and `Connection` header let the connection carry another request.
    keep: bool,
    /// When the answer's head had come.
    arrived: Instant,
}

impl Streaming {
    /// When the answer's head had come: read once, for the caller's timing and the
    /// connection's idle clock both.
    pub fn arrived(&self) -> Instant {
        self.arrived
    }
}

impl Body for Streaming {
    type Data = Bytes;
    type Error = BodyLost;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyLost>>> {
        let this = &mut *self;
        let Some(connection) = this.connection.as_mut() else { return Poll::Ready(None) };
        let lost = |this: &mut Streaming, why: String| {
            this.connection = None;
            Poll::Ready(Some(Err(BodyLost(why))))
        };
        loop {
            match this.framing.next(&mut connection.buf) {
                Ok(Next::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(Next::End) => return Poll::Ready(None),
                Ok(Next::More) => {}
                Err(e) => return lost(this, format!("reading the answer: {e}")),
            }
            match connection.poll_fill(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) if this.framing == BodyFraming::UntilClose => {
                    // Its end is the connection's: done, and not reusable.
                    this.framing = BodyFraming::Length(0);
                    this.keep = false;
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(0)) => return lost(this, "the container closed the connection".into()),
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return lost(this, format!("reading the answer: {e}")),
            }
        }
    }

    /// Ended whole, or failed (the connection dropped with its error).
    fn is_end_stream(&self) -> bool {
        self.connection.is_none() || self.framing.ended()
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing.exact() {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

impl Drop for Streaming {
    /// A body read whole gives its connection back; any other closes it.
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take()
            && self.keep
            && self.framing.ended()
            && connection.buf.is_empty()
        {
            POOL.with(|pool| pool.give_back(self.addr, connection, self.arrived));
        }
    }
}

#[derive(Default)]
struct Pool {
    idle: RefCell<Idle>,
}

#[derive(Default)]
struct Idle {
    /// Hashed with foldhash: the addresses are moat's own, and SipHash cost more than the
    /// rest of taking a connection.
    by_instance: HashMap<SocketAddr, Vec<Connection>, foldhash::fast::RandomState>,
    swept: Option<Instant>,
}

impl Pool {
    /// An open idle connection to `addr`, if there is one; closed ones are dropped.
    fn take(&self, addr: SocketAddr, now: Instant) -> Option<Connection> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.by_instance.get_mut(&addr)?;
        while let Some(mut connection) = list.pop() {
            if connection.open(now) {
                return Some(connection);
            }
        }
        None
    }

    /// Keeps `connection`, idle since `now`.
    fn give_back(&self, addr: SocketAddr, mut connection: Connection, now: Instant) {
        connection.idle_since = now;
        let mut idle = self.idle.borrow_mut();
        if idle.swept.is_none_or(|at| now.duration_since(at) >= SWEEP_EVERY) {
            idle.swept = Some(now);
            idle.by_instance.retain(|_, list| {
                list.retain_mut(|c| c.open(now));
                !list.is_empty()
            });
        }
        let list = idle.by_instance.entry(addr).or_default();
        if list.len() < IDLE_MAX {
            list.push(connection);
        }
    }
}

async fn dial(addr: SocketAddr, now: Instant, deadline: tokio::time::Instant) -> Result<Connection, Failure> {
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(Failure::Connect(format!("connecting to {addr}: {e}"))),
        Err(_) => return Err(Failure::Connect(format!("connecting to {addr}: timed out"))),
    };
    let _ = stream.set_nodelay(true);
    Ok(Connection {
        stream,
        buf: BytesMut::with_capacity(READ_ROOM),
        idle_since: now,
        alarm: Alarm::new(deadline),
    })
}
