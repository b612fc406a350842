//! One node's operations, as the admin API offers them: each checks the rules that span
//! resources, commits to the store in one compare-and-set, and (unless asked not to) waits
//! for the reconciler to bring the change about. Nothing here touches Docker or the gateway
//! directly: the reconciler does, from what is stored.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, watch};

use crate::container;
use crate::error::Error;

use crate::keys;
use crate::reconciler::{Busy, Reconciler};
use crate::spec::deployment::{DeploymentSpec, MAX_INSTANCE_COUNT, MAX_REQUEST_TIMEOUT_MS};
use crate::spec::endpoint::{self, AuthMode, EndpointSpec};
use crate::spec::workspace::WorkspaceSpec;
use crate::spec::{Access, names, sku};
use crate::state::{self, DeploymentId, DeploymentRecord, Desired, EndpointRecord, Keys};
use crate::store::{Store, Txn};
use crate::views::{self, DeploymentView, Egress, EgressEndpoint, EndpointView, ScoringBase};
use moat_gateway::auth::aad::AadConfig;
use moat_gateway::auth::aml::{self, AmlKey};
use moat_supervisor::{Progress, Supervisor};

/// Where progress lines of a long command go (to the CLI's stderr, in the end).
pub type ProgressSink = mpsc::UnboundedSender<String>;

pub struct Node {
    pub store: Arc<dyn Store>,
    pub supervisor: Supervisor,
    pub reconciler: Arc<Reconciler>,
    pub scoring: Option<ScoringBase>,
    pub tokens: Tokens,
}

/// What token auth needs: the workspace's aml signing key and token lifetime, and the
/// configured AAD issuer (None: `aad_token` endpoints cannot be served).
pub struct Tokens {
    pub aml: Arc<AmlKey>,
    pub aml_ttl: std::time::Duration,
    pub aad: Option<AadConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    Primary,
    Secondary,
}

/// A workspace change and what the operator should know about it.
#[derive(Debug, Serialize, Deserialize)]
pub struct WorkspaceUpdate {
    pub workspace: WorkspaceSpec,
    pub warnings: Vec<String>,
}

/// The seed's supported pairs, for the messages that name them.
pub const SUPPORTED_PAIRS: &str = "the supported pairs are (public access enabled, egress enabled) and (public access disabled, egress disabled)";

/// What `get-credentials` prints: the keys, or an aml token with its times (epoch seconds).
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Credentials {
    Keys {
        #[serde(rename = "primaryKey")]
        primary_key: String,
        #[serde(rename = "secondaryKey")]
        secondary_key: String,
    },
    Token {
        #[serde(rename = "accessToken")]
        access_token: String,
        #[serde(rename = "expiryTimeUtc")]
        expiry_time_utc: u64,
        #[serde(rename = "refreshAfterTimeUtc")]
        refresh_after_time_utc: u64,
        #[serde(rename = "tokenType")]
        token_type: String,
    },
}

impl Node {
    fn desired(&self) -> Desired {
        Desired::read(&*self.store)
    }

    /// Commits, then waits until the gateway's route table reflects the commit, so the next
    /// request already sees the change.
    async fn commit(&self, txn: Txn) -> Result<u64, Error> {
        let revision = self.store.commit(txn)?.ok_or_else(|| {
            Error::Conflict("another command changed the same resources at the same time; try again".into())
        })?;
        let mut published = self.reconciler.published();
        let _ = published.wait_for(|p| *p >= revision).await;
        Ok(revision)
    }

    // ---- workspace ----

    pub fn workspace(&self) -> WorkspaceSpec {
        self.desired().workspace
    }

    /// Replaces the default workspace; refused once endpoints exist.
    pub async fn create_workspace(&self, spec: WorkspaceSpec) -> Result<WorkspaceSpec, Error> {
        let desired = self.desired();
        if !desired.endpoints.is_empty() {
            return Err(Error::Conflict(format!(
                "workspace {} already has endpoints; use `moat workspace update` to change it",
                desired.workspace.name
            )));
        }
        let txn =
            Txn::default().expect(state::WORKSPACE, desired.workspace_revision).put(state::WORKSPACE, &spec);
        let txn = desired.endpoints.keys().fold(txn, |t, name| t.expect(&state::endpoint_key(name), None));
        self.commit(txn).await?;
        Ok(spec)
    }

    /// Replaces the workspace spec. Disabling public access while deployments with egress
    /// enabled exist is allowed, with a warning naming them (the seed's rule).
    pub async fn update_workspace(&self, spec: WorkspaceSpec) -> Result<WorkspaceUpdate, Error> {
        let desired = self.desired();
        let txn =
            Txn::default().expect(state::WORKSPACE, desired.workspace_revision).put(state::WORKSPACE, &spec);
        self.commit(txn).await?;
        let mut warnings = Vec::new();
        let (was, now) = (desired.workspace.public_network_access, spec.public_network_access);
        let public = self.public_deployments(&desired);
        if was == Access::Enabled && now == Access::Disabled && !public.is_empty() {
            warnings.push(format!(
                "public network access is now disabled: these deployments, which have egress enabled, are no longer reachable from public networks and lose their public path to workspace resources: {}",
                public.join(", ")
            ));
        }
        let private: Vec<String> = desired
            .deployments
            .values()
            .filter(|d| d.record.spec.egress_public_network_access == Access::Disabled)
            .map(|d| format!("{}/{}", d.record.spec.endpoint_name, d.record.spec.name))
            .collect();
        if was == Access::Disabled && now == Access::Enabled && !private.is_empty() {
            warnings.push(format!(
                "public network access is now enabled while these deployments have egress disabled, an unsupported pair ({SUPPORTED_PAIRS}): {}",
                private.join(", ")
            ));
        }
        Ok(WorkspaceUpdate { workspace: spec, warnings })
    }

    /// Deployments with egress enabled, as `endpoint/deployment`.
    fn public_deployments(&self, desired: &Desired) -> Vec<String> {
        desired
            .deployments
            .values()
            .filter(|d| d.record.spec.egress_public_network_access == Access::Enabled)
            .map(|d| format!("{}/{}", d.record.spec.endpoint_name, d.record.spec.name))
            .collect()
    }

    // ---- endpoints ----

    fn endpoint_view(&self, record: &EndpointRecord) -> EndpointView {
        let spec = &record.spec;
        let uri = |leaf: &str| self.scoring.as_ref().map(|s| s.uri(&spec.name, leaf));
        EndpointView {
            name: spec.name.clone(),
            auth_mode: spec.auth_mode,
            public_network_access: spec.public_network_access,
            traffic: spec.traffic.clone(),
            mirror_traffic: spec.mirror_traffic.clone(),
            scoring_uri: uri("score"),
            swagger_uri: uri("swagger.json"),
            openapi_uri: uri("swagger.json"),
            provisioning_state: "Succeeded",
            description: spec.description.clone(),
            tags: spec.tags.clone(),
        }
    }

    fn endpoint_record(desired: &Desired, name: &str) -> Result<EndpointRecord, Error> {
        desired
            .endpoints
            .get(name)
            .map(|at| at.record.clone())
            .ok_or_else(|| Error::NotFound(format!("endpoint {name} not found")))
    }

    pub fn endpoint(&self, name: &str) -> Result<EndpointView, Error> {
        Ok(self.endpoint_view(&Self::endpoint_record(&self.desired(), name)?))
    }

    pub fn endpoints(&self) -> Vec<EndpointView> {
        self.desired().endpoints.values().map(|at| self.endpoint_view(&at.record)).collect()
    }

    pub async fn create_endpoint(&self, spec: EndpointSpec) -> Result<EndpointView, Error> {
        names::check("endpoint", &spec.name)?;
        if spec.auth_mode == AuthMode::AadToken && self.tokens.aad.is_none() {
            return Err(Error::Invalid(
                "auth_mode aad_token needs auth.aad (issuer and jwks_uri) in the daemon's config".into(),
            ));
        }
        if let Some(name) = spec.traffic.keys().chain(spec.mirror_traffic.keys()).next() {
            return Err(Error::Invalid(format!(
                "traffic names deployment {name}, which does not exist yet: create the endpoint without traffic, then its deployments (--all-traffic)"
            )));
        }
        let key = state::endpoint_key(&spec.name);
        if self.store.get(&key).is_some() {
            return Err(Error::Conflict(format!("endpoint {} already exists", spec.name)));
        }
        let record =
            EndpointRecord { spec, keys: Keys { primary: keys::new_key()?, secondary: keys::new_key()? } };
        self.commit(Txn::default().expect(&key, None).put(&key, &record)).await?;
        Ok(self.endpoint_view(&record))
    }

    /// Replaces the endpoint's spec (traffic, mirror, description, tags); its keys stay.
    /// Traffic and mirror may name only the endpoint's own deployments.
    pub async fn update_endpoint(&self, spec: EndpointSpec) -> Result<EndpointView, Error> {
        let desired = self.desired();
        let at = desired
            .endpoints
            .get(&spec.name)
            .ok_or_else(|| Error::NotFound(format!("endpoint {} not found", spec.name)))?;
        if spec.auth_mode != at.record.spec.auth_mode {
            return Err(Error::Invalid("auth_mode cannot change; create a new endpoint instead".into()));
        }
        endpoint::check_shares(&spec)
            .map_err(|(field, message)| Error::Invalid(format!("{field}: {message}")))?;
        let exists = |d: &String| desired.deployments.contains_key(&(spec.name.clone(), d.clone()));
        let mut named = spec.traffic.iter().chain(spec.mirror_traffic.iter()).filter(|(_, p)| **p > 0);
        if let Some((missing, _)) = named.find(|(d, _)| !exists(d)) {
            return Err(Error::NotFound(format!("deployment {missing} not found on endpoint {}", spec.name)));
        }
        let key = state::endpoint_key(&spec.name);
        let mut record = at.record.clone();
        record.spec = spec;
        let deployments = desired.deployments_of(&record.spec.name).map(|d| {
            let dkey = state::deployment_key(&record.spec.name, &d.record.spec.name);
            (dkey, d.revision)
        });
        // The deployments it names must still be there when this commits.
        let txn = deployments
            .fold(Txn::default().expect(&key, Some(at.revision)), |t, (k, r)| t.expect(&k, Some(r)));
        self.commit(txn.put(&key, &record)).await?;
        Ok(self.endpoint_view(&record))
    }

    /// Deletes the endpoint and its deployments; with `wait`, returns once their containers
    /// are gone.
    pub async fn delete_endpoint(&self, name: &str, wait: bool) -> Result<(), Error> {
        let desired = self.desired();
        let at = desired
            .endpoints
            .get(name)
            .ok_or_else(|| Error::NotFound(format!("endpoint {name} not found")))?;
        let key = state::endpoint_key(name);
        let mut txn = Txn::default().expect(&key, Some(at.revision)).delete(&key);
        let mut ids = Vec::new();
        for deployment in desired.deployments_of(name) {
            let d = &deployment.record.spec.name;
            let dkey = state::deployment_key(name, d);
            txn = txn
                .expect(&dkey, Some(deployment.revision))
                .delete(&dkey)
                .delete(&state::outcome_key(name, d));
            ids.push((name.to_string(), d.clone()));
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
        let record = Self::endpoint_record(&desired, name)?;
        match record.spec.auth_mode {
            AuthMode::Key => Ok(Credentials::Keys {
                primary_key: record.keys.primary,
                secondary_key: record.keys.secondary,
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
        let at = desired
            .endpoints
            .get(name)
            .ok_or_else(|| Error::NotFound(format!("endpoint {name} not found")))?;
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
        let at = desired.deployments.get(id)?;
        let spec = at.record.spec.clone();
        let outcome = desired.current_outcome(id);
        // An outcome of an earlier revision means this one is an update.
        let updating = desired.outcomes.contains_key(id);
        let provisioning_state = match (self.reconciler.busy(id), outcome) {
            (Some(Busy::Removing), _) => "Deleting",
            (_, Some(o)) if o.succeeded => "Succeeded",
            (_, Some(_)) => "Failed",
            (_, None) if updating => "Updating",
            (_, None) => "Creating",
        };
        let instances = self.supervisor.instances(&id.0, &id.1);
        let mut warnings: Vec<String> = outcome.and_then(|o| o.reason.clone()).into_iter().collect();
        if desired.workspace.public_network_access == Access::Disabled
            && spec.egress_public_network_access == Access::Enabled
        {
            warnings.push(format!(
                "workspace {} has public network access disabled: this deployment (egress enabled) is no longer reachable from public networks and has lost its public path to workspace resources; {SUPPORTED_PAIRS}",
                desired.workspace.name
            ));
        }
        warnings.extend(views::instance_warnings(&instances));
        Some(DeploymentView {
            health: views::health(&instances, spec.instance_count),
            spec,
            provisioning_state,
            instances,
            egress: Egress {
                private_endpoints: self
                    .reconciler
                    .guard()
                    .addresses(&id.0, &id.1)
                    .into_iter()
                    .map(|(name, address)| EgressEndpoint { name, address })
                    .collect(),
            },
            warnings,
        })
    }

    pub fn deployment(&self, endpoint: &str, name: &str) -> Result<DeploymentView, Error> {
        let desired = self.desired();
        Self::endpoint_record(&desired, endpoint)?;
        self.deployment_view(&desired, &(endpoint.to_string(), name.to_string()))
            .ok_or_else(|| Error::NotFound(format!("deployment {name} not found on endpoint {endpoint}")))
    }

    pub fn deployments(&self, endpoint: &str) -> Result<Vec<DeploymentView>, Error> {
        let desired = self.desired();
        Self::endpoint_record(&desired, endpoint)?;
        Ok(desired
            .deployments
            .keys()
            .filter(|(ep, _)| ep == endpoint)
            .filter_map(|id| self.deployment_view(&desired, id))
            .collect())
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
        recheck(&spec)?;
        let desired = self.desired();
        let endpoint = spec.endpoint_name.clone();
        let ep = desired
            .endpoints
            .get(&endpoint)
            .ok_or_else(|| Error::NotFound(format!("endpoint {endpoint} not found")))?;
        let id = (endpoint.clone(), spec.name.clone());
        // Docker names join endpoint and deployment with '-': two pairs must not meet there.
        let joined = format!("{}-{}", id.0, id.1);
        if let Some((e, d)) =
            desired.deployments.keys().find(|(e, d)| *e != id.0 && format!("{e}-{d}") == joined)
        {
            return Err(Error::Conflict(format!(
                "deployment {} on endpoint {endpoint} would share its container names with deployment {d} on endpoint {e}; choose another name",
                id.1
            )));
        }
        if desired.deployments.contains_key(&id) {
            return Err(Error::Conflict(format!(
                "deployment {} already exists on endpoint {endpoint}",
                spec.name
            )));
        }
        if desired.workspace.public_network_access == Access::Disabled
            && spec.egress_public_network_access == Access::Enabled
        {
            return Err(Error::Invalid(format!(
                "unsupported pair: workspace {} has public network access disabled, and deployment {} has egress_public_network_access enabled; {SUPPORTED_PAIRS}",
                desired.workspace.name, spec.name
            )));
        }
        self.check_capacity(&desired, &spec)?;
        // A private deployment switches its workspace to public access disabled (the seed's
        // rule), in the same commit.
        let switch_workspace = spec.egress_public_network_access == Access::Disabled
            && desired.workspace.public_network_access == Access::Enabled;
        let key = state::deployment_key(&endpoint, &spec.name);
        let record = DeploymentRecord { spec, all_traffic };
        let mut txn = Txn::default();
        if switch_workspace {
            let mut workspace = desired.workspace.clone();
            workspace.public_network_access = Access::Disabled;
            txn = txn.expect(state::WORKSPACE, desired.workspace_revision).put(state::WORKSPACE, &workspace);
            let _ = sink.send(format!(
                "warning: deployment {} has egress disabled, so workspace {} now has public network access disabled: its endpoints answer private ingress only",
                id.1, desired.workspace.name
            ));
            let public = self.public_deployments(&desired);
            if !public.is_empty() {
                let _ = sink.send(format!(
                    "warning: these deployments have egress enabled and are no longer reachable from public networks: {}",
                    public.join(", ")
                ));
            }
        }
        let txn = txn
            .expect(&state::endpoint_key(&endpoint), Some(ep.revision))
            .expect(&key, None)
            .put(&key, &record)
            .delete(&state::outcome_key(&id.0, &id.1));
        let progress = self.supervisor.progress();
        let revision = self.commit(txn).await?;
        if wait {
            self.wait_outcome(&id, revision, progress, sink).await?;
        }
        let desired = self.desired();
        self.deployment_view(&desired, &id)
            .ok_or_else(|| Error::Other(format!("deployment {} was deleted meanwhile", id.1)))
    }

    /// Stores a new spec for a deployment; the reconciler rolls its instances to it one
    /// surge instance at a time. With `wait`, returns once every instance runs the new spec.
    pub async fn update_deployment(
        &self,
        spec: DeploymentSpec,
        wait: bool,
        sink: &ProgressSink,
    ) -> Result<DeploymentView, Error> {
        recheck(&spec)?;
        let desired = self.desired();
        let endpoint = spec.endpoint_name.clone();
        if !desired.endpoints.contains_key(&endpoint) {
            return Err(Error::NotFound(format!("endpoint {endpoint} not found")));
        }
        let id = (endpoint.clone(), spec.name.clone());
        let at = desired.deployments.get(&id).ok_or_else(|| {
            Error::NotFound(format!(
                "deployment {} not found on endpoint {endpoint}; create it first",
                spec.name
            ))
        })?;
        if at.record.spec.egress_public_network_access != spec.egress_public_network_access {
            return Err(Error::Invalid(format!(
                "egress_public_network_access of deployment {} cannot change on update: delete it and create it again",
                spec.name
            )));
        }
        self.check_capacity(&desired, &spec)?;
        let key = state::deployment_key(&endpoint, &spec.name);
        let record = DeploymentRecord { spec, all_traffic: false };
        let progress = self.supervisor.progress();
        let revision = self.commit(Txn::default().expect(&key, Some(at.revision)).put(&key, &record)).await?;
        if wait {
            self.wait_outcome(&id, revision, progress, sink).await?;
        }
        let desired = self.desired();
        self.deployment_view(&desired, &id)
            .ok_or_else(|| Error::Other(format!("deployment {} was deleted meanwhile", id.1)))
    }

    /// Refuses a spec whose instances, with one surge instance for the rollout, would take
    /// more memory than the host has beside this home's other deployments.
    fn check_capacity(&self, desired: &Desired, spec: &DeploymentSpec) -> Result<(), Error> {
        let id = (spec.endpoint_name.clone(), spec.name.clone());
        let others: u64 = desired
            .deployments
            .iter()
            .filter(|(other, _)| **other != id && desired.current_outcome(other).is_none_or(|o| o.succeeded))
            .map(|(_, at)| {
                u64::from(at.record.spec.instance_count) * container::memory_bytes(&at.record.spec)
            })
            .sum();
        let per_instance = container::memory_bytes(spec);
        let wanted = (u64::from(spec.instance_count) + 1) * per_instance;
        let host = self.supervisor.host().memory_bytes;
        if others + wanted <= host {
            return Ok(());
        }
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        Err(Error::Invalid(format!(
            "not enough memory: {} × {} ({:.1} GiB each) plus one surge instance needs {:.1} GiB, but this host has {:.1} GiB and this home's other deployments take {:.1} GiB",
            spec.instance_count,
            spec.instance_type,
            gib(per_instance),
            gib(wanted),
            gib(host),
            gib(others)
        )))
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
        let logs = self
            .supervisor
            .logs(endpoint, name, instance, lines)
            .await
            .map_err(|e| Error::Other(e.to_string()))?;
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
        let mut changes = self.store.watch();
        loop {
            let desired = self.desired();
            match desired.deployments.get(id) {
                None => {
                    return Err(Error::Other(format!(
                        "deployment {} was deleted while it was being created",
                        id.1
                    )));
                }
                Some(at) if at.revision != revision => {
                    return Err(Error::Conflict(format!(
                        "deployment {} was changed by another command meanwhile",
                        id.1
                    )));
                }
                Some(_) => {}
            }
            if let Some(outcome) = desired.current_outcome(id) {
                if !outcome.succeeded {
                    let reason = outcome.reason.clone().unwrap_or_default();
                    return Err(Error::Failed {
                        message: format!("deployment {} failed: {reason}", id.1),
                        logs: outcome.logs.clone(),
                    });
                }
                let now = *changes.borrow_and_update();
                let _ = self.reconciler.published().wait_for(|p| *p >= now).await;
                return Ok(());
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() {
                    return Err(Error::Other("the store closed".into()));
                },
                line = progress.recv() => match line {
                    Ok(p) if p.key == *id => {
                        let _ = sink.send(p.message);
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => progress = self.supervisor.progress(),
                },
            }
        }
    }

    /// Refused while the deployment takes live or mirrored traffic.
    pub async fn delete_deployment(&self, endpoint: &str, name: &str, wait: bool) -> Result<(), Error> {
        let desired = self.desired();
        let ep = desired
            .endpoints
            .get(endpoint)
            .ok_or_else(|| Error::NotFound(format!("endpoint {endpoint} not found")))?;
        let id = (endpoint.to_string(), name.to_string());
        let at = desired
            .deployments
            .get(&id)
            .ok_or_else(|| Error::NotFound(format!("deployment {name} not found on endpoint {endpoint}")))?;
        let share = ep.record.spec.traffic.get(name).copied().unwrap_or(0)
            + ep.record.spec.mirror_traffic.get(name).copied().unwrap_or(0);
        if share > 0 {
            return Err(Error::Invalid(format!(
                "deployment {name} still takes traffic on endpoint {endpoint}; move its traffic to another deployment first"
            )));
        }
        let key = state::deployment_key(endpoint, name);
        let txn = Txn::default()
            .expect(&state::endpoint_key(endpoint), Some(ep.revision))
            .expect(&key, Some(at.revision))
            .delete(&key)
            .delete(&state::outcome_key(endpoint, name));
        self.commit(txn).await?;
        if wait {
            self.wait_released(&[id]).await;
        }
        Ok(())
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

/// What the daemon checks again on a spec that arrived over the admin socket: the
/// invariants that keep names safe as store keys and Docker names, and values in range.
fn recheck(spec: &DeploymentSpec) -> Result<(), Error> {
    names::check("deployment", &spec.name)?;
    names::check("endpoint", &spec.endpoint_name)?;
    sku::lookup(&spec.instance_type)?;
    let in_range = (1..=MAX_INSTANCE_COUNT).contains(&spec.instance_count)
        && (1..=MAX_REQUEST_TIMEOUT_MS).contains(&spec.request_settings.request_timeout_ms)
        && !spec.environment.image.trim().is_empty();
    if !in_range {
        return Err(Error::Invalid(
            "the deployment spec is out of range; check it with `moat validate`".into(),
        ));
    }
    Ok(())
}
