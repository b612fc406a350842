//! One JSON line per egress decision (CONTRACT.md's fields) and its metrics. Every decision
//! is counted; the line may be left out ([`crate::scope::Scope::record`] rates them per
//! deployment and kind), so a container cannot flood the log.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::acl::Reason;

/// Where decision lines go; `deploy` writes them beside the access log.
pub type DecisionSink = Arc<dyn Fn(&Decision) + Send + Sync>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Dns,
    Tcp,
    Tls,
    Connect,
    Http,
}

impl Kind {
    pub const ALL: [Kind; 5] = [Kind::Dns, Kind::Tcp, Kind::Tls, Kind::Connect, Kind::Http];

    pub fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub time: String,
    pub endpoint: String,
    pub deployment: String,
    pub instance: Option<String>,
    pub client: IpAddr,
    pub kind: Kind,
    pub target: String,
    pub decision: &'static str,
    pub reason: &'static str,
    pub bytes_out: u64,
    pub bytes_in: u64,
}

pub const DECISIONS: &str = "moat_egress_decisions_total";
pub const BYTES: &str = "moat_egress_bytes_total";

/// Who made the connection or the query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Who {
    pub endpoint: String,
    pub deployment: String,
    pub instance: Option<String>,
    pub client: IpAddr,
}

/// Records one decision: metrics always, the log line unless rate-limited.
pub fn record(
    sink: &DecisionSink,
    who: &Who,
    kind: Kind,
    target: &str,
    reason: Reason,
    bytes: (u64, u64),
    log: bool,
) {
    let decision = if reason == Reason::Allowlisted { "allow" } else { "deny" };
    let labels = [
        ("endpoint", who.endpoint.clone()),
        ("deployment", who.deployment.clone()),
        ("decision", decision.to_string()),
        ("reason", reason.as_str().to_string()),
    ];
    metrics::counter!(DECISIONS, &labels).increment(1);
    for (direction, n) in [("out", bytes.0), ("in", bytes.1)] {
        if n > 0 {
            let labels = [
                ("endpoint", who.endpoint.clone()),
                ("deployment", who.deployment.clone()),
                ("direction", direction.to_string()),
            ];
            metrics::counter!(BYTES, &labels).increment(n);
        }
    }
    if log {
        sink(&Decision {
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            endpoint: who.endpoint.clone(),
            deployment: who.deployment.clone(),
            instance: who.instance.clone(),
            client: who.client,
            kind,
            target: target.to_string(),
            decision,
            reason: reason.as_str(),
            bytes_out: bytes.0,
            bytes_in: bytes.1,
        });
    }
}

/// At most `per_second` lines a second.
#[derive(Debug, Default)]
pub struct RateLimit {
    /// Second of the current window (since the epoch) and lines in it, packed.
    window: AtomicU64,
}

impl RateLimit {
    pub fn allow(&self, per_second: u32) -> bool {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let packed = self.window.load(Ordering::Relaxed);
        let (second, count) = (packed >> 32, packed & 0xFFFF_FFFF);
        let next = if second == now & 0xFFFF_FFFF { (now << 32) | (count + 1) } else { (now << 32) | 1 };
        self.window.store(next, Ordering::Relaxed);
        (next & 0xFFFF_FFFF) <= u64::from(per_second)
    }
}

/// Decisions go nowhere (tests that do not read them).
pub fn discard() -> DecisionSink {
    Arc::new(|_| {})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_refusals_logs_a_few_lines_a_second() {
        let limit = RateLimit::default();
        let logged = (0..1000).filter(|_| limit.allow(5)).count();
        // Five a second; ten if the loop straddles a second boundary.
        assert!((5..=10).contains(&logged), "{logged} lines logged");
    }
}
