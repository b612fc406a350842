//! What the guard knows about one private deployment: its endpoints, which of its instances
//! has which address (for attribution), and where decisions are recorded.

use std::collections::HashMap;
use std::net::IpAddr;

use arc_swap::ArcSwap;

use crate::acl::Endpoint;
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
}

impl Scope {
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
