//! The two request latency histograms of CONTRACT.md, counted as requests finish: per
//! endpoint and deployment, a fixed row of bucket counters, rendered at scrape time in
//! Prometheus's text format beside the recorder's other series.
//!
//! Not the recorder's own histograms: metrics-exporter-prometheus keeps every sample with a
//! clock reading until its upkeep sorts them into buckets, so each request paid a clock
//! reading and a queued sample per histogram, and the queue grew with the request rate
//! between upkeeps. Here a sample is a bucket search and two atomic additions, and the
//! memory is fixed by the number of series.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::metrics::{REQUEST_DURATION, UPSTREAM_DURATION};

/// The buckets' upper bounds (`le`), from half a millisecond to the longest request timeout.
pub const BOUNDS: [Duration; 16] = [
    Duration::from_micros(500),
    Duration::from_millis(1),
    Duration::from_micros(2_500),
    Duration::from_millis(5),
    Duration::from_millis(10),
    Duration::from_millis(25),
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_millis(2_500),
    Duration::from_secs(5),
    Duration::from_secs(10),
    Duration::from_secs(30),
    Duration::from_secs(180),
];

/// One histogram series: how many samples fell in each bucket (the last one is `+Inf`), not
/// yet cumulative, and their sum.
#[derive(Debug, Default)]
pub struct Latency {
    buckets: [AtomicU64; BOUNDS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Latency {
    pub fn record(&self, took: Duration) {
        let bucket = BOUNDS.partition_point(|bound| *bound < took);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The cumulative counts, one per bound and `+Inf` last, and the sum in seconds. The
    /// count is the `+Inf` bucket, so the two always agree even while requests finish.
    fn snapshot(&self) -> ([u64; BOUNDS.len() + 1], f64) {
        let mut total = 0;
        let counts = std::array::from_fn(|at| {
            total += self.buckets[at].load(Ordering::Relaxed);
            total
        });
        (counts, Duration::from_nanos(self.sum_nanos.load(Ordering::Relaxed)).as_secs_f64())
    }
}

/// A deployment's two histograms: the whole request through moat, and the container's part.
#[derive(Debug, Default)]
pub struct RequestLatency {
    pub duration: Latency,
    pub upstream: Latency,
}

/// Every series recorded to, by endpoint and deployment. Labels come from the route table,
/// so it stays small; series live as long as the process, as the recorder's do.
#[derive(Debug, Default)]
pub struct Registry {
    series: Mutex<Vec<Series>>,
}

#[derive(Debug)]
struct Series {
    endpoint: String,
    deployment: String,
    latency: Arc<RequestLatency>,
}

/// The process's histograms, which the gateway records to and `/metrics` renders.
pub static REGISTRY: Registry = Registry { series: Mutex::new(Vec::new()) };

/// Each histogram: its name, its `# HELP` text, and which of a series' two it is.
type Family = (&'static str, &'static str, fn(&RequestLatency) -> &Latency);

const FAMILIES: [Family; 2] = [
    (
        REQUEST_DURATION,
        "Scoring request latency through moat, from the request's arrival to its answer",
        |latency| &latency.duration,
    ),
    (UPSTREAM_DURATION, "Time the scoring container took to answer a request moat sent it", |latency| {
        &latency.upstream
    }),
];

impl Registry {
    /// The series of one endpoint and deployment, made on first use.
    pub fn series(&self, endpoint: &str, deployment: &str) -> Arc<RequestLatency> {
        let mut series = self.series.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(found) = series.iter().find(|s| s.endpoint == endpoint && s.deployment == deployment) {
            return found.latency.clone();
        }
        let latency = Arc::new(RequestLatency::default());
        series.push(Series {
            endpoint: endpoint.to_string(),
            deployment: deployment.to_string(),
            latency: latency.clone(),
        });
        latency
    }

    /// Both histograms in the Prometheus text format (0.0.4), each series once it has a
    /// sample.
    pub fn render(&self, out: &mut String) {
        let series = self.series.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for (name, help, which) in FAMILIES {
            let recorded: Vec<_> = series
                .iter()
                .map(|s| (s, which(&s.latency).snapshot()))
                .filter(|(_, (counts, _))| counts[BOUNDS.len()] > 0)
                .collect();
            if recorded.is_empty() {
                continue;
            }
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            for (s, (counts, sum)) in recorded {
                let labels = format!(
                    "endpoint=\"{}\",deployment=\"{}\"",
                    label_value(&s.endpoint),
                    label_value(&s.deployment)
                );
                for (bound, count) in BOUNDS.iter().zip(counts) {
                    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{}\"}} {count}", bound.as_secs_f64());
                }
                let count = counts[BOUNDS.len()];
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
                let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}\n{name}_count{{{labels}}} {count}");
            }
            out.push('\n');
        }
    }
}

/// A label value as the text format wants it: backslash, double quote and line feed escaped.
fn label_value(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    #[test]
    fn a_sample_on_a_bound_counts_in_that_bound_and_one_past_it_in_the_next() {
        let cases = [
            (Duration::ZERO, 0),
            (Duration::from_micros(500), 0),
            (Duration::from_nanos(500_001), 1),
            (ms(1), 1),
            (ms(180_000), BOUNDS.len() - 1),
            (ms(180_001), BOUNDS.len()),
            (Duration::MAX, BOUNDS.len()),
        ];
        for (took, bucket) in cases {
            let latency = Latency::default();
            latency.record(took);
            let (counts, _) = latency.snapshot();
            let first = counts.iter().position(|c| *c == 1);
            assert_eq!(first, Some(bucket), "{took:?}");
        }
    }

    #[test]
    fn the_text_has_cumulative_buckets_a_count_and_a_sum_in_seconds() {
        let registry = Registry::default();
        let blue = registry.series("ep", "blue");
        for took in [ms(3), ms(3), ms(40), ms(200_000)] {
            blue.duration.record(took);
        }
        blue.upstream.record(ms(2));
        let mut text = String::new();
        registry.render(&mut text);

        let line = |start: &str| {
            let found = text.lines().find(|l| l.starts_with(start));
            found.unwrap_or_else(|| panic!("no {start} in\n{text}")).rsplit(' ').next().map(str::to_string)
        };
        let series = "moat_request_duration_seconds_bucket{endpoint=\"ep\",deployment=\"blue\"";
        assert_eq!(line(&format!("{series},le=\"0.0025\"}}")).as_deref(), Some("0"));
        assert_eq!(line(&format!("{series},le=\"0.005\"}}")).as_deref(), Some("2"));
        assert_eq!(line(&format!("{series},le=\"0.05\"}}")).as_deref(), Some("3"));
        assert_eq!(line(&format!("{series},le=\"180\"}}")).as_deref(), Some("3"));
        assert_eq!(line(&format!("{series},le=\"+Inf\"}}")).as_deref(), Some("4"));
        assert_eq!(line("moat_request_duration_seconds_count{").as_deref(), Some("4"));
        assert_eq!(line("moat_request_duration_seconds_sum{").as_deref(), Some("200.046"));
        assert_eq!(line("moat_upstream_duration_seconds_count{").as_deref(), Some("1"));
        assert!(text.contains("# TYPE moat_request_duration_seconds histogram\n"), "{text}");
        assert!(text.contains("# HELP moat_upstream_duration_seconds "), "{text}");
    }

    #[test]
    fn a_series_without_samples_is_left_out_and_one_series_is_made_once() {
        let registry = Registry::default();
        let first = registry.series("ep", "blue");
        assert!(Arc::ptr_eq(&first, &registry.series("ep", "blue")));
        first.duration.record(ms(1));
        let mut text = String::new();
        registry.render(&mut text);
        assert!(text.contains("moat_request_duration_seconds_count{endpoint=\"ep\",deployment=\"blue\"} 1"));
        assert!(!text.contains("moat_upstream_duration_seconds"), "{text}");
    }

    #[test]
    fn label_values_are_escaped() {
        let registry = Registry::default();
        registry.series("a\"b", "c\\d\ne").duration.record(ms(1));
        let mut text = String::new();
        registry.render(&mut text);
        assert!(text.contains(r#"{endpoint="a\"b",deployment="c\\d\ne",le="0.001"} 1"#), "{text}");
    }
}
