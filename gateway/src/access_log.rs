//! The access log: one JSON line per request, rejected ones included, with the fields of
//! CONTRACT.md. Never a key, a token or a body.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

/// Where access lines go; `deploy` writes them to stderr or the log file off the request path.
pub type LogSink = Arc<dyn Fn(&AccessRecord) + Send + Sync>;

#[derive(Debug, Serialize)]
pub struct AccessRecord {
    pub time: String,
    pub request_id: String,
    pub endpoint: Option<String>,
    pub deployment: Option<String>,
    pub instance: Option<String>,
    pub status: u16,
    pub duration_ms: f64,
    pub upstream_ms: Option<f64>,
    pub queue_ms: Option<f64>,
    pub client: Option<IpAddr>,
    pub auth_mode: Option<&'static str>,
    pub auth: Option<&'static str>,
    pub policy: Option<&'static str>,
    pub error: Option<String>,
}

pub fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// A sink that drops every line, for tests that do not read the log.
pub fn discard() -> LogSink {
    Arc::new(|_| {})
}
