//! The gateway's Prometheus metrics (names and labels of CONTRACT.md). `deploy` installs the
//! recorder and serves them; without one (in tests) every call is a no-op. The two latency
//! histograms are counted in [`crate::histogram`] instead, and rendered beside.
//!
//! Label values come from the route table, never from the request, so a client cannot make
//! new series by naming endpoints that do not exist.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use metrics::Counter;

use crate::histogram::{REGISTRY, RequestLatency};
use crate::table::ByName;

pub const REQUESTS: &str = "moat_requests_total";
pub const REQUEST_DURATION: &str = "moat_request_duration_seconds";
pub const UPSTREAM_DURATION: &str = "moat_upstream_duration_seconds";
pub const IN_FLIGHT: &str = "moat_requests_in_flight";
pub const QUEUE_DEPTH: &str = "moat_queue_depth";
pub const MIRROR: &str = "moat_mirror_requests_total";
pub const INGRESS_DENIED: &str = "moat_ingress_denied_total";
pub const SCORING_BYTES: &str = "moat_scoring_bytes_total";
pub const OPEN_CONNECTIONS: &str = "moat_open_connections";

/// What one finished request took and carried.
#[derive(Debug, Clone, Copy)]
pub struct Finished {
    pub code: u16,
    pub duration: Duration,
    pub upstream: Option<Duration>,
    /// Request body bytes read from the client, and answer body bytes sent to it.
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// One finished request.
pub fn request(endpoint: &str, deployment: &str, finished: Finished) {
    let Finished { code, duration, upstream, bytes_in, bytes_out } = finished;
    SERIES.with_borrow_mut(|series| {
        let by_deployment = match series.get_mut(endpoint) {
            Some(found) => found,
            None => series.entry(endpoint.to_string()).or_default(),
        };
        let one = match by_deployment.get_mut(deployment) {
            Some(found) => found,
            None => by_deployment
                .entry(deployment.to_string())
                .or_insert_with(|| Series::new(endpoint, deployment)),
        };
        one.requests(code).increment(1);
        one.bytes_in.increment(bytes_in);
        one.bytes_out.increment(bytes_out);
        one.latency.duration.record(duration);
        if let Some(upstream) = upstream {
            one.latency.upstream.record(upstream);
        }
    });
}

thread_local! {
    /// The request series each worker thread has recorded to, by endpoint and deployment:
    /// through a kept handle a request skips making label strings and looking its series
    /// up in the registry. Labels come from the route table, so this stays small.
    static SERIES: RefCell<ByName<ByName<Series>>> = RefCell::default();
}

struct Series {
    labels: [(&'static str, String); 2],
    codes: Vec<(u16, Counter)>,
    latency: Arc<RequestLatency>,
    /// Per endpoint (every deployment's series holds the same two counters).
    bytes_in: Counter,
    bytes_out: Counter,
}

impl Series {
    fn new(endpoint: &str, deployment: &str) -> Series {
        let labels = [("endpoint", endpoint.to_string()), ("deployment", deployment.to_string())];
        let bytes = |direction: &'static str| metrics::counter!(SCORING_BYTES, "endpoint" => endpoint.to_string(), "direction" => direction);
        Series {
            codes: Vec::new(),
            latency: REGISTRY.series(endpoint, deployment),
            bytes_in: bytes("in"),
            bytes_out: bytes("out"),
            labels,
        }
    }

    fn requests(&mut self, code: u16) -> &Counter {
        let at = match self.codes.iter().position(|(c, _)| *c == code) {
            Some(at) => at,
            None => {
                let [endpoint, deployment] = self.labels.clone();
                let counter =
                    metrics::counter!(REQUESTS, &[endpoint, deployment, ("code", code.to_string())]);
                self.codes.push((code, counter));
                self.codes.len() - 1
            }
        };
        &self.codes[at].1
    }
}

/// Client connections a scoring listener (`http` or `https`) holds open.
pub fn open_connections(listener: &'static str) -> metrics::Gauge {
    metrics::gauge!(OPEN_CONNECTIONS, "listener" => listener)
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
