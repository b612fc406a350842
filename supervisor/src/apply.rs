//! Apply: brings a deployment's containers to its spec. The network is made, the image is
//! there (pulled if not, or built from its context by [`crate::build`]), what an earlier daemon left running is adopted, then the rollout
//! ([`crate::rollout`]) adds and drains one instance at a time until every instance is of
//! the spec and there are as many as it asks. A failed apply removes the deployment's
//! containers: a Failed deployment takes no traffic (CONTRACT.md).

use std::sync::Arc;
use std::time::Duration;

use moat_id::DeploymentId;

use crate::adopt::Adoption;
use crate::engine::{Limits, NewContainer};
use crate::instance::{Instance, InstanceStatus};
use crate::lifecycle::{Event, InstanceState, Life};
use crate::rollout::{self, Member, Step};
use crate::spec::DeploymentSpec;
use crate::supervisor::Supervisor;
use crate::watch::{self, Start};
use crate::{Error, names};

/// Why a deployment could not be brought up, with the failing container's last log lines.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason}")]
pub struct ApplyError {
    pub reason: String,
    pub logs: String,
}

impl From<Error> for ApplyError {
    fn from(e: Error) -> Self {
        ApplyError { reason: e.to_string(), logs: String::new() }
    }
}

impl ApplyError {
    fn gone() -> ApplyError {
        ApplyError { reason: "the deployment was removed meanwhile".into(), logs: String::new() }
    }
}

/// How many log lines a failed create carries back to the user.
pub(crate) const FAILURE_LOG_LINES: usize = 20;
/// Every container's process limit.
const PIDS_LIMIT: i64 = 2048;

impl Supervisor {
    /// Brings a deployment's containers to `spec` and returns once every instance is of it and
    /// passes readiness. On failure its containers are removed and the error carries the logs.
    pub async fn apply(&self, spec: DeploymentSpec, adoption: Adoption) -> Result<(), ApplyError> {
        let id = spec.id.clone();
        self.take_initializer_log(&id);
        let result = self.converge(&id, Arc::new(spec), adoption).await;
        if let Err(e) = &result {
            tracing::warn!(endpoint = %id.endpoint, deployment = %id.deployment, reason = %e.reason, "deployment failed");
            // The log of what failed outlives the removal: get-logs shows it.
            let log = self.take_initializer_log(&id);
            if let Err(clean) = self.remove(&id).await {
                tracing::warn!(error = %clean, "removing the failed deployment's containers");
            }
            self.keep_initializer_log(&id, log);
        }
        result
    }

    async fn converge(
        &self,
        id: &DeploymentId,
        spec: Arc<DeploymentSpec>,
        adoption: Adoption,
    ) -> Result<(), ApplyError> {
        let spec = self.prepare(spec).await?;
        let hash = spec.container_hash();
        if self.deployments().contains_key(id) {
            self.respec(id, &spec, &hash);
        } else {
            let on_trial = self.adopt(id, &spec, &hash, adoption).await?;
            self.wait_ready(&on_trial, spec.readiness_deadline()).await?;
        }
        loop {
            let members: Vec<Member> = self
                .members_of(id)
                .iter()
                .map(|i| {
                    let life = i.snapshot().life;
                    Member {
                        index: i.index,
                        current: i.hash == hash,
                        serving: life.ready && life.state.can_serve(),
                    }
                })
                .collect();
            match rollout::next(&members, spec.instance_count as usize) {
                None => {
                    // No instance runs another image now: the deployment's other builds go.
                    if let Err(e) = self.remove_built(id, Some(&spec.image)).await {
                        tracing::warn!(endpoint = %id.endpoint, deployment = %id.deployment, error = %e, "removing older built images");
                    }
                    return Ok(());
                }
                Some(Step::Add) => self.add_instance(id, &spec, &hash).await?,
                Some(Step::Drain(index)) => self.drain_instance(id, index, spec.drain_grace).await?,
            }
        }
    }

    /// The network, then the image: pulled with progress if missing, or built from its
    /// context on that network. Returns the spec with the image its containers run.
    async fn prepare(&self, spec: Arc<DeploymentSpec>) -> Result<Arc<DeploymentSpec>, ApplyError> {
        let report = |message: String| self.report(&spec.id, message);
        self.network(&spec.id, spec.private).await?;
        let spec = match &spec.build {
            Some(build) => {
                let image = self.built_image(&spec, build, &report).await?;
                Arc::new(DeploymentSpec { image, ..(*spec).clone() })
            }
            None => {
                if !self.engine().image_present(&spec.image).await? {
                    report(format!("pulling image {}", spec.image));
                    self.engine()
                        .pull(&spec.image, &|line| report(format!("pulling image {}: {line}", spec.image)))
                        .await?;
                } else {
                    report(format!("image {} is present", spec.image));
                }
                spec.clone()
            }
        };
        for mount in &spec.mounts {
            let access = if mount.read_only { "read-only" } else { "read-write" };
            report(format!("mounting {} at {} ({access})", mount.host_path.display(), mount.container_path));
        }
        Ok(spec)
    }

    /// A new spec for a running deployment. When only probes or routes changed, the
    /// containers stay and are watched anew with the new settings.
    fn respec(&self, id: &DeploymentId, spec: &Arc<DeploymentSpec>, hash: &str) {
        let (old, instances) = {
            let mut deployments = self.deployments();
            let Some(running) = deployments.get_mut(id) else { return };
            (std::mem::replace(&mut running.spec, spec.clone()), running.instances.clone())
        };
        if *old != **spec {
            for instance in instances.iter().filter(|i| i.hash == hash) {
                watch::watch(&self.inner.ctx, spec, instance, Start { settled: true });
            }
        }
    }

    pub(crate) fn register(
        &self,
        id: &DeploymentId,
        spec: Arc<DeploymentSpec>,
        instances: Vec<Arc<Instance>>,
    ) {
        self.deployments().insert(id.clone(), crate::supervisor::Running { spec, instances });
        self.inner.ctx.notify();
    }

    /// Starts one more instance of the current spec and waits until it passes readiness.
    async fn add_instance(
        &self,
        id: &DeploymentId,
        spec: &Arc<DeploymentSpec>,
        hash: &str,
    ) -> Result<(), ApplyError> {
        // Checked again for every container: the folder may have become a link since the spec
        // was checked, and what is mounted must be what was checked.
        for mount in &spec.mounts {
            if let Err(why) = self.inner.config.mounts.check_unchanged(&mount.host_path) {
                return Err(ApplyError {
                    reason: format!("cannot mount {}: {why}", mount.container_path),
                    logs: String::new(),
                });
            }
        }
        let instance = {
            let mut deployments = self.deployments();
            let running = deployments.get_mut(id).ok_or_else(ApplyError::gone)?;
            let index = running.instances.iter().map(|i| i.index + 1).max().unwrap_or(0);
            let status = InstanceStatus {
                name: format!("{}-{index}", id.deployment),
                container_id: None,
                address: None,
                life: Life::new(self.inner.config.backoff),
                last_logs: String::new(),
                docker_warnings: Vec::new(),
            };
            let instance = Instance::new(index, hash, status);
            running.instances.push(instance.clone());
            instance
        };
        self.inner.ctx.notify();
        let home = self.home();
        let network = names::network(home, id);
        let mut labels = names::deployment_labels(home, id);
        labels.insert(names::INSTANCE.to_string(), instance.index.to_string());
        labels.insert(names::SPEC_HASH.to_string(), hash.to_string());
        let cpus = spec.cpus.clamp(1, self.inner.host.cpus);
        let created = self
            .engine()
            .create_and_start(NewContainer {
                name: names::container(home, id, instance.index),
                image: spec.image.clone(),
                env: spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
                labels,
                mounts: spec.mounts.clone(),
                network: network.clone(),
                dns: spec.dns.iter().map(|ip| ip.to_string()).collect(),
                limits: Limits {
                    memory_bytes: i64::try_from(spec.memory_bytes).unwrap_or(i64::MAX),
                    nano_cpus: i64::from(cpus) * 1_000_000_000,
                    pids: PIDS_LIMIT,
                },
            })
            .await;
        let created = match created {
            Ok(created) => created,
            Err(e) => {
                instance.on(
                    &self.inner.ctx,
                    Event::Exited { code: None, why: e.to_string(), ran_for: Duration::ZERO },
                );
                return Err(e.into());
            }
        };
        for warning in &created.warnings {
            tracing::warn!(endpoint = %id.endpoint, deployment = %id.deployment, warning = %warning, "Docker warned about a new container");
        }
        let address =
            self.engine().inspect(&created.id).await?.and_then(|i| i.addresses.get(&network).copied());
        instance.update(|s| {
            s.container_id = Some(created.id);
            s.address = address;
            s.docker_warnings = created.warnings;
        });
        instance.on(&self.inner.ctx, Event::Created);
        watch::watch(&self.inner.ctx, spec, &instance, Start { settled: false });
        self.wait_ready(&[instance], spec.readiness_deadline()).await
    }

    /// Waits until these instances pass readiness; fails as soon as one exits first.
    pub(crate) async fn wait_ready(
        &self,
        instances: &[Arc<Instance>],
        deadline: Duration,
    ) -> Result<(), ApplyError> {
        let mut changes = self.subscribe();
        let give_up = tokio::time::Instant::now() + deadline;
        loop {
            let statuses: Vec<InstanceStatus> = instances.iter().map(|i| i.snapshot()).collect();
            if let Some(dead) = statuses.iter().find(|i| i.life.state == InstanceState::Exited) {
                return Err(self.failure(dead, "exited before it was ready").await);
            }
            if statuses.iter().all(|i| i.life.ready) {
                return Ok(());
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() {
                    return Err(ApplyError { reason: "the supervisor stopped".into(), logs: String::new() });
                },
                _ = tokio::time::sleep_until(give_up) => {
                    // Probe failures change only the reason, which wakes nobody: look again.
                    let statuses: Vec<InstanceStatus> = instances.iter().map(|i| i.snapshot()).collect();
                    let Some(slow) = statuses.iter().find(|i| !i.life.ready) else { continue };
                    let what = format!("was not ready within {}s", deadline.as_secs());
                    return Err(self.failure(slow, &what).await);
                }
            }
        }
    }

    async fn failure(&self, instance: &InstanceStatus, what: &str) -> ApplyError {
        let why = instance.life.reason.as_deref().unwrap_or("no reason reported");
        let logs = match (&instance.container_id, instance.last_logs.is_empty()) {
            (_, false) => instance.last_logs.clone(),
            (Some(id), true) => self.engine().logs(id, FAILURE_LOG_LINES).await.unwrap_or_default(),
            (None, true) => String::new(),
        };
        ApplyError { reason: format!("instance {} {what}: {why}", instance.name), logs }
    }
}
