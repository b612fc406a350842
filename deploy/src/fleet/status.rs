//! What `moat fleet status` prints: the fleet, how current this node's copy of it is, its
//! live nodes (with how long since each was last heard of), and any record this node cannot
//! decode.

use serde::{Deserialize, Serialize};

use crate::state::Desired;
use crate::store::Store;
use crate::store::etcd::EtcdStore;

#[derive(Debug, Serialize, Deserialize)]
pub struct FleetStatus {
    pub name: String,
    /// The etcd revision this node's copy reflects.
    pub revision: u64,
    /// Seconds since this node last heard from etcd.
    pub stale_s: u64,
    pub nodes: Vec<NodeStatus>,
    /// Records this node cannot decode (written by a newer moat?): it keeps their last form.
    pub undecodable: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node's home id.
    pub node: String,
    pub advertise: String,
    pub version: String,
    /// Seconds since its lease was last kept alive.
    pub last_seen_s: Option<u64>,
}

pub async fn status(name: &str, store: &EtcdStore, desired: &Desired) -> FleetStatus {
    let mut nodes = Vec::new();
    for (node, at) in &desired.nodes {
        let mut client = store.client();
        let ttl = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            client.lease_time_to_live(at.record.lease, None),
        )
        .await;
        let last_seen_s = match ttl {
            Ok(Ok(t)) if t.ttl() >= 0 => Some((t.granted_ttl() - t.ttl()).max(0) as u64),
            _ => None,
        };
        nodes.push(NodeStatus {
            node: node.clone(),
            advertise: at.record.advertise.clone(),
            version: at.record.version.clone(),
            last_seen_s,
        });
    }
    FleetStatus {
        name: name.to_string(),
        revision: store.revision(),
        stale_s: store.freshness().stale.as_secs(),
        nodes,
        undecodable: desired.undecodable.clone(),
    }
}
