//! The gateway's Prometheus metrics (names and labels of CONTRACT.md). `deploy` installs the
//! recorder and serves them; without one (in tests) every call is a no-op.
//!
//! Label values come from the route table, never from the request, so a client cannot make
//! new series by naming endpoints that do not exist.

use std::time::Duration;

pub const REQUESTS: &str = "moat_requests_total";
pub const REQUEST_DURATION: &str = "moat_request_duration_seconds";
pub const UPSTREAM_DURATION: &str = "moat_upstream_duration_seconds";
pub const IN_FLIGHT: &str = "moat_requests_in_flight";
pub const QUEUE_DEPTH: &str = "moat_queue_depth";
pub const MIRROR: &str = "moat_mirror_requests_total";
pub const INGRESS_DENIED: &str = "moat_ingress_denied_total";

/// The histograms, for the recorder's bucket setup.
pub const HISTOGRAMS: [&str; 2] = [REQUEST_DURATION, UPSTREAM_DURATION];

/// One finished request.
pub fn request(endpoint: &str, deployment: &str, code: u16, duration: Duration, upstream: Option<Duration>) {
    let labels = [("endpoint", endpoint.to_string()), ("deployment", deployment.to_string())];
    metrics::counter!(REQUESTS, &[labels[0].clone(), labels[1].clone(), ("code", code.to_string())])
        .increment(1);
    metrics::histogram!(REQUEST_DURATION, &labels).record(duration.as_secs_f64());
    if let Some(upstream) = upstream {
        metrics::histogram!(UPSTREAM_DURATION, &labels).record(upstream.as_secs_f64());
    }
}

/// A request (or a connection) the ingress policy refused, or in report mode would have.
pub fn ingress_denied(endpoint: &str, reason: &str, mode: &str) {
    let labels =
        [("endpoint", endpoint.to_string()), ("reason", reason.to_string()), ("mode", mode.to_string())];
    metrics::counter!(INGRESS_DENIED, &labels).increment(1);
}

/// How one mirror copy ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MirrorResult {
    /// Sent, and the mirror answered 2xx.
    Sent,
    /// Sent, but it failed (no answer in time, lost connection, non-2xx).
    Failed,
    /// Not sent: the mirror budget or the mirror deployment had no room.
    Dropped,
}

pub fn mirror(endpoint: &str, deployment: &str, result: MirrorResult) {
    let result = match result {
        MirrorResult::Sent => "sent",
        MirrorResult::Failed => "failed",
        MirrorResult::Dropped => "dropped",
    };
    let labels = [
        ("endpoint", endpoint.to_string()),
        ("deployment", deployment.to_string()),
        ("result", result.into()),
    ];
    metrics::counter!(MIRROR, &labels).increment(1);
}

/// The gauges of one deployment's admission: running plus queued, and queued.
#[derive(Debug, Clone)]
pub struct AdmissionGauges {
    pub in_flight: metrics::Gauge,
    pub queue_depth: metrics::Gauge,
}

impl AdmissionGauges {
    pub fn new(endpoint: &str, deployment: &str) -> AdmissionGauges {
        let labels = [("endpoint", endpoint.to_string()), ("deployment", deployment.to_string())];
        AdmissionGauges {
            in_flight: metrics::gauge!(IN_FLIGHT, &labels),
            queue_depth: metrics::gauge!(QUEUE_DEPTH, &labels),
        }
    }
}
