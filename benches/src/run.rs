//! One run: `-c` connections, each taking the next due request and opening (again) its
//! connection when it has none. With `--http2 --streams N`, each connection carries N
//! requests at once, each of its N streams taking the next due request.
//!
//! The connections are spread over threads, each a single-threaded runtime whose
//! connections share one tally; the threads' tallies merge at the end. Everything a run
//! needs before its first request (threads, runtimes, connections, tallies) is made before
//! its clock starts: made on the clock, it delayed the open loop's first due times by
//! several milliseconds, and a 5 s run's p99 measured the load generator's start more than
//! the server (BENCHMARKS.md).

use std::cell::RefCell;
use std::io::IsTerminal;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http2;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::LocalSet;

use crate::cli::{Plan, Stop};
use crate::pace::{Slot, Slots};
use crate::report::Report;
use crate::tally::{Answer, Tally, Timeline};
use crate::target::{Connection, ErrorKind, Sent, Target};

/// Runs the plan on `threads` OS threads, each a single-threaded runtime with its share of
/// the connections: no work stealing and no wake-ups across threads, which cost a
/// multi-threaded runtime a fifth of its rate here.
pub fn run(plan: &Plan, target: Arc<Target>, threads: usize) -> Result<(Report, Tally), String> {
    let threads = threads.clamp(1, plan.connections);
    let runtimes = (0..threads)
        .map(|_| tokio::runtime::Builder::new_current_thread().enable_all().build())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    let (ready, all_ready) = mpsc::channel::<()>();
    let mut starts = Vec::new();
    let mut workers = Vec::new();
    for (t, runtime) in runtimes.into_iter().enumerate() {
        // Connections t, t + threads, ...: an even share.
        let share = (t..plan.connections).step_by(threads).count();
        let (start_tx, start) = mpsc::channel::<Clock>();
        starts.push(start_tx);
        let (target, ready, timeout, streams) = (target.clone(), ready.clone(), plan.timeout, plan.streams);
        workers.push(std::thread::spawn(move || {
            // Its histograms are written in full when made: hundreds of kilobytes.
            let tally = Rc::new(RefCell::new(Tally::new()));
            let connections = runtime.block_on(open(&target, share, streams > 1, timeout));
            let _ = ready.send(());
            let Ok(clock) = start.recv() else { return Tally::new() };
            tally.borrow_mut().timeline = clock.timeline();
            let shared =
                Shared { target, slots: clock.slots, ended: clock.ended, timeout, tally: tally.clone() };
            LocalSet::new().block_on(&runtime, async move {
                let tasks: Vec<_> = connections
                    .into_iter()
                    .map(|opened| match opened {
                        Opened::Shared(sender) => {
                            tokio::task::spawn_local(multiplexed(shared.clone(), sender, streams))
                        }
                        Opened::One(open) => tokio::task::spawn_local(connection(shared.clone(), open)),
                    })
                    .collect();
                for task in tasks {
                    let _ = task.await;
                }
            });
            tally.take()
        }));
    }
    drop(ready);
    // A thread that ended early has dropped its sender: the wait stops there.
    for _ in 0..threads {
        if all_ready.recv().is_err() {
            break;
        }
    }
    let start = Instant::now();
    let last = match plan.stop {
        Stop::At(d) => Some((d.as_secs_f64().ceil() as usize).saturating_sub(1)),
        Stop::After(_) => None,
    };
    let clock = Clock {
        slots: Arc::new(match plan.rate {
            Some(rate) => Slots::open(rate, plan.stop, start),
            None => Slots::closed(plan.stop, start),
        }),
        ended: Arc::new(AtomicU64::new(0)),
        timeline_from: plan.timeline.is_some().then_some((start, last)),
    };
    let finished = Arc::new(AtomicBool::new(false));
    let progress = progress(plan.stop, start, clock.ended.clone(), finished.clone());
    let mut total = Tally::new();
    total.timeline = clock.timeline();
    for start in starts {
        let _ = start.send(clock.clone());
    }
    for worker in workers {
        if let Ok(tally) = worker.join() {
            total.merge(tally);
        }
    }
    let elapsed = start.elapsed();
    finished.store(true, Ordering::Relaxed);
    if let Some(bar) = progress {
        let _ = bar.join();
    }
    Ok((Report::new(&total, plan.rate, elapsed), total))
}

/// What the threads get when the clock starts.
#[derive(Clone)]
struct Clock {
    slots: Arc<Slots>,
    ended: Arc<AtomicU64>,
    /// With `--timeline`: the run's start, and its last second if it has one.
    timeline_from: Option<(Instant, Option<usize>)>,
}

impl Clock {
    /// A tally's timeline, when the run keeps one.
    fn timeline(&self) -> Option<Timeline> {
        self.timeline_from.map(|(start, last)| Timeline::new(start, last))
    }
}

/// A connection opened before the clock starts: none when it could not be, and its first
/// request opens it (or fails saying why).
enum Opened {
    One(Option<Connection>),
    Shared(Option<http2::SendRequest<Full<Bytes>>>),
}

impl Opened {
    /// A connection of the run's kind, opened within `timeout` (a request's own bound: an
    /// address that never answers holds the start no longer than that) or none.
    async fn within(target: &Target, multiplexed: bool, timeout: Duration) -> Opened {
        async fn bounded<T>(
            timeout: Duration,
            connect: impl Future<Output = Result<T, ErrorKind>>,
        ) -> Option<T> {
            tokio::time::timeout(timeout, connect).await.ok()?.ok()
        }
        if multiplexed {
            Opened::Shared(bounded(timeout, target.connect_shared()).await)
        } else {
            Opened::One(bounded(timeout, target.connect()).await)
        }
    }

    fn none(multiplexed: bool) -> Opened {
        if multiplexed { Opened::Shared(None) } else { Opened::One(None) }
    }
}

/// Opens a thread's `share` of the connections, all at once.
async fn open(target: &Arc<Target>, share: usize, multiplexed: bool, timeout: Duration) -> Vec<Opened> {
    let connects: Vec<_> = (0..share)
        .map(|_| {
            let target = target.clone();
            tokio::spawn(async move { Opened::within(&target, multiplexed, timeout).await })
        })
        .collect();
    let mut opened = Vec::new();
    for connect in connects {
        opened.push(connect.await.unwrap_or_else(|_| Opened::none(multiplexed)));
    }
    opened
}

/// What every connection of a thread shares.
#[derive(Clone)]
struct Shared {
    target: Arc<Target>,
    slots: Arc<Slots>,
    ended: Arc<AtomicU64>,
    timeout: Duration,
    tally: Rc<RefCell<Tally>>,
}

impl Shared {
    /// When the next request is due and when it started, once one is.
    async fn next(&self) -> Option<(Instant, Instant)> {
        let slot = self.slots.next().await?;
        let started = Instant::now();
        let due = match slot {
            Slot::Now => started,
            Slot::Due(at) => at,
        };
        self.tally.borrow_mut().started(due, started);
        Some((due, started))
    }

    fn answered(&self, due: Instant, started: Instant, status: u16, first_byte: Instant) {
        self.tally.borrow_mut().answered(due, started, Answer { first_byte, ended: Instant::now(), status });
        self.ended.fetch_add(1, Ordering::Relaxed);
    }

    fn failed(&self, kind: ErrorKind) {
        self.tally.borrow_mut().failed(kind, Instant::now());
        self.ended.fetch_add(1, Ordering::Relaxed);
    }
}

async fn connection(shared: Shared, mut open: Option<Connection>) {
    while let Some((due, started)) = shared.next().await {
        let outcome = tokio::time::timeout(shared.timeout, exchange(&shared.target, &mut open))
            .await
            .unwrap_or(Err(ErrorKind::Timeout));
        match outcome {
            Ok((status, first_byte)) => shared.answered(due, started, status, first_byte),
            Err(kind) => {
                shared.failed(kind);
                // A timeout leaves the connection mid-exchange.
                open = None;
            }
        }
    }
}

/// One HTTP/2 connection carrying `streams` requests at once; opened again when it fails.
async fn multiplexed(shared: Shared, mut opened: Option<http2::SendRequest<Full<Bytes>>>, streams: usize) {
    loop {
        let connected = match opened.take() {
            Some(sender) => Ok(sender),
            None => shared.target.connect_shared().await,
        };
        let sender = match connected {
            Ok(sender) => sender,
            Err(kind) => {
                // No connection: the next due request fails with the reason.
                let Some(_) = shared.next().await else { return };
                shared.failed(kind);
                continue;
            }
        };
        let lanes: Vec<_> = (0..streams)
            .map(|_| {
                let (shared, mut sender) = (shared.clone(), sender.clone());
                tokio::task::spawn_local(async move {
                    while let Some((due, started)) = shared.next().await {
                        let sent =
                            tokio::time::timeout(shared.timeout, shared.target.send_stream(&mut sender))
                                .await
                                .unwrap_or(Err(ErrorKind::Timeout));
                        match sent {
                            Ok(Some(Sent::Answered { status, first_byte, .. })) => {
                                shared.answered(due, started, status, first_byte)
                            }
                            // The connection is gone: this request and the lane end with it.
                            Ok(Some(Sent::Closed) | None) => {
                                shared.failed(ErrorKind::Reset);
                                return false;
                            }
                            Err(kind) => {
                                shared.failed(kind);
                                return false;
                            }
                        }
                    }
                    true
                })
            })
            .collect();
        let mut done = true;
        for lane in lanes {
            done &= lane.await.unwrap_or(true);
        }
        if done {
            return;
        }
    }
}

/// One request, on the open connection or a new one. A kept-alive connection the server
/// has closed meanwhile is not an error: the request goes out on a new one. The status and
/// when the answer's first byte came.
async fn exchange(target: &Target, open: &mut Option<Connection>) -> Result<(u16, Instant), ErrorKind> {
    for _ in 0..2 {
        let connection = match open {
            Some(c) => c,
            None => open.insert(target.connect().await?),
        };
        match target.send(connection).await {
            Ok(Sent::Answered { status, keep, first_byte }) => {
                if !keep {
                    *open = None;
                }
                return Ok((status, first_byte));
            }
            Ok(Sent::Closed) => *open = None,
            Err(kind) => {
                *open = None;
                return Err(kind);
            }
        }
    }
    // Even a new connection closed before the request went out.
    Err(ErrorKind::Reset)
}

/// A bar on stderr when it is a terminal: the count, or the time, used up so far.
fn progress(
    stop: Stop,
    start: Instant,
    ended: Arc<AtomicU64>,
    finished: Arc<AtomicBool>,
) -> Option<std::thread::JoinHandle<()>> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    Some(std::thread::spawn(move || {
        let (len, template) = match stop {
            Stop::After(n) => (n, "{elapsed_precise} [{bar:40}] {pos}/{len} requests"),
            Stop::At(d) => (d.as_millis() as u64, "{elapsed_precise} [{bar:40}] {msg} requests"),
        };
        let bar = ProgressBar::new(len);
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        while !finished.load(Ordering::Relaxed) {
            let done = ended.load(Ordering::Relaxed);
            match stop {
                Stop::After(_) => bar.set_position(done),
                Stop::At(_) => {
                    bar.set_position((start.elapsed().as_millis() as u64).min(len));
                    bar.set_message(done.to_string());
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bar.finish_and_clear();
    }))
}
