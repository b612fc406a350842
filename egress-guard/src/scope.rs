//! What the guard knows about one private deployment: its endpoints, which of its instances
//! has which address (for attribution), where decisions are recorded, and what it may take of
//! the daemon: a cap on its open connections and the time each exchange may take, so one
//! container cannot hold the daemon's descriptors or fill its log.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use ipnet::IpNet;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::acl::{Endpoint, Reason};
use crate::decision_log::{self, DecisionSink, Kind, RateLimit, Who};
use crate::ip_literal::canonical;

/// Open connections (DNS over TCP, the proxy and the forwarders together) of one deployment.
pub const OPEN_GAUGE: &str = "moat_egress_connections";
/// Decision lines not written because of the per-kind rate; every decision is still counted.
pub const SUPPRESSED: &str = "moat_egress_log_suppressed_total";
/// Decision lines a deployment may write a second, per kind and per allow/deny.
const LOG_LINES_PER_SECOND: u32 = 10;

/// What one deployment's guard may hold and how long it waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once; one more is closed as soon as it is accepted.
    pub max_connections: usize,
    /// For what must come before anything is relayed: a DNS message, a proxy request's head,
    /// a ClientHello.
    pub handshake: Duration,
    /// A relayed connection (or a DNS connection between queries) with no byte either way.
    pub idle: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_connections: 256, handshake: Duration::from_secs(10), idle: Duration::from_secs(120) }
    }
}

pub struct Scope {
    pub endpoint: String,
    pub deployment: String,
    pub endpoints: Vec<Endpoint>,
    /// Instance names by container address, kept current by `deploy` from the supervisor.
    pub instances: ArcSwap<HashMap<IpAddr, String>>,
    pub sink: DecisionSink,
    /// Every moat network of the home (shared by the guard's scopes): never dialled.
    pub moat_networks: Arc<ArcSwap<Vec<IpNet>>>,
    pub limits: Limits,
    connections: Arc<Semaphore>,
    open: metrics::Gauge,
    /// Per kind, for allowed and for denied decisions.
    log_rates: [[RateLimit; 2]; Kind::ALL.len()],
    suppressed: AtomicU64,
    suppressed_total: metrics::Counter,
}

/// One admitted connection; dropping it gives its place back.
pub struct Admitted {
    _permit: OwnedSemaphorePermit,
    open: metrics::Gauge,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.open.decrement(1.0);
    }
}

impl Scope {
    pub fn new(
        endpoint: &str,
        deployment: &str,
        endpoints: Vec<Endpoint>,
        sink: DecisionSink,
        moat_networks: Arc<ArcSwap<Vec<IpNet>>>,
        limits: Limits,
    ) -> Scope {
        let labels = [("endpoint", endpoint.to_string()), ("deployment", deployment.to_string())];
        Scope {
            endpoint: endpoint.to_string(),
            deployment: deployment.to_string(),
            endpoints,
            instances: ArcSwap::from_pointee(HashMap::new()),
            sink,
            moat_networks,
            limits,
            connections: Arc::new(Semaphore::new(limits.max_connections)),
            open: metrics::gauge!(OPEN_GAUGE, &labels),
            log_rates: Default::default(),
            suppressed: AtomicU64::new(0),
            suppressed_total: metrics::counter!(SUPPRESSED, &labels),
        }
    }

    /// A place for a connection just accepted from `from`, or None (and the refusal recorded)
    /// when the deployment has all its places taken.
    pub fn admit(&self, from: SocketAddr, kind: Kind, target: &str) -> Option<Admitted> {
        match self.connections.clone().try_acquire_owned() {
            Ok(permit) => {
                self.open.increment(1.0);
                Some(Admitted { _permit: permit, open: self.open.clone() })
            }
            Err(_) => {
                self.record(&self.who(from.ip()), kind, target, Reason::ConnectionCap, (0, 0));
                None
            }
        }
    }

    /// Whether the guard may dial `addr` at all, whatever the allowlist says: never an
    /// address that leads back into the machine, to the link (a cloud's metadata service), to
    /// many hosts, or into a moat network.
    pub fn dialable(&self, addr: SocketAddr) -> Result<(), Reason> {
        let ip = canonical(addr.ip());
        if moat_net::classify(ip).points_home() || moat_net::within(ip, &self.moat_networks.load()) {
            return Err(Reason::PointsHome);
        }
        Ok(())
    }

    pub fn who(&self, client: IpAddr) -> Who {
        let client = canonical(client);
        Who {
            endpoint: self.endpoint.clone(),
            deployment: self.deployment.clone(),
            instance: self.instances.load().get(&client).cloned(),
            client,
        }
    }

    /// Counts the decision, and logs it unless this deployment has logged enough of its kind
    /// this second: a container's flood must not crowd the log.
    pub fn record(&self, who: &Who, kind: Kind, target: &str, reason: Reason, bytes: (u64, u64)) {
        let denied = usize::from(reason != Reason::Allowlisted);
        let log = self.log_rates[kind.index()][denied].allow(LOG_LINES_PER_SECOND);
        if !log {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            self.suppressed_total.increment(1);
        } else {
            let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
            if suppressed > 0 {
                tracing::warn!(endpoint = %self.endpoint, deployment = %self.deployment, lines = suppressed,
                    "egress decision lines not logged (rate limit); every decision is counted in moat_egress_decisions_total");
            }
        }
        decision_log::record(&self.sink, who, kind, target, reason, bytes, log);
    }
}
