//! One node's operations, as the admin API offers them. Each one reads the desired state,
//! checks the spec it was given as `moat validate` would, asks [`rules`] whether the change
//! may happen (and what else it changes), commits in one compare-and-set, and (unless asked
//! not to) waits for the reconciler to bring it about. Nothing here touches Docker or the
//! gateway: the reconciler does, from what is stored.
//!
//! The operations are grouped by resource: [`workspace`], [`endpoints`], [`deployments`].

mod deployments;
mod endpoints;
mod workspace;

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, watch};

use crate::admin::{Credentials, KeyType, WorkspaceUpdate};
use crate::error::Error;
use crate::fleet::status::{self, FleetStatus};
use crate::keys;
use crate::reconciler::Reconciler;
use crate::rules;
use crate::spec::deployment::DeploymentSpec;
use crate::spec::endpoint::{AuthMode, EndpointSpec};
use crate::spec::workspace::WorkspaceSpec;
use crate::spec::{self, Access, Broken};
use crate::state::{
    self, DeploymentId, DeploymentRecord, Desired, EndpointRecord, FleetOutcome, Keys, Reader,
};
use crate::store::Txn;
use crate::store::etcd::EtcdStore;
use crate::views::{self, DeploymentView, EndpointView, Observed, ScoringBase};
use moat_gateway::auth::aad::AadConfig;
use moat_gateway::auth::aml::{self, AmlKey};
use moat_supervisor::{Progress, Supervisor};

/// Where progress lines of a long command go (to the CLI's stderr, in the end).
pub type ProgressSink = mpsc::UnboundedSender<String>;

pub struct Node {
    pub state: Arc<Reader>,
    pub supervisor: Supervisor,
    pub reconciler: Arc<Reconciler>,
    pub scoring: Option<ScoringBase>,
    pub tokens: Tokens,
    /// `None`: a node on its own, with the home's store.
    pub fleet: Option<Fleet>,
}

/// The fleet a node belongs to, and its store.
pub struct Fleet {
    pub name: String,
    pub etcd: Arc<EtcdStore>,
}

/// What token auth needs: the workspace's aml signing key and token lifetime, and the
/// configured AAD issuer (None: `aad_token` endpoints cannot be served).
pub struct Tokens {
    pub aml: Arc<AmlKey>,
    pub aml_ttl: std::time::Duration,
    pub aad: Option<AadConfig>,
}

fn checked(result: Result<(), Broken>) -> Result<(), Error> {
    result.map_err(Broken::into_error)
}

/// An update made to an earlier revision of a record would undo what came since.
fn unmoved(kind: &str, name: &str, current: u64, expected: Option<u64>) -> Result<(), Error> {
    match expected {
        Some(base) if base != current => {
            Err(Error::Conflict(format!("{kind} {name} {}; try again", crate::admin::MOVED)))
        }
        _ => Ok(()),
    }
}

fn endpoint_of<'a>(desired: &'a Desired, name: &str) -> Result<&'a state::At<EndpointRecord>, Error> {
    desired.endpoints.get(name).ok_or_else(|| Error::NotFound(format!("endpoint {name} not found")))
}

impl Node {
    fn desired(&self) -> Desired {
        self.state.read()
    }

    /// Commits, then waits until the gateway's route table reflects the commit, so the next
    /// request already sees the change.
    async fn commit(&self, txn: Txn) -> Result<u64, Error> {
        let revision = self
            .state
            .store()
            .commit(txn)
            .await?
            .ok_or_else(|| Error::Conflict(format!("{}; try again", crate::admin::RACED)))?;
        let _ = self.reconciler.published().wait_for(|p| *p >= revision).await;
        Ok(revision)
    }

    fn host_memory(&self) -> u64 {
        self.supervisor.host().memory_bytes
    }

    /// How current this node's copy of the desired state is.
    pub fn freshness(&self) -> crate::store::Freshness {
        self.state.store().freshness()
    }

    // ---- fleet ----

    pub async fn fleet_status(&self) -> Result<FleetStatus, Error> {
        let Some(fleet) = &self.fleet else {
            return Err(Error::Invalid(
                "this node is not in a fleet: its config has no `fleet` section".into(),
            ));
        };
        Ok(status::status(&fleet.name, &fleet.etcd, &self.desired()).await)
    }
}
