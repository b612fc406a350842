//! One node's operations, as the admin API offers them. Each one reads the desired state,
//! checks the spec it was given as `moat validate` would, asks [`rules`] whether the change
//! may happen (and what else it changes), commits in one compare-and-set, and (unless asked
//! not to) waits for the reconciler to bring it about. Nothing here touches Docker or the
//! gateway: the reconciler does, from what is stored.

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
use crate::spec::{Access, Broken};
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

    // ---- workspace ----

    pub fn workspace(&self) -> WorkspaceSpec {
        self.desired().workspace
    }

    /// Replaces the default workspace; refused once endpoints exist.
    pub async fn create_workspace(&self, spec: WorkspaceSpec) -> Result<WorkspaceSpec, Error> {
        checked(spec.check())?;
        let desired = self.desired();
        rules::create_workspace(&desired)?;
        let txn = desired.endpoints.keys().fold(
            Txn::default().expect(state::WORKSPACE, desired.workspace_revision).put(state::WORKSPACE, &spec),
            |t, name| t.expect(&state::endpoint_key(name), None),
        );
        self.commit(txn).await?;
        Ok(spec)
    }

    pub async fn update_workspace(&self, spec: WorkspaceSpec) -> Result<WorkspaceUpdate, Error> {
        checked(spec.check())?;
        let desired = self.desired();
        let warnings = rules::update_workspace(&desired, &spec);
        let txn =
            Txn::default().expect(state::WORKSPACE, desired.workspace_revision).put(state::WORKSPACE, &spec);
        self.commit(txn).await?;
        Ok(WorkspaceUpdate { workspace: spec, warnings })
    }

    // ---- endpoints ----

    /// The endpoint, and the revision of its record (an update sends it back).
    pub fn endpoint_at(&self, name: &str) -> Result<(EndpointView, u64), Error> {
        let desired = self.desired();
        let at = endpoint_of(&desired, name)?;
        Ok((views::endpoint(&at.record, self.scoring.as_ref()), at.revision))
    }

    pub fn endpoints(&self) -> Vec<EndpointView> {
        self.desired()
            .endpoints
            .values()
            .map(|at| views::endpoint(&at.record, self.scoring.as_ref()))
            .collect()
    }

    pub async fn create_endpoint(&self, spec: EndpointSpec) -> Result<EndpointView, Error> {
        checked(spec.check())?;
        rules::create_endpoint(&self.desired(), &spec, self.tokens.aad.is_some())?;
        let key = state::endpoint_key(&spec.name);
        let record =
            EndpointRecord { spec, keys: Keys { primary: keys::new_key()?, secondary: keys::new_key()? } };
        self.commit(Txn::default().expect(&key, None).put(&key, &record)).await?;
        Ok(views::endpoint(&record, self.scoring.as_ref()))
    }

    /// Replaces the endpoint's spec (traffic, mirror, description, tags); its keys stay.
    /// `expected`: the revision the change was made to; refused if the record has moved.
    pub async fn update_endpoint(
        &self,
        spec: EndpointSpec,
        expected: Option<u64>,
    ) -> Result<EndpointView, Error> {
        checked(spec.check())?;
        let desired = self.desired();
        rules::update_endpoint(&desired, &spec)?;
        let at = endpoint_of(&desired, &spec.name)?;
        unmoved("endpoint", &spec.name, at.revision, expected)?;
        let key = state::endpoint_key(&spec.name);
        let record = EndpointRecord { spec, keys: at.record.keys.clone() };
        // The deployments its traffic names must still be there when this commits.
        let txn = desired
            .deployments_of(&record.spec.name)
            .fold(Txn::default().expect(&key, Some(at.revision)), |t, d| {
                t.expect(&state::deployment_key(&d.record.spec.id()), Some(d.revision))
            });
        self.commit(txn.put(&key, &record)).await?;
        Ok(views::endpoint(&record, self.scoring.as_ref()))
    }

    /// Deletes the endpoint and its deployments; with `wait`, returns once their containers
    /// are gone.
    pub async fn delete_endpoint(&self, name: &str, wait: bool) -> Result<(), Error> {
        let desired = self.desired();
        let at = endpoint_of(&desired, name)?;
        let key = state::endpoint_key(name);
        let mut txn = Txn::default().expect(&key, Some(at.revision)).delete(&key);
        let mut ids = Vec::new();
        for deployment in desired.deployments_of(name) {
            let id = deployment.record.spec.id();
            txn = txn
                .expect(&state::deployment_key(&id), Some(deployment.revision))
                .delete(&state::deployment_key(&id))
                .delete_prefix(&state::outcomes_prefix(&id))
                .delete(&state::move_key(&id));
            ids.push(id);
        }
        self.commit(txn).await?;
        if wait {
            self.wait_released(&ids).await;
        }
        Ok(())
    }

    /// Key mode: both keys. aml_token mode: a fresh token. aad_token mode: where to get one.
    pub fn credentials(&self, name: &str) -> Result<Credentials, Error> {
        let desired = self.desired();
        let record = &endpoint_of(&desired, name)?.record;
        match record.spec.auth_mode {
            AuthMode::Key => Ok(Credentials::Keys {
                primary_key: record.keys.primary.clone(),
                secondary_key: record.keys.secondary.clone(),
            }),
            AuthMode::AmlToken => {
                let audience = aml::audience(&desired.workspace.name, name);
                let issued = self
                    .tokens
                    .aml
                    .issue(&audience, self.tokens.aml_ttl)
                    .map_err(|e| Error::other("issuing a token", e))?;
                Ok(Credentials::Token {
                    access_token: issued.token,
                    expiry_time_utc: issued.expires,
                    refresh_after_time_utc: issued.refresh_after,
                    token_type: "Bearer".into(),
                })
            }
            AuthMode::AadToken => Err(Error::Invalid(match &self.tokens.aad {
                Some(aad) => format!(
                    "endpoint {name} uses aad_token: get a token for audience {} from your identity provider {}",
                    aad.audience, aad.issuer
                ),
                None => format!("endpoint {name} uses aad_token, but auth.aad is not configured"),
            })),
        }
    }

    /// A new key (or the given one) replaces one of the two; the next request sees it.
    pub async fn regenerate_keys(
        &self,
        name: &str,
        key_type: KeyType,
        value: Option<String>,
    ) -> Result<(), Error> {
        let desired = self.desired();
        let at = endpoint_of(&desired, name)?;
        let new = match value {
            Some(v) => {
                keys::check_user_key(&v)?;
                v
            }
            None => keys::new_key()?,
        };
        if at.record.spec.auth_mode != AuthMode::Key {
            return Err(Error::Invalid(format!(
                "endpoint {name} uses tokens, not keys: there is no key to regenerate"
            )));
        }
        let mut record = at.record.clone();
        match key_type {
            KeyType::Primary => record.keys.primary = new,
            KeyType::Secondary => record.keys.secondary = new,
        }
        let key = state::endpoint_key(name);
        self.commit(Txn::default().expect(&key, Some(at.revision)).put(&key, &record)).await?;
        Ok(())
    }

    // ---- deployments ----

    fn deployment_view(&self, desired: &Desired, id: &DeploymentId) -> Option<DeploymentView> {
        let observed = Observed {
            busy: self.reconciler.busy(id),
            instances: self.supervisor.instances(id),
            egress: self.reconciler.guard().addresses(id),
        };
        views::deployment(desired, id, observed)
    }

    pub fn deployment(&self, endpoint: &str, name: &str) -> Result<DeploymentView, Error> {
        self.deployment_at(endpoint, name).map(|(view, _)| view)
    }

    /// The deployment, and the revision of its record (an update sends it back).
    pub fn deployment_at(&self, endpoint: &str, name: &str) -> Result<(DeploymentView, u64), Error> {
        let desired = self.desired();
        endpoint_of(&desired, endpoint)?;
        let id = DeploymentId::new(endpoint, name);
        let missing = || Error::NotFound(format!("deployment {name} not found on endpoint {endpoint}"));
        let revision = desired.deployments.get(&id).ok_or_else(missing)?.revision;
        Ok((self.deployment_view(&desired, &id).ok_or_else(missing)?, revision))
    }

    pub fn deployments(&self, endpoint: &str) -> Result<Vec<DeploymentView>, Error> {
        let desired = self.desired();
        endpoint_of(&desired, endpoint)?;
        let ids = desired.deployments.keys().filter(|id| id.endpoint == endpoint);
        Ok(ids.filter_map(|id| self.deployment_view(&desired, id)).collect())
    }

    /// Stores the deployment; with `wait`, returns once it is Succeeded (or fails with the
    /// reason and the container's last log lines when it ends Failed).
    pub async fn create_deployment(
        &self,
        spec: DeploymentSpec,
        all_traffic: bool,
        wait: bool,
        sink: &ProgressSink,
    ) -> Result<DeploymentView, Error> {
        checked(spec.check())?;
        let desired = self.desired();
        let decision = rules::create_deployment(&desired, &spec, self.host_memory())?;
        let id = spec.id();
        let mut txn = Txn::default();
        if decision.switch_workspace {
            let mut workspace = desired.workspace.clone();
            workspace.public_network_access = Access::Disabled;
            txn = txn.expect(state::WORKSPACE, desired.workspace_revision).put(state::WORKSPACE, &workspace);
        }
        for warning in decision.warnings {
            let _ = sink.send(warning);
        }
        let ep = endpoint_of(&desired, &id.endpoint)?;
        let key = state::deployment_key(&id);
        let txn = txn
            .expect(&state::endpoint_key(&id.endpoint), Some(ep.revision))
            .expect(&key, None)
            .put(&key, &DeploymentRecord { spec, all_traffic })
            .delete_prefix(&state::outcomes_prefix(&id))
            .delete(&state::move_key(&id));
        self.commit_deployment(&id, txn, wait, sink).await
    }

    /// Stores a new spec for a deployment; the reconciler rolls its instances to it one
    /// surge instance at a time. With `wait`, returns once every instance runs the new spec.
    pub async fn update_deployment(
        &self,
        spec: DeploymentSpec,
        expected: Option<u64>,
        wait: bool,
        sink: &ProgressSink,
    ) -> Result<DeploymentView, Error> {
        checked(spec.check())?;
        let desired = self.desired();
        rules::update_deployment(&desired, &spec, self.host_memory())?;
        let id = spec.id();
        let revision = desired.deployments.get(&id).map(|at| at.revision);
        unmoved("deployment", &id.deployment, revision.unwrap_or(0), expected)?;
        let key = state::deployment_key(&id);
        let txn =
            Txn::default().expect(&key, revision).put(&key, &DeploymentRecord { spec, all_traffic: false });
        self.commit_deployment(&id, txn, wait, sink).await
    }

    async fn commit_deployment(
        &self,
        id: &DeploymentId,
        txn: Txn,
        wait: bool,
        sink: &ProgressSink,
    ) -> Result<DeploymentView, Error> {
        let progress = self.supervisor.progress();
        let revision = self.commit(txn).await?;
        if wait {
            self.wait_outcome(id, revision, progress, sink).await?;
        }
        self.deployment_view(&self.desired(), id)
            .ok_or_else(|| Error::Other(format!("deployment {} was deleted meanwhile", id.deployment)))
    }

    /// Refused while the deployment takes live or mirrored traffic.
    pub async fn delete_deployment(&self, endpoint: &str, name: &str, wait: bool) -> Result<(), Error> {
        let desired = self.desired();
        let id = DeploymentId::new(endpoint, name);
        rules::delete_deployment(&desired, &id)?;
        let (ep, at) = (endpoint_of(&desired, endpoint)?, &desired.deployments[&id]);
        let key = state::deployment_key(&id);
        let txn = Txn::default()
            .expect(&state::endpoint_key(endpoint), Some(ep.revision))
            .expect(&key, Some(at.revision))
            .delete(&key)
            .delete_prefix(&state::outcomes_prefix(&id))
            .delete(&state::move_key(&id));
        self.commit(txn).await?;
        if wait {
            self.wait_released(&[id]).await;
        }
        Ok(())
    }

    /// The last `lines` log lines of the deployment's instances (or of the one named).
    pub async fn logs(
        &self,
        endpoint: &str,
        name: &str,
        instance: Option<&str>,
        lines: usize,
    ) -> Result<String, Error> {
        let view = self.deployment(endpoint, name)?;
        if let Some(wanted) = instance
            && !view.instances.iter().any(|i| i.name == wanted)
        {
            let known: Vec<&str> = view.instances.iter().map(|i| i.name.as_str()).collect();
            return Err(Error::NotFound(format!(
                "instance {wanted} not found on deployment {name}; its instances: {}",
                known.join(", ")
            )));
        }
        let id = DeploymentId::new(endpoint, name);
        let logs =
            self.supervisor.logs(&id, instance, lines).await.map_err(|e| Error::Other(e.to_string()))?;
        Ok(match logs.as_slice() {
            [(_, text)] => text.clone(),
            many => many
                .iter()
                .map(|(instance, text)| format!("==> {instance} <==\n{text}"))
                .collect::<Vec<_>>()
                .join("\n"),
        })
    }

    /// Waits until the revision's outcome is stored, passing on the supervisor's progress
    /// lines about the deployment (an image pull) as they come.
    async fn wait_outcome(
        &self,
        id: &DeploymentId,
        revision: u64,
        mut progress: broadcast::Receiver<Progress>,
        sink: &ProgressSink,
    ) -> Result<(), Error> {
        let mut changes = self.state.store().watch();
        loop {
            let desired = self.desired();
            let all_traffic = match desired.deployments.get(id) {
                None => {
                    return Err(Error::Other(format!(
                        "deployment {} was deleted while it was being created",
                        id.deployment
                    )));
                }
                Some(at) if at.revision != revision => {
                    return Err(Error::Conflict(format!(
                        "deployment {} was changed by another command meanwhile",
                        id.deployment
                    )));
                }
                Some(at) => at.record.all_traffic,
            };
            let moved = desired.moves.get(id).is_some_and(|m| m.record.revision == revision);
            match desired.fleet_outcome(id) {
                FleetOutcome::Failed { node, outcome } => {
                    let reason = outcome.reason.clone().unwrap_or_default();
                    let on = if node == desired.me { String::new() } else { format!(" on node {node}") };
                    return Err(Error::Failed {
                        message: format!("deployment {} failed{on}: {reason}", id.deployment),
                        logs: outcome.logs.clone(),
                    });
                }
                FleetOutcome::Succeeded if moved || !all_traffic => {
                    let now = *changes.borrow_and_update();
                    let _ = self.reconciler.published().wait_for(|p| *p >= now).await;
                    return Ok(());
                }
                FleetOutcome::Succeeded | FleetOutcome::Pending => {}
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() {
                    return Err(Error::Other("the store closed".into()));
                },
                line = progress.recv() => match line {
                    Ok(p) if p.id == *id => {
                        let _ = sink.send(p.message);
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => progress = self.supervisor.progress(),
                },
            }
        }
    }

    /// Waits until the reconciler holds no containers for these deployments.
    async fn wait_released(&self, ids: &[DeploymentId]) {
        let mut progress: watch::Receiver<u64> = self.reconciler.progress();
        while ids.iter().any(|id| self.reconciler.holds(id)) {
            if progress.changed().await.is_err() {
                return;
            }
        }
    }
}
