//! Service-level bounds a run must keep (`--slo 'p99<250ms,p50<20ms,errors<0.1%'`), so a
//! pipeline can gate a release on a load test: parsed before the run (a bound that cannot be
//! read is the command line's error), checked against each result after it.
//!
//! A bound is `METRIC < VALUE` or `METRIC <= VALUE`. Latency metrics (`p50`, `p90`, `p95`,
//! `p99`, `p999`, `min`, `mean`, `max`; prefixed `first_byte_` for the time to the first byte)
//! take a duration (`250ms`, `1s`, `800us`) and read the corrected latency; `errors` takes a
//! share (`0.1%` or `0.001`) of requests that failed or were answered with a status outside
//! 2xx.

use std::time::Duration;

use crate::report::{Percentiles, Report};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Stat {
    P50,
    P90,
    P95,
    P99,
    P999,
    Min,
    Mean,
    Max,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Metric {
    Latency(Stat),
    FirstByte(Stat),
    Errors,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Bound {
    metric: Metric,
    /// Inclusive (`<=`) or strict (`<`).
    inclusive: bool,
    /// Microseconds for latency, a share (0 to 1) for errors.
    limit: f64,
    /// As the user wrote it, for the message.
    text: String,
}

fn stat(name: &str) -> Option<Stat> {
    Some(match name {
        "p50" => Stat::P50,
        "p90" => Stat::P90,
        "p95" => Stat::P95,
        "p99" => Stat::P99,
        "p999" | "p99.9" => Stat::P999,
        "min" => Stat::Min,
        "mean" => Stat::Mean,
        "max" => Stat::Max,
        _ => return None,
    })
}

/// Every bound of `text`, or the error that names the first one that cannot be read.
pub fn parse(text: &str) -> Result<Vec<Bound>, String> {
    let bad = |part: &str, why: &str| format!("--slo {text:?}: {part:?} {why}");
    let mut bounds = Vec::new();
    for part in text.split(',').map(str::trim) {
        let (name, inclusive, value) = match (part.split_once("<="), part.split_once('<')) {
            (Some((n, v)), _) => (n.trim(), true, v.trim()),
            (None, Some((n, v))) => (n.trim(), false, v.trim()),
            _ => return Err(bad(part, "is not METRIC<VALUE (such as p99<250ms or errors<0.1%)")),
        };
        let metric = match name.strip_prefix("first_byte_").or_else(|| name.strip_prefix("first_byte.")) {
            _ if name == "errors" => Metric::Errors,
            Some(rest) => Metric::FirstByte(stat(rest).ok_or_else(|| bad(part, "names no statistic"))?),
            None => Metric::Latency(stat(name).ok_or_else(|| {
                bad(
                    part,
                    "names no metric (p50, p90, p95, p99, p999, min, mean, max, first_byte_p99, errors)",
                )
            })?),
        };
        let limit = match metric {
            Metric::Errors => {
                let (number, scale) = match value.strip_suffix('%') {
                    Some(n) => (n.trim(), 0.01),
                    None => (value, 1.0),
                };
                match number.parse::<f64>() {
                    Ok(n) if n.is_finite() && n >= 0.0 && n * scale <= 1.0 => n * scale,
                    _ => return Err(bad(part, "needs a share such as 0.1% or 0.001")),
                }
            }
            _ => humantime::parse_duration(value)
                .map(|d: Duration| d.as_secs_f64() * 1e6)
                .map_err(|_| bad(part, "needs a duration such as 250ms, 1s or 800us"))?,
        };
        bounds.push(Bound { metric, inclusive, limit, text: part.to_string() });
    }
    Ok(bounds)
}

fn pick(p: &Percentiles, stat: Stat) -> f64 {
    match stat {
        Stat::P50 => p.p50 as f64,
        Stat::P90 => p.p90 as f64,
        Stat::P95 => p.p95 as f64,
        Stat::P99 => p.p99 as f64,
        Stat::P999 => p.p999 as f64,
        Stat::Min => p.min as f64,
        Stat::Mean => p.mean,
        Stat::Max => p.max as f64,
    }
}

/// The share of requests that failed or got a status outside 2xx.
pub fn error_share(report: &Report) -> f64 {
    if report.requests == 0 {
        return 0.0;
    }
    let failed: u64 = report.errors.values().sum();
    let not_2xx: u64 = report.status.iter().filter(|(code, _)| !code.starts_with('2')).map(|(_, n)| *n).sum();
    (failed + not_2xx) as f64 / report.requests as f64
}

impl Bound {
    /// None when the bound holds; else what was measured, for the message.
    pub fn broken(&self, report: &Report) -> Option<String> {
        let measured = match self.metric {
            Metric::Latency(s) => pick(&report.latency_us, s),
            Metric::FirstByte(s) => pick(&report.first_byte_us, s),
            Metric::Errors => error_share(report),
        };
        let holds = if self.inclusive { measured <= self.limit } else { measured < self.limit };
        if holds {
            return None;
        }
        Some(match self.metric {
            Metric::Errors => format!("{} (measured {:.3}%)", self.text, measured * 100.0),
            _ => format!("{} (measured {:.3}ms)", self.text, measured / 1000.0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_read_as_written_and_bad_ones_are_named() {
        let b = parse("p99<250ms, p50<=20ms,errors<0.1%,first_byte_p95<1s,max<2s").expect("bounds");
        assert_eq!(b.len(), 5);
        assert_eq!((b[0].metric, b[0].inclusive, b[0].limit), (Metric::Latency(Stat::P99), false, 250_000.0));
        assert_eq!((b[1].metric, b[1].inclusive), (Metric::Latency(Stat::P50), true));
        assert_eq!(b[2].metric, Metric::Errors);
        assert!((b[2].limit - 0.001).abs() < 1e-12);
        assert_eq!((b[3].metric, b[3].limit), (Metric::FirstByte(Stat::P95), 1_000_000.0));
        for bad in ["p99", "p42<1ms", "p99<fast", "errors<lots", "errors<200%", "first_byte_p7<1s", "p99>1ms"]
        {
            let e = parse(bad).expect_err(bad);
            assert!(e.starts_with("--slo"), "{bad}: {e}");
        }
    }
}
