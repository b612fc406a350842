//! Draining the client connections at shutdown: each connection is watched, and when the
//! drain starts every one is asked to end gracefully (an idle HTTP/1.1 connection closes, an
//! HTTP/2 one gets GOAWAY, a request in flight is answered first); the drain ends when the
//! last connection has. Before it, a close window may come ([`Drain::close`]), in which the
//! connections stay open but every HTTP/1.1 answer says `Connection: close`: the listener's
//! shutdown is one [`Phase`] that only moves forward.
//!
//! Why not hyper-util's `GracefulShutdown`: its watcher polls a `watch` channel, which takes
//! a lock, on every poll of every connection (about 2 % of a proxied request's instructions).
//! Here a poll reads one flag; a connection's waker is stored once, under the lock, and only
//! again if its task's waker changes.
//!
//! A connection counts from the moment hyper serves it, after its PROXY header and TLS
//! handshake: one still in its handshake when the drain ends is closed with the workers, as a
//! drain would have closed it before its first request anyway.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use tokio::sync::Notify;

/// A connection the drain can ask to end gracefully: an idle one ends, one with a request in
/// flight answers it first.
pub trait Graceful: Future {
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, B, S> Graceful for hyper::server::conn::http1::Connection<I, S>
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        hyper::server::conn::http1::Connection::graceful_shutdown(self)
    }
}

impl<I, B, S, E> Graceful for hyper::server::conn::http2::Connection<I, S, E>
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        hyper::server::conn::http2::Connection::graceful_shutdown(self)
    }
}

/// Where a listener's shutdown is; it only moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Phase {
    /// Not shutting down.
    Serving = 0,
    /// The close window: connections stay open, HTTP/1.1 answers say `Connection: close`.
    Closing = 1,
    /// Every connection, open now or later, is asked to end gracefully.
    Draining = 2,
}

impl Phase {
    fn of(value: u8) -> Phase {
        match value {
            0 => Phase::Serving,
            1 => Phase::Closing,
            _ => Phase::Draining,
        }
    }
}

/// The connections of one listener, and where its shutdown is.
#[derive(Clone, Default)]
pub struct Drain {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    /// A [`Phase`].
    phase: AtomicU8,
    open: AtomicUsize,
    next_id: AtomicU64,
    /// The waker of each open connection that has been polled.
    wakers: Mutex<HashMap<u64, Waker>>,
    /// Told when the last open connection ends.
    all_ended: Notify,
}

impl Drain {
    pub fn new() -> Drain {
        Drain::default()
    }

    /// `connection`, counted as open until it ends or is dropped, and asked to end gracefully
    /// once the drain starts.
    pub fn watch<C: Graceful>(&self, connection: C) -> Watched<C> {
        self.shared.open.fetch_add(1, Ordering::AcqRel);
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        Watched { connection, guard: Guard { shared: self.shared.clone(), id, waker: None, asked: false } }
    }

    /// Connections open now.
    pub fn count(&self) -> usize {
        self.shared.open.load(Ordering::Acquire)
    }

    /// Where the listener's shutdown is now.
    pub fn phase(&self) -> Phase {
        Phase::of(self.shared.phase.load(Ordering::SeqCst))
    }

    /// Opens the close window (unless the drain has started).
    pub fn close(&self) {
        self.shared.phase.fetch_max(Phase::Closing as u8, Ordering::SeqCst);
    }

    /// Asks every connection, open now or opened later, to end gracefully, and waits until
    /// all have ended.
    pub async fn drain(&self) {
        self.shared.phase.fetch_max(Phase::Draining as u8, Ordering::SeqCst);
        let wakers: Vec<Waker> = self.shared.lock().values().cloned().collect();
        wakers.into_iter().for_each(Waker::wake);
        loop {
            let ended = self.shared.all_ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if self.count() == 0 {
                return;
            }
            ended.await;
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Waker>> {
        // A panic while holding it cannot leave the map inconsistent: use it as it is.
        self.wakers.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

pin_project_lite::pin_project! {
    /// A watched connection: polls as the connection does.
    pub struct Watched<C> {
        #[pin]
        connection: C,
        guard: Guard,
    }
}

/// A watched connection's place in the drain; gives it up on drop.
struct Guard {
    shared: Arc<Shared>,
    id: u64,
    /// The waker stored for this connection, kept to see whether it changed.
    waker: Option<Waker>,
    /// Asked to end gracefully already.
    asked: bool,
}

impl<C: Graceful> Future for Watched<C> {
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let mut this = self.project();
        let guard = &mut *this.guard;
        if !guard.asked {
            if !guard.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                guard.shared.lock().insert(guard.id, cx.waker().clone());
                guard.waker = Some(cx.waker().clone());
            }
            // Read after the waker is stored: a drain that starts later wakes this task.
            if Phase::of(guard.shared.phase.load(Ordering::SeqCst)) == Phase::Draining {
                guard.asked = true;
                this.connection.as_mut().graceful_shutdown();
            }
        }
        this.connection.poll(cx)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.waker.is_some() {
            self.shared.lock().remove(&self.id);
        }
        if self.shared.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.all_ended.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::time::Duration;

    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio::sync::oneshot;

    use super::*;

    /// An HTTP/1.1 connection on `io` whose one answer waits for `answer`; `called` hears
    /// when the request has come.
    fn serve(
        drain: &Drain,
        io: DuplexStream,
        answer: oneshot::Receiver<()>,
        called: Option<oneshot::Sender<()>>,
    ) -> tokio::task::JoinHandle<()> {
        let waits = Arc::new(Mutex::new(Some((answer, called))));
        let service = service_fn(move |_req| {
            let (answer, called) = waits.lock().expect("answer").take().unzip();
            if let Some(called) = called.flatten() {
                let _ = called.send(());
            }
            async move {
                if let Some(answer) = answer {
                    let _ = answer.await;
                }
                Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"done"))))
            }
        });
        let connection = drain.watch(http1::Builder::new().serve_connection(TokioIo::new(io), service));
        tokio::spawn(async move {
            let _ = connection.await;
        })
    }

    #[tokio::test]
    async fn idle_connections_close_at_once_and_busy_ones_after_their_answer() {
        let drain = Drain::new();
        let (_idle_client, idle_server) = tokio::io::duplex(4096);
        let (_never, answer_idle) = oneshot::channel();
        let idle = serve(&drain, idle_server, answer_idle, None);
        let (mut busy_client, busy_server) = tokio::io::duplex(4096);
        let (answer, answer_busy) = oneshot::channel();
        let (called, request_came) = oneshot::channel();
        let busy = serve(&drain, busy_server, answer_busy, Some(called));
        busy_client.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("request");
        request_came.await.expect("the request reached the service");
        assert_eq!(drain.count(), 2);

        let drained = tokio::spawn({
            let drain = drain.clone();
            async move { drain.drain().await }
        });
        tokio::time::timeout(Duration::from_secs(5), idle).await.expect("idle closed").expect("task");
        assert_eq!(drain.count(), 1, "the busy connection waits for its answer");
        assert!(!drained.is_finished());

        let _ = answer.send(());
        let mut text = String::new();
        busy_client.read_to_string(&mut text).await.expect("answer, then the close");
        assert!(text.starts_with("HTTP/1.1 200 OK") && text.ends_with("done"), "{text}");
        tokio::time::timeout(Duration::from_secs(5), drained).await.expect("drain ended").expect("task");
        busy.await.expect("task");
        assert_eq!(drain.count(), 0);

        // A connection that comes after the drain started is asked at its first poll.
        let (_late_client, late_server) = tokio::io::duplex(4096);
        let (_never, answer_late) = oneshot::channel();
        let late = serve(&drain, late_server, answer_late, None);
        tokio::time::timeout(Duration::from_secs(5), late).await.expect("late closed").expect("task");
        tokio::time::timeout(Duration::from_secs(5), drain.drain()).await.expect("nothing open");
    }

    #[tokio::test]
    async fn the_phase_only_moves_forward() {
        let drain = Drain::new();
        assert_eq!(drain.phase(), Phase::Serving);
        drain.close();
        assert_eq!(drain.phase(), Phase::Closing);
        drain.drain().await;
        assert_eq!(drain.phase(), Phase::Draining);
        drain.close();
        assert_eq!(drain.phase(), Phase::Draining, "a close window after the drain began changes nothing");
    }
}
