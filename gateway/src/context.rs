//! What one request has learnt so far, phase by phase; the log phase reads it. Only
//! [`crate::request`] writes it: the phases return what they learn.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::HeaderValue;

use crate::access_log::{AccessRecord, LogSink};
use crate::auth::Verdict;
use crate::metrics;
use crate::table::DeploymentRoute;
use crate::trace::{Outcome, Trace};

#[derive(Debug)]
pub struct RequestCtx {
    pub request_id: RequestId,
    pub started: Instant,
    pub client: Option<IpAddr>,
    pub policy: Option<&'static str>,
    pub endpoint: Option<Arc<str>>,
    pub deployment: Option<Arc<DeploymentRoute>>,
    pub instance: Option<Arc<str>>,
    pub auth_mode: Option<&'static str>,
    pub auth: Option<Verdict>,
    pub upstream: Option<Duration>,
    pub queue: Option<Duration>,
    pub error: Option<String>,
    /// The request body's bytes, once read.
    pub bytes_in: u64,
    /// The request's server span, when tracing is on.
    pub trace: Option<Trace>,
}

impl RequestCtx {
    pub fn new(client: Option<IpAddr>) -> Self {
        RequestCtx {
            request_id: RequestId::new(),
            started: Instant::now(),
            client,
            policy: None,
            endpoint: None,
            deployment: None,
            instance: None,
            auth_mode: None,
            auth: None,
            upstream: None,
            queue: None,
            error: None,
            bytes_in: 0,
            trace: None,
        }
    }

    pub fn deployment_name(&self) -> Option<&str> {
        self.deployment.as_deref().map(|d| &*d.name)
    }

    /// The log phase: the access line and the request's metrics, once the answer has ended
    /// (`bytes_out` of its body sent).
    pub fn log(&self, sink: &LogSink, status: u16, bytes_out: u64) {
        let duration = self.started.elapsed();
        let (endpoint, deployment) =
            (self.endpoint.as_deref().unwrap_or(""), self.deployment_name().unwrap_or(""));
        let finished = metrics::Finished {
            code: status,
            duration,
            upstream: self.upstream,
            bytes_in: self.bytes_in,
            bytes_out,
        };
        metrics::request(endpoint, deployment, finished);
        if let Some(trace) = &self.trace {
            trace.end(Outcome {
                endpoint: self.endpoint.as_deref(),
                deployment: self.deployment_name(),
                instance: self.instance.as_deref(),
                status,
                error: self.error.as_deref(),
            });
        }
        sink(&AccessRecord {
            time: SystemTime::now(),
            request_id: &self.request_id,
            endpoint: self.endpoint.as_deref(),
            deployment: self.deployment_name(),
            instance: self.instance.as_deref(),
            status,
            duration,
            upstream: self.upstream,
            queue: self.queue,
            client: self.client,
            auth_mode: self.auth_mode,
            auth: self.auth.map(Verdict::as_str),
            policy: self.policy,
            error: self.error.as_deref(),
            trace_id: self.trace.as_ref().map(Trace::trace_id),
        });
    }
}

/// A request's id (a random UUID) as its 36 bytes of text: it goes to the container and back
/// to the client as `x-request-id`, and into the log and error bodies. Kept inline rather than
/// as a header value: a shared header value cost an allocation and reference counts on each
/// request's path, and only the client's copy needs one.
#[derive(Debug, Clone)]
pub struct RequestId([u8; uuid::fmt::Hyphenated::LENGTH]);

impl RequestId {
    pub fn new() -> RequestId {
        let id = uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes()).into_uuid();
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        id.hyphenated().encode_lower(&mut text);
        RequestId(text)
    }

    pub fn as_str(&self) -> &str {
        // Hex digits and hyphens: always text.
        std::str::from_utf8(&self.0).unwrap_or("-")
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn header(&self) -> HeaderValue {
        HeaderValue::from_bytes(&self.0).unwrap_or(HeaderValue::from_static("-"))
    }
}

impl Default for RequestId {
    fn default() -> Self {
        RequestId::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_id_is_a_fresh_uuid_as_text_and_as_a_header() {
        let (a, b) = (RequestId::new(), RequestId::new());
        assert_ne!(a.as_str(), b.as_str());
        let parsed = uuid::Uuid::parse_str(a.as_str()).expect("a uuid");
        assert_eq!(parsed.hyphenated().to_string(), a.as_str(), "lower case, hyphenated");
        assert_eq!((a.header().as_bytes(), a.as_bytes()), (a.as_str().as_bytes(), a.as_str().as_bytes()));
    }
}
