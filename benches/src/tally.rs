//! What one connection saw, merged into the run's totals at the end: latency histograms
//! (corrected: from the due time; uncorrected: from the send), status codes, errors, and
//! how many requests left late.

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
    pub status: BTreeMap<u16, u64>,
    pub errors: BTreeMap<ErrorKind, u64>,
    pub late: u64,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("constant, valid bounds")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).clamp(1, MAX_MICROS)
}

impl Tally {
    pub fn new() -> Tally {
        Tally {
            latency: histogram(),
            uncorrected: histogram(),
            status: BTreeMap::new(),
            errors: BTreeMap::new(),
            late: 0,
        }
    }

    pub fn started(&mut self, due: Instant, started: Instant) {
        if started.saturating_duration_since(due) > LATE {
            self.late += 1;
        }
    }

    pub fn answered(&mut self, due: Instant, started: Instant, ended: Instant, status: u16) {
        self.latency.saturating_record(micros(ended - due));
        self.uncorrected.saturating_record(micros(ended - started));
        *self.status.entry(status).or_default() += 1;
    }

    pub fn failed(&mut self, kind: ErrorKind) {
        *self.errors.entry(kind).or_default() += 1;
    }

    pub fn requests(&self) -> u64 {
        self.status.values().sum::<u64>() + self.errors.values().sum::<u64>()
    }

    pub fn merge(&mut self, other: Tally) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.latency.add(&other.latency);
        let _ = self.uncorrected.add(&other.uncorrected);
        for (code, n) in other.status {
            *self.status.entry(code).or_default() += n;
        }
        for (kind, n) in other.errors {
            *self.errors.entry(kind).or_default() += n;
        }
        self.late += other.late;
    }
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
        a.answered(due, started, ended, 200);
        let mut b = Tally::new();
        b.started(due, due);
        b.failed(ErrorKind::Reset);
        a.merge(b);
        assert_eq!((a.late, a.requests()), (1, 2));
        assert!((5990..=6010).contains(&a.latency.max()), "{}", a.latency.max());
        assert!((995..=1005).contains(&a.uncorrected.max()), "{}", a.uncorrected.max());
        assert_eq!(a.errors[&ErrorKind::Reset], 1);
    }
}
