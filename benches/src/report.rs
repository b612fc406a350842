//! The result of a run: the JSON that scripts read (`--json`) and the summary people read.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::tally::Tally;
use crate::target::ErrorKind;

#[derive(Debug, Serialize)]
pub struct Report {
    /// The asked rate (open loop); in a closed loop, the achieved one.
    pub offered_rps: f64,
    pub achieved_rps: f64,
    pub duration_s: f64,
    /// Requests that ended: answered with any status, or failed.
    pub requests: u64,
    pub late: u64,
    pub status: BTreeMap<String, u64>,
    pub errors: BTreeMap<&'static str, u64>,
    pub latency_us: Percentiles,
    pub uncorrected_latency_us: Percentiles,
}

#[derive(Debug, Serialize)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Percentiles {
        let at = |q: f64| if h.is_empty() { 0 } else { h.value_at_quantile(q) };
        Percentiles { p50: at(0.5), p90: at(0.9), p99: at(0.99), p999: at(0.999), max: h.max() }
    }
}

impl Report {
    pub fn new(tally: &Tally, rate: Option<f64>, elapsed: Duration) -> Report {
        let duration_s = elapsed.as_secs_f64();
        let requests = tally.requests();
        let achieved_rps = if duration_s > 0.0 { requests as f64 / duration_s } else { 0.0 };
        let kinds =
            [ErrorKind::Connect, ErrorKind::Timeout, ErrorKind::Reset, ErrorKind::Tls, ErrorKind::Protocol];
        Report {
            offered_rps: rate.unwrap_or(achieved_rps),
            achieved_rps,
            duration_s,
            requests,
            late: tally.late,
            status: tally.status.iter().map(|(code, n)| (code.to_string(), *n)).collect(),
            errors: kinds.iter().map(|k| (k.name(), tally.errors.get(k).copied().unwrap_or(0))).collect(),
            latency_us: Percentiles::of(&tally.latency),
            uncorrected_latency_us: Percentiles::of(&tally.uncorrected),
        }
    }

    pub fn human(&self, connections: usize, open_loop: bool) -> String {
        let mut out = String::new();
        let mode =
            if open_loop { format!("open loop at {:.0}/s", self.offered_rps) } else { "closed loop".into() };
        let _ = writeln!(
            out,
            "{} requests in {:.2}s over {connections} connections, {mode}",
            self.requests, self.duration_s
        );
        let _ = writeln!(out, "  rate      {:.1}/s achieved", self.achieved_rps);
        if open_loop {
            let _ = writeln!(out, "  late      {} started more than 1 ms after they were due", self.late);
        }
        let p = |name: &str, l: &Percentiles| {
            format!(
                "  {name:<9} p50 {}  p90 {}  p99 {}  p99.9 {}  max {}\n",
                ms(l.p50),
                ms(l.p90),
                ms(l.p99),
                ms(l.p999),
                ms(l.max)
            )
        };
        out.push_str(&p("latency", &self.latency_us));
        if open_loop {
            out.push_str(&p("(sent)", &self.uncorrected_latency_us));
        }
        let status: Vec<String> = self.status.iter().map(|(c, n)| format!("{c}: {n}")).collect();
        let _ = writeln!(
            out,
            "  status    {}",
            if status.is_empty() { "none".into() } else { status.join(", ") }
        );
        let errors: Vec<String> =
            self.errors.iter().filter(|(_, n)| **n > 0).map(|(k, n)| format!("{k}: {n}")).collect();
        let _ = writeln!(
            out,
            "  errors    {}",
            if errors.is_empty() { "none".into() } else { errors.join(", ") }
        );
        out
    }
}

fn ms(micros: u64) -> String {
    format!("{:.2}ms", micros as f64 / 1000.0)
}
