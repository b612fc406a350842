//! The desired state as stored: which keys hold what, the records, and one consistent read
//! of all of it for the reconciler and the admin API.
//!
//! - `workspace`: the workspace spec (absent: the default one).
//! - `endpoints/<endpoint>`: the endpoint spec and its keys.
//! - `deployments/<endpoint>/<deployment>`: the deployment spec and whether it takes all
//!   traffic once it succeeds.
//! - `outcomes/<endpoint>/<deployment>`: how bringing up a revision of that deployment ended.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::spec::deployment::DeploymentSpec;
use crate::spec::endpoint::EndpointSpec;
use crate::spec::workspace::WorkspaceSpec;
use crate::store::Store;

pub const WORKSPACE: &str = "workspace";

pub fn endpoint_key(endpoint: &str) -> String {
    format!("endpoints/{endpoint}")
}

pub fn deployment_key(id: &DeploymentId) -> String {
    format!("deployments/{id}")
}

pub fn outcome_key(id: &DeploymentId) -> String {
    format!("outcomes/{id}")
}

pub use moat_id::DeploymentId;

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

/// How bringing up one revision of a deployment ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The deployment record's `mod_revision` this answers.
    pub revision: u64,
    pub succeeded: bool,
    pub reason: Option<String>,
    pub logs: String,
}

/// A record and the revision that wrote it.
#[derive(Debug, Clone)]
pub struct At<T> {
    pub record: T,
    pub revision: u64,
}

/// One read of the whole desired state.
#[derive(Debug, Clone)]
pub struct Desired {
    pub workspace: WorkspaceSpec,
    pub workspace_revision: Option<u64>,
    pub endpoints: BTreeMap<String, At<EndpointRecord>>,
    pub deployments: BTreeMap<DeploymentId, At<DeploymentRecord>>,
    pub outcomes: BTreeMap<DeploymentId, At<Outcome>>,
}

impl Desired {
    pub fn read(store: &dyn Store) -> Desired {
        let workspace = store.get(WORKSPACE);
        Desired {
            workspace_revision: workspace.as_ref().map(|v| v.mod_revision),
            workspace: workspace
                .and_then(|v| serde_json::from_value(v.value).ok())
                .unwrap_or_else(WorkspaceSpec::default_workspace),
            endpoints: records(store, "endpoints/").collect(),
            deployments: by_deployment(records(store, "deployments/")),
            outcomes: by_deployment(records(store, "outcomes/")),
        }
    }

    /// The outcome of the deployment's current revision, if bringing it up has ended.
    pub fn current_outcome(&self, id: &DeploymentId) -> Option<&Outcome> {
        let revision = self.deployments.get(id)?.revision;
        self.outcomes.get(id).map(|o| &o.record).filter(|o| o.revision == revision)
    }

    pub fn deployments_of<'a>(
        &'a self,
        endpoint: &'a str,
    ) -> impl Iterator<Item = &'a At<DeploymentRecord>> + 'a {
        self.deployments.iter().filter(move |(id, _)| id.endpoint == endpoint).map(|(_, at)| at)
    }
}

/// Records under a prefix, by the rest of their key. A record that no longer decodes is
/// skipped with a warning rather than stopping the daemon.
fn records<T: DeserializeOwned>(store: &dyn Store, prefix: &str) -> impl Iterator<Item = (String, At<T>)> {
    store.range(prefix).into_iter().filter_map(move |(key, versioned)| {
        let rest = key[prefix.len()..].to_string();
        match serde_json::from_value(versioned.value) {
            Ok(record) => Some((rest, At { record, revision: versioned.mod_revision })),
            Err(e) => {
                tracing::warn!(key = %key, error = %e, "skipping a stored record that does not decode");
                None
            }
        }
    })
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
