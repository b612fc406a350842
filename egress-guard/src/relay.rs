//! Copying a connection both ways until both sides are done, or until neither has sent a byte
//! for the deployment's idle limit: a container cannot keep the guard's descriptors by opening
//! connections and going quiet.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Buffers of 64 KiB: a private endpoint is mostly storage, and bulk transfers through 8 KiB
/// buffers (tokio's default) took nearly twice as long in the guard bench.
const BUFFER: usize = 64 * 1024;

/// The bytes (client to endpoint, endpoint to client).
pub async fn relay<A, B>(client: &mut A, upstream: &mut B, idle: Duration) -> (u64, u64)
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let activity = Arc::new(Activity::new());
    let mut a = Tracked::new(client, activity.clone());
    let mut b = Tracked::new(upstream, activity.clone());
    {
        let copy = tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, BUFFER, BUFFER);
        within_idle(&activity, idle, copy).await;
    }
    (a.read, b.read)
}

/// When a connection last moved a byte.
#[derive(Debug)]
pub struct Activity {
    start: Instant,
    /// Milliseconds after `start`.
    last: AtomicU64,
}

impl Activity {
    pub fn new() -> Activity {
        Activity { start: Instant::now(), last: AtomicU64::new(0) }
    }

    fn touch(&self) {
        let at = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(at, Ordering::Relaxed);
    }

    fn quiet_until(&self, idle: Duration) -> Instant {
        self.start + Duration::from_millis(self.last.load(Ordering::Relaxed)) + idle
    }
}

impl Default for Activity {
    fn default() -> Activity {
        Activity::new()
    }
}

/// `work`'s output, or None when its connection went `idle` without a byte first.
pub async fn within_idle<F: Future>(activity: &Activity, idle: Duration, work: F) -> Option<F::Output> {
    tokio::pin!(work);
    loop {
        tokio::select! {
            out = &mut work => return Some(out),
            () = tokio::time::sleep_until(activity.quiet_until(idle)) => {
                if Instant::now() >= activity.quiet_until(idle) {
                    return None;
                }
            }
        }
    }
}

/// A connection that notes its activity, and counts the bytes read from it.
pub struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
    pub read: u64,
}

impl<S> Tracked<S> {
    pub fn new(inner: S, activity: Arc<Activity>) -> Tracked<S> {
        Tracked { inner, activity, read: 0 }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.activity.touch();
            self.read += n as u64;
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_quiet_relay_ends_after_the_idle_limit_and_a_busy_one_does_not() {
        let (mut client, mut client_end) = tokio::io::duplex(1024);
        let (mut upstream, mut upstream_end) = tokio::io::duplex(1024);
        let idle = Duration::from_secs(30);
        let relay = tokio::spawn(async move { relay(&mut client_end, &mut upstream_end, idle).await });
        // Busy for longer than the limit, a byte every 20 s.
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_secs(20)).await;
            client.write_all(b"x").await.expect("write");
            let mut byte = [0u8; 1];
            upstream.read_exact(&mut byte).await.expect("relayed");
        }
        assert!(!relay.is_finished(), "a busy relay was cut");
        upstream.write_all(b"yz").await.expect("write");
        let mut two = [0u8; 2];
        client.read_exact(&mut two).await.expect("relayed back");
        let started_quiet = Instant::now();
        let bytes = relay.await.expect("relay ended");
        assert_eq!(bytes, (4, 2));
        assert!(started_quiet.elapsed() >= idle, "ended before the idle limit");
        assert_eq!(client.read(&mut two).await.expect("read"), 0, "the client's side is closed");
    }
}
