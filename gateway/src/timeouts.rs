//! Connection timeouts that a slow or idle client cannot outwait, enforced where the
//! connection reads:
//!
//! - idle: between requests, a connection that sends nothing for `idle_timeout` is closed;
//! - header read: once the first byte of a request arrives, its whole header section must
//!   follow within `header_read_timeout`, or the connection is closed (slowloris).
//!
//! While a request is being served neither applies (the request has its own deadline).
//!
//! Both run on an [`Alarm`], as do the request's deadline on its upstream connection and the
//! gaps of a streamed answer: one timer per connection, moved as rarely as it can be.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// What the service tells the connection: requests in progress, and when the last ended.
#[derive(Debug)]
pub struct Activity {
    base: Instant,
    busy: AtomicUsize,
    /// Milliseconds after `base` when the connection last became idle.
    idle_since: AtomicU64,
    /// Milliseconds after `base` when the next request's first byte came (0: not yet).
    head_since: AtomicU64,
    /// The connection's task, woken when a request ends so that its read arms the idle
    /// clock even if it was already waiting on the socket.
    reader: AtomicWaker,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            base: Instant::now(),
            busy: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            head_since: AtomicU64::new(0),
            reader: AtomicWaker::new(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    /// A request is being served until the guard drops. With `read_follows` the connection
    /// reads again only once the answer is written, and that read arms the idle clock (moat's
    /// HTTP/1.1); otherwise (HTTP/2, whose connection reads all along) the guard wakes the
    /// reader as it drops. A wake in the first case would be the connection's task waking
    /// itself: one more poll of the whole connection on every request, for nothing.
    pub fn serving(self: &Arc<Self>, read_follows: bool) -> Serving {
        self.busy.fetch_add(1, Ordering::AcqRel);
        Serving { activity: self.clone(), wake_reader: !read_follows }
    }
}

pub struct Serving {
    activity: Arc<Activity>,
    wake_reader: bool,
}

impl Drop for Serving {
    fn drop(&mut self) {
        let a = &self.activity;
        a.idle_since.store(a.now_ms(), Ordering::Release);
        a.head_since.store(0, Ordering::Release);
        a.busy.fetch_sub(1, Ordering::AcqRel);
        if self.wake_reader {
            a.reader.wake();
        }
    }
}

/// The client connection's IO with the two timeouts on its reads.
pub struct TimedIo<T> {
    inner: T,
    activity: Arc<Activity>,
    idle_timeout: Duration,
    header_read_timeout: Duration,
    alarm: Alarm,
}

impl<T> TimedIo<T> {
    pub fn new(
        inner: T,
        activity: Arc<Activity>,
        idle_timeout: Duration,
        header_read_timeout: Duration,
    ) -> Self {
        let alarm = Alarm::new(Instant::now() + idle_timeout);
        TimedIo { inner, activity, idle_timeout, header_read_timeout, alarm }
    }

    /// When this read must give up, if it must: None while a request is served.
    fn deadline(&self) -> Option<Instant> {
        let a = &self.activity;
        if a.busy.load(Ordering::Acquire) > 0 {
            return None;
        }
        let head = a.head_since.load(Ordering::Acquire);
        let at = if head > 0 {
            Duration::from_millis(head) + self.header_read_timeout
        } else {
            Duration::from_millis(a.idle_since.load(Ordering::Acquire)) + self.idle_timeout
        };
        Some(a.base + at)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TimedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            let a = &this.activity;
            if a.busy.load(Ordering::Acquire) == 0 && a.head_since.load(Ordering::Acquire) == 0 {
                // The first bytes of the next request: the header section's clock starts.
                a.head_since.store(a.now_ms().max(1), Ordering::Release);
            }
            // Bytes that came are served even if a deadline has just passed: the clocks are
            // checked when the client makes the connection wait, and a client that never
            // does is bounded by the head's size instead.
            return polled;
        }
        if polled.is_pending() {
            this.activity.reader.register(cx.waker());
            if let Some(deadline) = this.deadline()
                && this.alarm.poll_passed(cx, deadline)
            {
                return Poll::Ready(Err(timed_out()));
            }
        }
        polled
    }
}

/// A timer for one connection's deadlines, one after another, moved only when it would fire
/// too late. One that fires early (the deadline it was set for has been replaced by a later
/// one: the connection's next request, or its next idle spell) is set again then, so most
/// deadlines leave tokio's timer wheel alone: putting a timer in and taking it out cost
/// about 500 instructions a request (BENCHMARKS.md), under the wheel's lock.
pub struct Alarm {
    timer: Pin<Box<Sleep>>,
}

impl Alarm {
    /// An alarm that is first set for `deadline` (it enters the wheel when first polled).
    pub fn new(deadline: Instant) -> Alarm {
        Alarm { timer: Box::pin(tokio::time::sleep_until(deadline)) }
    }

    /// Whether `deadline` has passed; if not, the task is woken by then (perhaps before, to
    /// no effect: it polls again).
    pub fn poll_passed(&mut self, cx: &mut Context<'_>, deadline: Instant) -> bool {
        if self.timer.deadline() > deadline {
            self.timer.as_mut().reset(deadline);
        }
        while self.timer.as_mut().poll(cx).is_ready() {
            if Instant::now() >= deadline {
                return true;
            }
            self.timer.as_mut().reset(deadline);
        }
        false
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "idle or header read timeout")
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TimedIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
mod tests {
    //! hyper serving over a [`TimedIo`] on an in-memory pipe, under paused time: the clocks
    //! are checked to the millisecond without waiting for them.

    use std::convert::Infallible;

    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    use super::*;

    const IDLE: Duration = Duration::from_millis(600);
    const HEADER: Duration = Duration::from_millis(500);

    /// A connection served with the two timeouts; `/slow` takes two seconds to answer.
    fn connection() -> DuplexStream {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let activity = Activity::new();
        let io = TimedIo::new(server, activity.clone(), IDLE, HEADER);
        let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let serving = activity.serving(false);
            async move {
                if req.uri().path() == "/slow" {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                drop(serving);
                Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
            }
        });
        tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(io), service));
        client
    }

    /// One request and its whole answer ("ok", two bytes of body).
    async fn ask(client: &mut DuplexStream, path: &str) -> String {
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        client.write_all(request.as_bytes()).await.expect("write");
        let mut answer = Vec::new();
        while !answer.ends_with(b"\r\n\r\nok") {
            let mut byte = [0u8; 1];
            assert_eq!(client.read(&mut byte).await.expect("read"), 1, "closed mid-answer: {answer:?}");
            answer.push(byte[0]);
        }
        String::from_utf8_lossy(&answer).into_owned()
    }

    /// How long until the server closes the connection.
    async fn time_to_close(client: &mut DuplexStream) -> Duration {
        let started = Instant::now();
        let mut rest = Vec::new();
        let _ = client.read_to_end(&mut rest).await;
        started.elapsed()
    }

    fn about(d: Duration, expected: Duration) -> bool {
        d >= expected && d <= expected + Duration::from_millis(2)
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_closes_once_idle_timeout_passes_after_its_last_answer() {
        let mut client = connection();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(ask(&mut client, "/").await.starts_with("HTTP/1.1 200"));
        // Its first deadline (600 ms after connecting) has passed; the answer moved it.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(ask(&mut client, "/").await.starts_with("HTTP/1.1 200"));
        let closed = time_to_close(&mut client).await;
        assert!(about(closed, IDLE), "closed {closed:?} after the last answer");
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_must_arrive_whole_within_the_header_read_timeout() {
        let mut client = connection();
        client.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.expect("write");
        let closed = time_to_close(&mut client).await;
        assert!(about(closed, HEADER), "a slow head was cut after {closed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_being_served_outlasts_both_timeouts() {
        let mut client = connection();
        let answer = ask(&mut client, "/slow").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let closed = time_to_close(&mut client).await;
        assert!(about(closed, IDLE), "the idle clock starts at the answer: {closed:?}");
    }
}
