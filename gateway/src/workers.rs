//! The threads that serve client connections: one single-threaded tokio runtime per worker,
//! as nginx runs one event loop per worker process. A connection lives its whole life on the
//! worker it was handed to, and so do the upstream connections its requests use (see
//! [`crate::upstream`]): a request never wakes another thread. Under tokio's work-stealing
//! runtime the same load cost about 60 % more CPU per request with two workers than with
//! one, in cross-thread wake-ups and stolen tasks (BENCHMARKS.md).
//!
//! The accept loop hands each new connection to the worker with the fewest open ones.
//!
//! Each worker also keeps a timer due within [`NEAR`] ([`keep_a_timer_near`]): tokio wakes its
//! own event loop, with a system call and an extra turn, whenever a timer is set to fire
//! before the loop's planned wake-up, and with only idle timers (minutes away) planned, every
//! request's deadline did (a third of all requests at 7,000 req/s, BENCHMARKS.md).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

pub struct Workers {
    workers: Vec<Worker>,
}

struct Worker {
    jobs: mpsc::UnboundedSender<Job>,
    /// Connections handed to this worker and not yet ended.
    open: Arc<AtomicUsize>,
}

impl Workers {
    /// Starts `count` worker threads (0: one per CPU), named `moat-gateway-<n>`. They stop
    /// when this is dropped, cancelling what still runs on them.
    pub fn start(count: usize) -> std::io::Result<Workers> {
        let count = match count {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let workers = (0..count).map(Worker::start).collect::<std::io::Result<_>>()?;
        Ok(Workers { workers })
    }

    /// No worker threads: connections run on the runtime of the accept loop.
    pub fn none() -> Workers {
        Workers { workers: Vec::new() }
    }

    /// Runs `connection` to its end on the least busy worker. The future is first polled
    /// there, so sockets it opens or adopts (`TcpStream::from_std`) belong to that worker.
    pub fn hand_over(&self, connection: impl Future<Output = ()> + Send + 'static) {
        let Some(worker) = self.workers.iter().min_by_key(|w| w.open.load(Ordering::Relaxed)) else {
            tokio::spawn(connection);
            return;
        };
        let open = worker.open.clone();
        open.fetch_add(1, Ordering::Relaxed);
        let job = Box::pin(async move {
            let _open = Open(open);
            connection.await;
        });
        // A worker whose thread is gone drops the job, and with it the connection.
        let _ = worker.jobs.send(job);
    }
}

impl Worker {
    fn start(index: usize) -> std::io::Result<Worker> {
        // Sockets and timers only: with the signal and process drivers too, every turn of
        // the loop also looked for signals and reaped child processes no connection has.
        let runtime = tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build()?;
        let (jobs, mut incoming) = mpsc::unbounded_channel::<Job>();
        std::thread::Builder::new().name(format!("moat-gateway-{index}")).spawn(move || {
            runtime.block_on(async move {
                tokio::spawn(keep_a_timer_near());
                while let Some(job) = incoming.recv().await {
                    tokio::spawn(job);
                }
            })
        })?;
        Ok(Worker { jobs, open: Arc::default() })
    }
}

/// How far ahead a worker's event loop always plans to wake: shorter than the usual request
/// deadline (`request_timeout_ms`, 5 s by default), so setting one never moves the plan.
const NEAR: Duration = Duration::from_secs(1);

/// Keeps a timer due within [`NEAR`]: one wake-up a second instead of a system call for
/// most requests.
async fn keep_a_timer_near() {
    let mut tick = tokio::time::interval(NEAR);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}

/// Counts a connection as open on its worker until it ends (or is dropped).
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;

    #[tokio::test]
    async fn connections_spread_over_the_workers_and_each_stays_on_its_thread() {
        let workers = Workers::start(2).expect("workers");
        let threads = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
        let (done_tx, mut done) = mpsc::unbounded_channel();
        let release = Arc::new(tokio::sync::Notify::new());
        for _ in 0..6 {
            let (threads, done_tx, release) = (threads.clone(), done_tx.clone(), release.clone());
            workers.hand_over(async move {
                let name = || std::thread::current().name().unwrap_or("").to_string();
                let first = name();
                *threads.lock().expect("threads").entry(first.clone()).or_default() += 1;
                // Held open, so the next connection sees this worker busier.
                release.notified().await;
                let _ = done_tx.send(first == name());
            });
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let counts = threads.lock().expect("threads").clone();
        assert_eq!(counts, HashMap::from([("moat-gateway-0".into(), 3), ("moat-gateway-1".into(), 3)]));
        release.notify_waiters();
        for _ in 0..6 {
            assert_eq!(done.recv().await, Some(true), "a connection moved threads");
        }
    }

    /// Write system calls this thread has made so far.
    fn writes_of_this_thread() -> u64 {
        let io = std::fs::read_to_string("/proc/thread-self/io").expect("/proc/thread-self/io");
        io.lines()
            .find_map(|line| line.strip_prefix("syscw: "))
            .and_then(|n| n.trim().parse().ok())
            .expect("syscw in /proc/thread-self/io")
    }

    #[tokio::test]
    async fn setting_a_request_deadline_does_not_wake_the_workers_own_event_loop() {
        let workers = Workers::start(1).expect("workers");
        let (done_tx, mut done) = mpsc::unbounded_channel();
        workers.hand_over(async move {
            let mut wakes = 0;
            for _ in 0..20 {
                // The worker parks here until another thread answers, as it waits for a client.
                let (answer_tx, answer) = tokio::sync::oneshot::channel();
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(2));
                    let _ = answer_tx.send(());
                });
                let _ = answer.await;
                // A request's deadline, set as a request sets it: registered at its first poll.
                let before = writes_of_this_thread();
                let mut deadline = std::pin::pin!(tokio::time::sleep(Duration::from_secs(5)));
                std::future::poll_fn(|cx| {
                    let _ = deadline.as_mut().poll(cx);
                    std::task::Poll::Ready(())
                })
                .await;
                wakes += writes_of_this_thread() - before;
            }
            let _ = done_tx.send(wakes);
        });
        assert_eq!(done.recv().await, Some(0), "system calls to wake the worker's own loop");
    }

    #[tokio::test]
    async fn without_workers_connections_run_where_they_are_accepted() {
        let (done_tx, mut done) = mpsc::unbounded_channel();
        let here = std::thread::current().id();
        Workers::none().hand_over(async move {
            let _ = done_tx.send(std::thread::current().id());
        });
        assert_eq!(done.recv().await, Some(here));
    }
}
