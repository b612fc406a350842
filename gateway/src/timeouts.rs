//! Connection timeouts that a slow or idle client cannot outwait, enforced where the
//! connection reads:
//!
//! - idle: between requests, a connection that sends nothing for `idle_timeout` is closed;
//! - header read: once the first byte of a request arrives, its whole header section must
//!   follow within `header_read_timeout`, or the connection is closed (slowloris).
//!
//! While a request is being served neither applies (the request has its own deadline).

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

    /// A request is being served until the guard drops.
    pub fn serving(self: &Arc<Self>) -> Serving {
        self.busy.fetch_add(1, Ordering::AcqRel);
        Serving(self.clone())
    }
}

pub struct Serving(Arc<Activity>);

impl Drop for Serving {
    fn drop(&mut self) {
        let a = &self.0;
        a.idle_since.store(a.now_ms(), Ordering::Release);
        a.head_since.store(0, Ordering::Release);
        a.busy.fetch_sub(1, Ordering::AcqRel);
        a.reader.wake();
    }
}

/// The client connection's IO with the two timeouts on its reads.
pub struct TimedIo<T> {
    inner: T,
    activity: Arc<Activity>,
    idle_timeout: Duration,
    header_read_timeout: Duration,
    timer: Pin<Box<Sleep>>,
}

impl<T> TimedIo<T> {
    pub fn new(
        inner: T,
        activity: Arc<Activity>,
        idle_timeout: Duration,
        header_read_timeout: Duration,
    ) -> Self {
        let timer = Box::pin(tokio::time::sleep(idle_timeout));
        TimedIo { inner, activity, idle_timeout, header_read_timeout, timer }
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
        let deadline = self.deadline();
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Poll::Ready(Err(timed_out()));
        }
        let this = &mut *self;
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before
            && deadline.is_some()
            && this.activity.head_since.load(Ordering::Acquire) == 0
        {
            // The first bytes of the next request: the header section's clock starts.
            this.activity.head_since.store(this.activity.now_ms().max(1), Ordering::Release);
        }
        if polled.is_pending() {
            this.activity.reader.register(cx.waker());
        }
        if polled.is_pending()
            && let Some(deadline) = this.deadline()
        {
            this.timer.as_mut().reset(deadline);
            if this.timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(timed_out()));
            }
        }
        polled
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
