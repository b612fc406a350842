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
    /// To the answer's last byte.
    pub latency_us: Percentiles,
    pub uncorrected_latency_us: Percentiles,
    /// To the answer's first byte (corrected like `latency_us`): a streamed answer's first
    /// event.
    pub first_byte_us: Percentiles,
}

#[derive(Debug, Serialize)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p95: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub min: u64,
    pub mean: f64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Percentiles {
        let at = |q: f64| if h.is_empty() { 0 } else { h.value_at_quantile(q) };
        let (min, mean) = if h.is_empty() { (0, 0.0) } else { (h.min(), (h.mean() * 10.0).round() / 10.0) };
        Percentiles {
            p50: at(0.5),
            p90: at(0.9),
            p95: at(0.95),
            p99: at(0.99),
            p999: at(0.999),
            max: h.max(),
            min,
            mean,
        }
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
            first_byte_us: Percentiles::of(&tally.first_byte),
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
                "  {name:<10} min {}  mean {}  p50 {}  p90 {}  p95 {}  p99 {}  p99.9 {}  max {}\n",
                ms(l.min),
                ms(l.mean.round() as u64),
                ms(l.p50),
                ms(l.p90),
                ms(l.p95),
                ms(l.p99),
                ms(l.p999),
                ms(l.max)
            )
        };
        out.push_str(&p("latency", &self.latency_us));
        if open_loop {
            out.push_str(&p("(sent)", &self.uncorrected_latency_us));
        }
        out.push_str(&p("first byte", &self.first_byte_us));
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

/// The steps of a `--rates` ladder as a table; the knee (the first step whose p99 is more than
/// twice the first step's) is marked.
pub fn ladder(steps: &[&Report]) -> String {
    let mut out = String::from("  offered/s  achieved/s      p50      p90      p99    p99.9   errors\n");
    let floor = steps.first().map_or(0, |s| s.latency_us.p99);
    let knee = steps.iter().position(|s| s.latency_us.p99 > 2 * floor);
    for (i, s) in steps.iter().enumerate() {
        let _ = writeln!(
            out,
            "  {:>9.0}  {:>10.1}  {:>7}  {:>7}  {:>7}  {:>7}  {:>6.2}%{}",
            s.offered_rps,
            s.achieved_rps,
            ms(s.latency_us.p50),
            ms(s.latency_us.p90),
            ms(s.latency_us.p99),
            ms(s.latency_us.p999),
            crate::slo::error_share(s) * 100.0,
            if knee == Some(i) { "  <- knee: p99 over twice the first step's" } else { "" }
        );
    }
    out
}

/// The latency distribution as wrk2 prints it: each percentile HdrHistogram iterates to
/// (halving the distance to 100 % each time), in milliseconds.
pub fn spectrum(h: &Histogram<u64>) -> String {
    let mut out = String::from("  Detailed Percentile spectrum:\n");
    out.push_str("       Value   Percentile   TotalCount 1/(1-Percentile)\n\n");
    let mut total = 0;
    for v in h.iter_quantiles(1) {
        total += v.count_since_last_iteration();
        let (value, q) = (v.value_iterated_to() as f64 / 1000.0, v.quantile_iterated_to());
        if q < 1.0 {
            let _ = writeln!(out, "{value:12.3} {q:12.6} {total:12} {:12.2}", 1.0 / (1.0 - q));
        } else {
            let _ = writeln!(out, "{value:12.3} {q:12.6} {total:12}");
        }
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
        h.mean() / 1000.0,
        h.stdev() / 1000.0
    );
    let _ = writeln!(out, "#[Max     = {:12.3}, Total count    = {:12}]", h.max() as f64 / 1000.0, h.len());
    let sub_buckets = (2 * 10u64.pow(u32::from(h.sigfig()))).next_power_of_two();
    let _ = writeln!(out, "#[Buckets = {:12}, SubBuckets     = {:12}]", h.buckets(), sub_buckets);
    out
}

fn ms(micros: u64) -> String {
    format!("{:.2}ms", micros as f64 / 1000.0)
}
