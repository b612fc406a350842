//! One run: `-c` connections, each taking the next due request, opening (again) its
//! connection when it has none, and keeping its own tally; the tallies merge at the end.
//! With `--http2 --streams N`, each connection carries N requests at once, each of its N
//! streams taking the next due request.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::{Plan, Stop};
use crate::pace::{Slot, Slots};
use crate::report::Report;
use crate::tally::{Answer, Tally};
use crate::target::{Connection, ErrorKind, Sent, Target};

/// Runs the plan on `threads` OS threads, each a single-threaded runtime with its share of
/// the connections: no work stealing and no wake-ups across threads, which cost a
/// multi-threaded runtime a fifth of its rate here.
pub fn run(plan: &Plan, target: Arc<Target>, threads: usize) -> Result<(Report, Tally), String> {
    let start = Instant::now();
    let last = match plan.stop {
        Stop::At(d) => Some((d.as_secs_f64().ceil() as usize).saturating_sub(1)),
        Stop::After(_) => None,
    };
    let timeline = plan.timeline.is_some().then_some((start, last));
    let streams = plan.streams;
    let slots = Arc::new(match plan.rate {
        Some(rate) => Slots::open(rate, plan.stop, start),
        None => Slots::closed(plan.stop, start),
    });
    let ended = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicBool::new(false));
    let progress = progress(plan.stop, start, ended.clone(), finished.clone());
    let threads = threads.clamp(1, plan.connections);
    let mut workers = Vec::new();
    for t in 0..threads {
        // Connections t, t + threads, ...: an even share.
        let share = (t..plan.connections).step_by(threads).count();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start a runtime: {e}"))?;
        let (target, slots, ended, timeout) = (target.clone(), slots.clone(), ended.clone(), plan.timeout);
        workers.push(std::thread::spawn(move || {
            runtime.block_on(async move {
                let tasks: Vec<_> = (0..share)
                    .map(|_| {
                        let (target, slots, ended) = (target.clone(), slots.clone(), ended.clone());
                        let shared = Shared { target, slots, ended, timeout, timeline };
                        if streams > 1 {
                            tokio::spawn(multiplexed(shared, streams))
                        } else {
                            tokio::spawn(connection(shared))
                        }
                    })
                    .collect();
                let mut tally = Tally::timed(timeline);
                for task in tasks {
                    if let Ok(t) = task.await {
                        tally.merge(t);
                    }
                }
                tally
            })
        }));
    }
    let mut total = Tally::timed(timeline);
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

/// What every connection of a run shares.
#[derive(Clone)]
struct Shared {
    target: Arc<Target>,
    slots: Arc<Slots>,
    ended: Arc<AtomicU64>,
    timeout: Duration,
    timeline: Option<(Instant, Option<usize>)>,
}

/// When the next request is due and when it started, once one is.
async fn next(shared: &Shared, tally: &mut Tally) -> Option<(Instant, Instant)> {
    let slot = shared.slots.next().await?;
    let started = Instant::now();
    let due = match slot {
        Slot::Now => started,
        Slot::Due(at) => at,
    };
    tally.started(due, started);
    Some((due, started))
}

async fn connection(shared: Shared) -> Tally {
    let mut tally = Tally::timed(shared.timeline);
    let mut open: Option<Connection> = None;
    while let Some((due, started)) = next(&shared, &mut tally).await {
        let outcome = tokio::time::timeout(shared.timeout, exchange(&shared.target, &mut open))
            .await
            .unwrap_or(Err(ErrorKind::Timeout));
        match outcome {
            Ok((status, first_byte)) => {
                tally.answered(due, started, Answer { first_byte, ended: Instant::now(), status })
            }
            Err(kind) => {
                tally.failed(kind, Instant::now());
                // A timeout leaves the connection mid-exchange.
                open = None;
            }
        }
        shared.ended.fetch_add(1, Ordering::Relaxed);
    }
    tally
}

/// One HTTP/2 connection carrying `streams` requests at once; opened again when it fails.
async fn multiplexed(shared: Shared, streams: usize) -> Tally {
    let mut tally = Tally::timed(shared.timeline);
    loop {
        let sender = match shared.target.connect_shared().await {
            Ok(sender) => sender,
            Err(kind) => {
                // No connection: the next due request fails with the reason.
                let Some(_) = next(&shared, &mut tally).await else { return tally };
                tally.failed(kind, Instant::now());
                shared.ended.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        let lanes: Vec<_> = (0..streams)
            .map(|_| {
                let (shared, mut sender) = (shared.clone(), sender.clone());
                tokio::spawn(async move {
                    let mut tally = Tally::timed(shared.timeline);
                    while let Some((due, started)) = next(&shared, &mut tally).await {
                        let sent =
                            tokio::time::timeout(shared.timeout, shared.target.send_stream(&mut sender))
                                .await
                                .unwrap_or(Err(ErrorKind::Timeout));
                        shared.ended.fetch_add(1, Ordering::Relaxed);
                        match sent {
                            Ok(Some(Sent::Answered { status, first_byte, .. })) => {
                                let answer = Answer { first_byte, ended: Instant::now(), status };
                                tally.answered(due, started, answer);
                            }
                            // The connection is gone: this request and the lane end with it.
                            Ok(Some(Sent::Closed) | None) => {
                                tally.failed(ErrorKind::Reset, Instant::now());
                                return (tally, false);
                            }
                            Err(kind) => {
                                tally.failed(kind, Instant::now());
                                return (tally, false);
                            }
                        }
                    }
                    (tally, true)
                })
            })
            .collect();
        let mut done = true;
        for lane in lanes {
            if let Ok((lane_tally, finished)) = lane.await {
                tally.merge(lane_tally);
                done &= finished;
            }
        }
        if done {
            return tally;
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
