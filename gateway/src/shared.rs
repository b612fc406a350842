//! What every request and connection of the gateway shares: its settings, the route table,
//! the AAD key set, the access log, the mirror budget and the body budget. Built once by `deploy`.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::Config;
use crate::access_log::LogSink;
use crate::auth::aad::Aad;
use crate::health::Health;
use crate::intake::Budget;
use crate::table::Routes;
use crate::trace::Tracing;

pub struct Gateway {
    pub config: Config,
    /// The OpenID issuer's key set, when `auth.aad` is configured.
    pub aad: Option<Arc<Aad>>,
    pub routes: Routes,
    pub log: LogSink,
    /// Mirror copies in flight at once, over all endpoints (`mirror_max_in_flight`).
    pub mirror_budget: Arc<Semaphore>,
    /// What `/readyz` answers; `deploy` keeps it.
    pub health: Arc<Health>,
    /// Request body bytes held at once, over all requests (`max_buffered_body_bytes`).
    pub body_budget: Arc<Budget>,
    /// The export pipeline of server spans, when `tracing.otlp_endpoint` is set.
    pub tracing: Option<Tracing>,
}

impl Gateway {
    pub fn new(config: Config, routes: Routes, log: LogSink) -> Arc<Gateway> {
        Gateway::traced(config, routes, log, None)
    }

    /// A gateway whose requests are server spans of `tracing` (see [`Tracing::start`]).
    pub fn traced(config: Config, routes: Routes, log: LogSink, tracing: Option<Tracing>) -> Arc<Gateway> {
        let mirror_budget = Arc::new(Semaphore::new(config.mirror_max_in_flight));
        let aad = config.aad.clone().map(|c| Arc::new(Aad::new(c)));
        let body_budget = Budget::new(config.max_buffered_body_bytes);
        let health = Arc::default();
        Arc::new(Gateway { config, aad, routes, log, mirror_budget, health, body_budget, tracing })
    }
}
