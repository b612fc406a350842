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
            request_id: self.request_id.as_str(),
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

/// A request's id (a random UUID), kept as a header value: it goes to the container and back
/// to the client as `x-request-id`, and as text into the log and error bodies.
#[derive(Debug, Clone)]
pub struct RequestId(HeaderValue);

impl RequestId {
    pub fn new() -> RequestId {
        let id = uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes()).into_uuid();
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        RequestId(
            HeaderValue::from_str(id.hyphenated().encode_lower(&mut text))
                .unwrap_or(HeaderValue::from_static("-")),
        )
    }

    pub fn as_str(&self) -> &str {
        // Hex digits and hyphens: always text.
        self.0.to_str().unwrap_or("-")
    }

    pub fn header(&self) -> HeaderValue {
        self.0.clone()
    }
}

impl Default for RequestId {
    fn default() -> Self {
        RequestId::new()
    }
}
