//! What the guard knows about one private deployment: its endpoints, which of its instances
//! has which address (for attribution), and where decisions are recorded.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use arc_swap::ArcSwap;
use ipnet::IpNet;

use crate::acl::{Endpoint, Reason};
use crate::decision_log::{DecisionSink, RateLimit, Who};
use crate::ip_literal::canonical;

pub struct Scope {
    pub endpoint: String,
    pub deployment: String,
    pub endpoints: Vec<Endpoint>,
    /// Instance names by container address, kept current by `deploy` from the supervisor.
    pub instances: ArcSwap<HashMap<IpAddr, String>>,
    pub sink: DecisionSink,
    pub dns_log: RateLimit,
    /// Every moat network of the home (shared by the guard's scopes): never dialled.
    pub moat_networks: Arc<ArcSwap<Vec<IpNet>>>,
}

impl Scope {
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
}
