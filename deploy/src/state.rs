//! The desired state as stored: which keys hold what, the records, and one consistent read
//! of all of it for the reconciler and the admin API.
//!
//! - `workspace`: the workspace spec (absent: the default one).
//! - `endpoints/<endpoint>`: the endpoint spec and its keys.
//! - `deployments/<endpoint>/<deployment>`: the deployment spec and whether it takes all
//!   traffic once it succeeds.
//! - `outcomes/<endpoint>/<deployment>/<node>`: how bringing up a revision of that deployment
//!   ended on one node (each node runs its own instances).
//! - `moves/<endpoint>/<deployment>`: the deployment revision whose `--all-traffic` has been
//!   carried out, so that it happens once for the fleet, not once per node.
//! - `nodes/<node>`: a node that is up, and what it has ready (in a fleet, under a lease).
//! - `secrets/...`: the aml token secret; `fleet/check`: proof of the fleet key.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::spec::deployment::DeploymentSpec;
use crate::spec::endpoint::EndpointSpec;
use crate::spec::workspace::WorkspaceSpec;
use crate::store::{Store, Versioned};

pub use moat_id::DeploymentId;

pub const WORKSPACE: &str = "workspace";

pub fn endpoint_key(endpoint: &str) -> String {
    format!("endpoints/{endpoint}")
}

pub fn deployment_key(id: &DeploymentId) -> String {
    format!("deployments/{id}")
}

/// Where every node's outcome of the deployment lives.
pub fn outcomes_prefix(id: &DeploymentId) -> String {
    format!("outcomes/{id}/")
}

pub fn outcome_key(id: &DeploymentId, node: &str) -> String {
    format!("outcomes/{id}/{node}")
}

pub fn move_key(id: &DeploymentId) -> String {
    format!("moves/{id}")
}

pub fn node_key(node: &str) -> String {
    format!("nodes/{node}")
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keys {
    pub primary: String,
    pub secondary: String,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keys(<redacted>)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub spec: EndpointSpec,
    pub keys: Keys,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    pub spec: DeploymentSpec,
    /// `--all-traffic`: once this revision succeeds, the endpoint sends it all live traffic.
    pub all_traffic: bool,
}

/// How bringing up one revision of a deployment ended on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The deployment record's `mod_revision` this answers.
    pub revision: u64,
    pub succeeded: bool,
    pub reason: Option<String>,
    pub logs: String,
}

/// `--all-traffic` carried out for this deployment revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moved {
    pub revision: u64,
}

/// A node that is up: where it is, what it runs, and how many instances of each deployment
/// (`endpoint/deployment`) it has ready.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub advertise: String,
    pub version: String,
    #[serde(default)]
    pub ready: BTreeMap<String, u32>,
    /// The etcd lease that keeps the record (0 outside a fleet).
    #[serde(default)]
    pub lease: i64,
}

/// A record and the revision that wrote it.
#[derive(Debug, Clone)]
pub struct At<T> {
    pub record: T,
    pub revision: u64,
}

/// Where a deployment's current revision stands across the live nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FleetOutcome<'a> {
    /// Some live node has not finished with it yet.
    Pending,
    /// Every live node brought it up.
    Succeeded,
    /// A node failed it (the first, by name).
    Failed { node: &'a str, outcome: &'a Outcome },
}

/// One read of the whole desired state, as this node (`me`) sees it.
#[derive(Debug, Clone)]
pub struct Desired {
    pub me: String,
    pub workspace: WorkspaceSpec,
    pub workspace_revision: Option<u64>,
    pub endpoints: BTreeMap<String, At<EndpointRecord>>,
    pub deployments: BTreeMap<DeploymentId, At<DeploymentRecord>>,
    /// Per deployment, per node.
    pub outcomes: BTreeMap<DeploymentId, BTreeMap<String, At<Outcome>>>,
    pub moves: BTreeMap<DeploymentId, At<Moved>>,
    pub nodes: BTreeMap<String, At<NodeRecord>>,
    /// Keys whose stored record this node cannot decode (a newer moat wrote it): the form it
    /// last decoded stands, never "deleted".
    pub undecodable: Vec<String>,
}

impl Desired {
    /// This node's outcome of the deployment's current revision, if bringing it up has ended.
    pub fn current_outcome(&self, id: &DeploymentId) -> Option<&Outcome> {
        self.outcome_on(id, &self.me)
    }

    /// `node`'s outcome of the deployment's current revision.
    pub fn outcome_on(&self, id: &DeploymentId, node: &str) -> Option<&Outcome> {
        let revision = self.deployments.get(id)?.revision;
        let at = self.outcomes.get(id)?.get(node)?;
        Some(&at.record).filter(|o| o.revision == revision)
    }

    /// Whether any node has an outcome of an earlier revision: the current one is an update.
    pub fn updated(&self, id: &DeploymentId) -> bool {
        let Some(current) = self.deployments.get(id).map(|at| at.revision) else { return false };
        self.outcomes.get(id).is_some_and(|by_node| by_node.values().any(|o| o.record.revision < current))
    }

    /// The nodes that are up: every node with a record, and this one.
    pub fn live_nodes(&self) -> Vec<&str> {
        let mut nodes: Vec<&str> = self.nodes.keys().map(String::as_str).collect();
        if !self.nodes.contains_key(&self.me) {
            nodes.push(&self.me);
            nodes.sort_unstable();
        }
        nodes
    }

    /// The fleet's outcome of the deployment's current revision (CONTRACT.md: Succeeded once
    /// every live node succeeded; Failed names a node that failed).
    pub fn fleet_outcome(&self, id: &DeploymentId) -> FleetOutcome<'_> {
        let mut pending = false;
        for node in self.live_nodes() {
            match self.outcome_on(id, node) {
                Some(o) if !o.succeeded => {
                    let node = self.outcomes[id].get_key_value(node).map_or(node, |(k, _)| k.as_str());
                    return FleetOutcome::Failed { node, outcome: o };
                }
                Some(_) => {}
                None => pending = true,
            }
        }
        if pending { FleetOutcome::Pending } else { FleetOutcome::Succeeded }
    }

    pub fn deployments_of<'a>(
        &'a self,
        endpoint: &'a str,
    ) -> impl Iterator<Item = &'a At<DeploymentRecord>> + 'a {
        self.deployments.iter().filter(move |(id, _)| id.endpoint == endpoint).map(|(_, at)| at)
    }
}

/// Reads the desired state for one node, remembering the last form of every record it could
/// decode, so that a record it cannot decode (written by a newer moat) keeps its last form
/// instead of vanishing, which would read as "deleted" and remove what it describes.
pub struct Reader {
    store: Arc<dyn Store>,
    me: String,
    last_good: Mutex<HashMap<String, Versioned>>,
}

impl Reader {
    pub fn new(store: Arc<dyn Store>, me: &str) -> Reader {
        Reader { store, me: me.to_string(), last_good: Mutex::new(HashMap::new()) }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    pub fn read(&self) -> Desired {
        let mut undecodable = Vec::new();
        let workspace_entry = self.store.get(WORKSPACE);
        let workspace = workspace_entry.as_ref().and_then(|v| self.decode(WORKSPACE, v, &mut undecodable));
        let mut outcomes: BTreeMap<DeploymentId, BTreeMap<String, At<Outcome>>> = BTreeMap::new();
        for (rest, at) in self.records::<Outcome>("outcomes/", &mut undecodable) {
            let mut parts = rest.splitn(3, '/');
            let (Some(endpoint), Some(deployment)) = (parts.next(), parts.next()) else { continue };
            // A store written before outcomes were per node holds this node's outcome.
            let node = parts.next().unwrap_or(&self.me).to_string();
            outcomes.entry(DeploymentId::new(endpoint, deployment)).or_default().insert(node, at);
        }
        Desired {
            me: self.me.clone(),
            workspace_revision: workspace_entry.as_ref().map(|v| v.mod_revision),
            workspace: workspace.unwrap_or_else(WorkspaceSpec::default_workspace),
            endpoints: self.records("endpoints/", &mut undecodable).collect(),
            deployments: by_deployment(self.records("deployments/", &mut undecodable)),
            outcomes,
            moves: by_deployment(self.records("moves/", &mut undecodable)),
            nodes: self.records("nodes/", &mut undecodable).collect(),
            undecodable,
        }
    }

    fn records<T: DeserializeOwned>(
        &self,
        prefix: &str,
        undecodable: &mut Vec<String>,
    ) -> std::vec::IntoIter<(String, At<T>)> {
        let mut out = Vec::new();
        for (key, versioned) in self.store.range(prefix) {
            if let Some(record) = self.decode(&key, &versioned, undecodable) {
                let revision = self.last_good(&key).map_or(versioned.mod_revision, |v| v.mod_revision);
                out.push((key[prefix.len()..].to_string(), At { record, revision }));
            }
        }
        out.into_iter()
    }

    fn last_good(&self, key: &str) -> Option<Versioned> {
        self.last_good.lock().unwrap_or_else(|p| p.into_inner()).get(key).cloned()
    }

    /// The record, or the last form of it that decoded (the key is then listed).
    fn decode<T: DeserializeOwned>(
        &self,
        key: &str,
        v: &Versioned,
        undecodable: &mut Vec<String>,
    ) -> Option<T> {
        match serde_json::from_value::<T>(v.value.clone()) {
            Ok(record) => {
                let mut last = self.last_good.lock().unwrap_or_else(|p| p.into_inner());
                if last.get(key).is_none_or(|old| old.mod_revision != v.mod_revision) {
                    last.insert(key.to_string(), v.clone());
                }
                Some(record)
            }
            Err(e) => {
                tracing::warn!(key = %key, error = %e, "a stored record does not decode (written by a newer moat?); keeping its last known form");
                undecodable.push(key.to_string());
                let old = self.last_good(key)?;
                serde_json::from_value(old.value).ok()
            }
        }
    }
}

/// Records keyed `<endpoint>/<deployment>`.
fn by_deployment<T>(records: impl Iterator<Item = (String, At<T>)>) -> BTreeMap<DeploymentId, At<T>> {
    records
        .filter_map(|(rest, at)| {
            let (endpoint, deployment) = rest.split_once('/')?;
            Some((DeploymentId::new(endpoint, deployment), at))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Access;
    use crate::store::{FileStore, Txn};
    use crate::testing::{ME, World, deployment, endpoint};

    fn temp_store() -> (moat_test_support::TempDir, Arc<dyn Store>) {
        let dir = moat_test_support::TempDir::new("moat-state");
        let store = FileStore::open(&dir.path().join("store.json")).expect("open");
        (dir, Arc::new(store))
    }

    #[tokio::test]
    async fn a_record_this_node_cannot_decode_keeps_its_last_form_and_is_listed() {
        let (_dir, store) = temp_store();
        let id = DeploymentId::new("ep1", "blue");
        let record = DeploymentRecord { spec: deployment("ep1", "blue"), all_traffic: false };
        store.commit(Txn::default().put(&deployment_key(&id), &record)).await.expect("io");
        let reader = Reader::new(store.clone(), ME);
        let before = reader.read();
        assert!(before.deployments.contains_key(&id) && before.undecodable.is_empty());
        // A newer moat writes a shape this one does not know.
        let newer = serde_json::json!({"spec": {"name": "blue", "v2_field": true}, "all_traffic": false});
        store.commit(Txn::default().put(&deployment_key(&id), newer)).await.expect("io");
        let after = reader.read();
        assert_eq!(after.deployments[&id].record, record, "not read as deleted");
        assert_eq!(after.deployments[&id].revision, before.deployments[&id].revision, "nothing to re-apply");
        assert_eq!(after.undecodable, [deployment_key(&id)]);
        let restarted = Reader::new(store, ME).read();
        assert!(!restarted.deployments.contains_key(&id) && restarted.undecodable == [deployment_key(&id)]);
    }

    #[tokio::test]
    async fn an_outcome_stored_before_outcomes_were_per_node_is_this_nodes() {
        let (_dir, store) = temp_store();
        let id = DeploymentId::new("ep1", "blue");
        let record = DeploymentRecord { spec: deployment("ep1", "blue"), all_traffic: false };
        let revision = store.commit(Txn::default().put(&deployment_key(&id), &record)).await.expect("io");
        let outcome =
            Outcome { revision: revision.expect("rev"), succeeded: true, reason: None, logs: String::new() };
        store.commit(Txn::default().put("outcomes/ep1/blue", &outcome)).await.expect("io");
        let desired = Reader::new(store, ME).read();
        assert_eq!(desired.current_outcome(&id), Some(&outcome));
    }

    #[test]
    fn the_fleet_succeeds_once_every_live_node_did_and_fails_with_the_node_that_failed() {
        let id = DeploymentId::new("ep1", "blue");
        let base =
            || World::new(Access::Enabled).endpoint(endpoint("ep1")).deployment(deployment("ep1", "blue"));
        #[rustfmt::skip]
        let table: [(&str, World, &str); 6] = [
            ("alone, not yet", base(), "pending"),
            ("alone, succeeded", base().outcome(&id, true), "succeeded"),
            ("another live node not yet", base().node("ffff0000", &[]).outcome(&id, true), "pending"),
            ("both succeeded", base().node("ffff0000", &[]).outcome(&id, true).outcome_on("ffff0000", &id, true), "succeeded"),
            ("the other node failed", base().node("ffff0000", &[]).outcome(&id, true).outcome_on("ffff0000", &id, false), "failed on ffff0000"),
            ("a node that is gone does not count", base().outcome(&id, true).outcome_on("gone0000", &id, false), "succeeded"),
        ];
        for (case, world, expected) in table {
            let got = match world.desired.fleet_outcome(&id) {
                FleetOutcome::Pending => "pending".to_string(),
                FleetOutcome::Succeeded => "succeeded".to_string(),
                FleetOutcome::Failed { node, .. } => format!("failed on {node}"),
            };
            assert_eq!(got, expected, "{case}");
        }
    }
}
