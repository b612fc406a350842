//! When each request is due. Closed loop: whenever a connection is free, until the count or
//! the time runs out. Open loop: a pacer thread releases request `i` at `start + i / rate`
//! whether or not a connection is free to take it, so a stalled server makes requests wait
//! and their latency (counted from the due time) shows the stall: no coordinated omission.
//! The pacer sleeps on a thread of its own because tokio's timer ticks in whole
//! milliseconds, coarser than the gaps between requests at a few thousand a second.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::cli::Stop;

/// Due times waiting for a connection, at most; beyond it the pacer waits (due times stay
/// exact, so latency is still counted from them).
const BACKLOG: usize = 1 << 16;

pub enum Slots {
    Closed { left: AtomicU64, until: Option<Instant> },
    Open(async_channel::Receiver<Instant>),
}

/// What a connection does next.
pub enum Slot {
    /// Send now (closed loop).
    Now,
    /// Send; the request was due at this instant (open loop).
    Due(Instant),
}

impl Slots {
    pub fn closed(stop: Stop, start: Instant) -> Slots {
        match stop {
            Stop::After(n) => Slots::Closed { left: AtomicU64::new(n), until: None },
            Stop::At(d) => Slots::Closed { left: AtomicU64::new(u64::MAX), until: Some(start + d) },
        }
    }

    /// Starts the pacer thread; it ends when the run's count or time is used up.
    pub fn open(rate: f64, stop: Stop, start: Instant) -> Slots {
        let (sender, receiver) = async_channel::bounded(BACKLOG);
        std::thread::spawn(move || {
            // Linux lets a sleeping thread oversleep by 50 µs by default; the pacer asks for
            // its wake-ups on time.
            // SAFETY: PR_SET_TIMERSLACK takes a plain integer and touches this thread only.
            unsafe {
                libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
            }
            for i in 0u64.. {
                let due = start + Duration::from_secs_f64(i as f64 / rate);
                match stop {
                    Stop::After(n) if i >= n => break,
                    Stop::At(d) if due >= start + d => break,
                    _ => {}
                }
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                if sender.send_blocking(due).is_err() {
                    break;
                }
            }
        });
        Slots::Open(receiver)
    }

    /// The next request to send, or None when the run is over.
    pub async fn next(&self) -> Option<Slot> {
        match self {
            Slots::Closed { left, until } => {
                if until.is_some_and(|u| Instant::now() >= u) {
                    return None;
                }
                left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).ok()?;
                Some(Slot::Now)
            }
            Slots::Open(receiver) => receiver.recv().await.ok().map(Slot::Due),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_loop_hands_out_exactly_n_requests() {
        let slots = Slots::closed(Stop::After(3), Instant::now());
        let mut n = 0;
        while slots.next().await.is_some() {
            n += 1;
        }
        assert_eq!(n, 3);
    }

    #[tokio::test]
    async fn an_open_loop_spaces_due_times_by_the_rate_and_stops_at_the_duration() {
        let start = Instant::now();
        let slots = Slots::open(1000.0, Stop::At(Duration::from_millis(50)), start);
        let mut due = Vec::new();
        while let Some(Slot::Due(at)) = slots.next().await {
            due.push(at.duration_since(start));
        }
        assert_eq!(due.len(), 50);
        assert_eq!(due[10], Duration::from_millis(10));
        assert_eq!(due[49], Duration::from_millis(49));
    }
}
