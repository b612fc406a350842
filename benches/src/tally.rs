//! What one connection saw, merged into the run's totals at the end: latency histograms
//! (corrected: from the due time; uncorrected: from the send; to the first byte, from the
//! due time), status codes, errors, how many requests left late, and (for `--timeline`) the
//! same per second of the run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::target::ErrorKind;

/// A request is late when it starts more than this after its due time.
pub const LATE: Duration = Duration::from_millis(1);
/// The histograms' range: 1 µs to an hour, three significant digits.
const MAX_MICROS: u64 = 3_600_000_000;

pub struct Tally {
    pub latency: Histogram<u64>,
    pub uncorrected: Histogram<u64>,
    pub first_byte: Histogram<u64>,
    pub status: BTreeMap<u16, u64>,
    pub errors: BTreeMap<ErrorKind, u64>,
    pub late: u64,
    /// Per second since the run's start, when a timeline is asked for.
    pub timeline: Option<Timeline>,
}

/// Requests by the second they ended in.
pub struct Timeline {
    start: Instant,
    /// The run's last second: requests that end after the run's time count in it.
    last: Option<usize>,
    pub seconds: Vec<Second>,
}

pub struct Second {
    pub requests: u64,
    /// Failed, or answered outside 2xx.
    pub errors: u64,
    pub latency: Histogram<u64>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("constant, valid bounds")
}

impl Timeline {
    pub fn new(start: Instant, last: Option<usize>) -> Timeline {
        Timeline { start, last, seconds: Vec::new() }
    }

    fn second(&mut self, at: Instant) -> &mut Second {
        let index = at.saturating_duration_since(self.start).as_secs() as usize;
        let index = self.last.map_or(index, |last| index.min(last));
        while self.seconds.len() <= index {
            // Two significant digits: a second's percentiles, not a run's.
            let latency = Histogram::new_with_bounds(1, MAX_MICROS, 2).expect("constant, valid bounds");
            self.seconds.push(Second { requests: 0, errors: 0, latency });
        }
        &mut self.seconds[index]
    }

    fn merge(&mut self, other: Timeline) {
        for (index, theirs) in other.seconds.into_iter().enumerate() {
            let at = self.start + std::time::Duration::from_secs(index as u64);
            let mine = self.second(at);
            mine.requests += theirs.requests;
            mine.errors += theirs.errors;
            let _ = mine.latency.add(&theirs.latency);
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).clamp(1, MAX_MICROS)
}

impl Default for Tally {
    fn default() -> Tally {
        Tally::new()
    }
}

impl Tally {
    pub fn new() -> Tally {
        Tally {
            latency: histogram(),
            uncorrected: histogram(),
            first_byte: histogram(),
            status: BTreeMap::new(),
            errors: BTreeMap::new(),
            late: 0,
            timeline: None,
        }
    }

    pub fn started(&mut self, due: Instant, started: Instant) {
        if started.saturating_duration_since(due) > LATE {
            self.late += 1;
        }
    }

    pub fn answered(&mut self, due: Instant, started: Instant, answer: Answer) {
        let Answer { first_byte, ended, status } = answer;
        self.latency.saturating_record(micros(ended - due));
        self.uncorrected.saturating_record(micros(ended - started));
        self.first_byte.saturating_record(micros(first_byte.saturating_duration_since(due)));
        *self.status.entry(status).or_default() += 1;
        if let Some(timeline) = &mut self.timeline {
            let second = timeline.second(ended);
            second.requests += 1;
            second.errors += u64::from(!(200..300).contains(&status));
            second.latency.saturating_record(micros(ended - due));
        }
    }

    pub fn failed(&mut self, kind: ErrorKind, at: Instant) {
        *self.errors.entry(kind).or_default() += 1;
        if let Some(timeline) = &mut self.timeline {
            let second = timeline.second(at);
            second.requests += 1;
            second.errors += 1;
        }
    }

    pub fn requests(&self) -> u64 {
        self.status.values().sum::<u64>() + self.errors.values().sum::<u64>()
    }

    pub fn merge(&mut self, other: Tally) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.latency.add(&other.latency);
        let _ = self.uncorrected.add(&other.uncorrected);
        let _ = self.first_byte.add(&other.first_byte);
        match (&mut self.timeline, other.timeline) {
            (Some(mine), Some(theirs)) => mine.merge(theirs),
            (mine @ None, theirs @ Some(_)) => *mine = theirs,
            _ => {}
        }
        for (code, n) in other.status {
            *self.status.entry(code).or_default() += n;
        }
        for (kind, n) in other.errors {
            *self.errors.entry(kind).or_default() += n;
        }
        self.late += other.late;
    }
}

/// When an answer's first and last bytes came, and its status.
pub struct Answer {
    pub first_byte: Instant,
    pub ended: Instant,
    pub status: u16,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrected_latency_counts_from_the_due_time_and_late_starts_are_counted() {
        let due = Instant::now();
        let (started, ended) = (due + Duration::from_millis(5), due + Duration::from_millis(6));
        let mut a = Tally::new();
        a.started(due, started);
        let first_byte = due + Duration::from_millis(5) + Duration::from_micros(200);
        a.answered(due, started, Answer { first_byte, ended, status: 200 });
        let mut b = Tally::new();
        b.started(due, due);
        b.failed(ErrorKind::Reset, ended);
        a.merge(b);
        assert_eq!((a.late, a.requests()), (1, 2));
        assert!((5990..=6010).contains(&a.latency.max()), "{}", a.latency.max());
        assert!((995..=1005).contains(&a.uncorrected.max()), "{}", a.uncorrected.max());
        assert!((5195..=5205).contains(&a.first_byte.max()), "{}", a.first_byte.max());
        assert_eq!(a.errors[&ErrorKind::Reset], 1);
    }
}
