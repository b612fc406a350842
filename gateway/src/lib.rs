//! moat's gateway: the scoring data plane.
//!
//! A client POSTs JSON to `/endpoints/<endpoint>/score` with a bearer key; the gateway checks
//! the key, picks a deployment and one of its ready instances, and proxies the request.
//!
//! - [`table`]: the route table `deploy` hands over (endpoints, keys, traffic, instances),
//!   swapped atomically and read without locks.
//! - [`shared`]: the [`Gateway`] state every request and connection shares.
//! - [`request`]: the life of one scoring request, phase by phase; [`context`]: what it has
//!   learnt so far, for its log line.
//! - [`fields`]: a request's header fields by name, from a map (HTTP/2) or the head's bytes
//!   (HTTP/1.1).
//! - [`target`]: which endpoint and operation a request URL names.
//! - [`ingress`]: where a request comes from (peer, PROXY header, X-Forwarded-For) and the
//!   public network access policy.
//! - [`auth`]: the credential check: keys (constant time), aml tokens, AAD tokens (JWKS).
//! - [`pick`]: deployment pick (traffic weights, header targeting).
//! - [`load`]: in-flight requests per instance, kept across table swaps.
//! - [`admission`]: per-instance concurrency, the FIFO queue and its limits.
//! - [`intake`]: request bodies, read whole under a deadline and the node's body budget.
//! - [`forward`]: the call to the instance, with its deadline and the one allowed retry.
//! - [`upstream`]: kept-alive connections to the instances, reused call after call; the
//!   answer's body streams on the connection it came on.
//! - [`wire`]: HTTP/1.1 to the containers as bytes: the request encoded once, the answer's
//!   head parsed, its body's framing.
//! - [`answer`]: the body of every answer: moat's own, or the container's relayed as it comes,
//!   with its gap timeout, its size limit and the access line written at its end.
//! - [`reject`]: every way a request ends early, as an HTTP status and a JSON body.
//! - [`mirror`]: copies of live requests to the mirror deployment, off the request's path.
//! - [`access_log`]: the one JSON line per request.
//! - [`health`]: `/healthz` and `/readyz`, outside the request life.
//! - [`http1`]: HTTP/1.1 to the clients, moat's own codec: heads, bodies, one connection's
//!   requests in turn.
//! - [`syntax`]: the grammar of an HTTP/1.1 head, both sides': request and status lines,
//!   field lines.
//! - [`metrics`]: the Prometheus series of CONTRACT.md; [`histogram`]: its two latency
//!   histograms, counted into fixed buckets as requests finish.
//! - [`server`]: the listener's accept loop and graceful shutdown; [`drain`]: the open
//!   connections, asked to end when the node stops.
//! - [`workers`]: the threads that serve connections, one event loop each.
//! - [`timeouts`]: idle and header-read timeouts on each client connection.
//! - [`tls`]: rustls with ALPN, and a certificate reloaded when its files change.
//! - [`trace`]: W3C trace context in and out, a server span per request, OTLP export.

pub mod access_log;
pub mod admission;
pub mod answer;
pub mod auth;
pub mod context;
pub mod drain;
pub mod fields;
pub mod forward;
pub mod health;
pub mod histogram;
pub mod http1;
pub mod ingress;
pub mod intake;
pub mod load;
pub mod metrics;
pub mod mirror;
pub mod pick;
pub mod reject;
pub mod request;
pub mod server;
pub mod shared;
pub mod syntax;
pub mod table;
pub mod target;
pub mod timeouts;
pub mod tls;
pub mod trace;
pub mod upstream;
pub mod wire;
pub mod workers;

pub use access_log::{AccessRecord, LogSink};
pub use admission::{Admission, Admissions, Limits};
pub use load::Load;
pub use server::{serve, serve_tls};
pub use shared::Gateway;
pub use table::{ByName, Credentials, DeploymentRoute, EndpointRoute, RouteTable, Routes, Upstream};

use std::time::Duration;

/// The gateway's settings; `deploy` fills them from the config file and flags.
#[derive(Debug, Clone)]
pub struct Config {
    /// Bodies larger than this get 413.
    pub max_body_bytes: usize,
    /// Request body bytes held at once over all requests; beyond it, 503.
    pub max_buffered_body_bytes: usize,
    /// An answer announcing more is refused (502); one that grows past it is cut.
    pub max_response_bytes: u64,
    /// HTTP/2 streams a client may have open on one connection.
    pub max_streams_per_connection: u32,
    /// A larger request header section gets 431.
    pub max_header_bytes: usize,
    pub header_read_timeout: Duration,
    /// Between requests, a connection silent this long is closed.
    pub idle_timeout: Duration,
    /// Connections beyond this wait in the kernel's backlog until one closes.
    pub max_connections: usize,
    /// With a domain, `<endpoint>.<domain>/score` also names an endpoint.
    pub domain: Option<String>,
    /// Mirror copies in flight at once, over all endpoints; beyond it copies are dropped.
    pub mirror_max_in_flight: usize,
    /// The OpenID issuer for `aad_token` endpoints.
    pub aad: Option<auth::aad::AadConfig>,
    pub ingress: ingress::IngressConfig,
    /// Threads serving client connections, each with its own event loop; 0: one per CPU.
    pub workers: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_body_bytes: 10 * 1024 * 1024,
            max_buffered_body_bytes: 256 * 1024 * 1024,
            max_response_bytes: 100 * 1024 * 1024,
            max_streams_per_connection: 100,
            max_header_bytes: 64 * 1024,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            domain: None,
            mirror_max_in_flight: 64,
            aad: None,
            ingress: ingress::IngressConfig::default(),
            workers: 0,
        }
    }
}
