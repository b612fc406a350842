//! The supervisor: makes a deployment's containers match its spec (creating, adopting what
//! an earlier daemon left running, rolling to a new spec one surge instance at a time,
//! scaling), drains instances before it stops them, and reports instance changes through a
//! counter that bumps on every change (subscribers then read a snapshot).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{broadcast, watch};

use std::net::IpAddr;

use crate::engine::{ContainerInfo, Engine, Host, Limits, NetworkInfo, NewContainer};
use crate::instance::{Ctx, Instance, InstanceState, InstanceStatus, Lease, Start};
use crate::probe::Prober;
use crate::rollout::{self, Step};
use crate::spec::DeploymentSpec;
use crate::{Config, Error, names};

/// (endpoint, deployment)
pub type DeploymentKey = (String, String);

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

/// A line of progress about one deployment (an image pull, for now), for whoever waits on it.
#[derive(Debug, Clone)]
pub struct Progress {
    pub key: DeploymentKey,
    pub message: String,
}

/// How many log lines a failed create carries back to the user.
const FAILURE_LOG_LINES: usize = 20;
/// Every container's process limit.
const PIDS_LIMIT: i64 = 2048;
/// After an instance leaves routing, how long a request that had already picked it may
/// take to register as in flight.
const ROUTE_SETTLE: Duration = Duration::from_millis(100);

#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    ctx: Arc<Ctx>,
    host: Host,
    deployments: Mutex<HashMap<DeploymentKey, Running>>,
    progress: broadcast::Sender<Progress>,
}

/// A deployment this daemon supervises.
struct Running {
    spec: Arc<DeploymentSpec>,
    hash: String,
    instances: Vec<Arc<Instance>>,
}

fn key_of(spec: &DeploymentSpec) -> DeploymentKey {
    (spec.endpoint.clone(), spec.deployment.clone())
}

impl Supervisor {
    pub async fn connect(config: Config) -> Result<Supervisor, Error> {
        let engine = Engine::connect().await?;
        let host = engine.host().await?;
        let ctx = Arc::new(Ctx {
            engine,
            prober: Prober::default(),
            changes: watch::channel(0).0,
            backoff: config.backoff,
            stop_timeout: config.stop_timeout,
        });
        let inner = Inner {
            config,
            ctx,
            host,
            deployments: Mutex::new(HashMap::new()),
            progress: broadcast::channel(256).0,
        };
        Ok(Supervisor { inner: Arc::new(inner) })
    }

    /// Progress lines of every deployment being applied.
    pub fn progress(&self) -> broadcast::Receiver<Progress> {
        self.inner.progress.subscribe()
    }

    fn deployments(&self) -> MutexGuard<'_, HashMap<DeploymentKey, Running>> {
        self.inner.deployments.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn engine(&self) -> &Engine {
        &self.inner.ctx.engine
    }

    /// The CPUs and memory Docker reports for this machine.
    pub fn host(&self) -> Host {
        self.inner.host
    }

    /// Bumps whenever an instance appears, leaves, or changes state or readiness.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.ctx.changes.subscribe()
    }

    /// The instances of one deployment as this daemon sees them, by index.
    pub fn instances(&self, endpoint: &str, deployment: &str) -> Vec<InstanceStatus> {
        let key = (endpoint.to_string(), deployment.to_string());
        self.deployments()
            .get(&key)
            .map(|r| r.instances.iter().map(|i| i.snapshot()).collect())
            .unwrap_or_default()
    }

    /// The ready instances of every deployment: what the route table is built from.
    pub fn leases(&self) -> HashMap<DeploymentKey, Vec<Lease>> {
        self.deployments()
            .iter()
            .map(|(key, r)| (key.clone(), r.instances.iter().filter_map(|i| i.snapshot().lease()).collect()))
            .collect()
    }

    /// Brings a deployment's containers to its spec and returns once every instance passes
    /// readiness. A new deployment adopts containers already running from the same spec; a
    /// running one rolls to the new spec (or scales) without dropping below its capacity. On
    /// failure the deployment's containers are removed and the error carries the logs.
    pub async fn apply(&self, spec: DeploymentSpec) -> Result<(), ApplyError> {
        let key = key_of(&spec);
        let spec = Arc::new(spec);
        let hash = spec.container_hash();
        let current = self.deployments().get(&key).map(|r| (r.hash.clone(), r.spec.clone()));
        let result = match current {
            None => self.bring_up(&key, spec, &hash).await,
            Some((old_hash, old_spec)) => self.roll(&key, spec, &hash, old_hash == hash, &old_spec).await,
        };
        if let Err(e) = &result {
            tracing::warn!(endpoint = %key.0, deployment = %key.1, reason = %e.reason, "deployment failed");
            if let Err(clean) = self.remove(&key.0, &key.1).await {
                tracing::warn!(error = %clean, "removing the failed deployment's containers");
            }
        }
        result
    }

    async fn prepare(&self, spec: &DeploymentSpec) -> Result<(), ApplyError> {
        if !self.engine().image_present(&spec.image).await? {
            let key = key_of(spec);
            let report = |message: String| {
                let _ = self.inner.progress.send(Progress { key: key.clone(), message });
            };
            report(format!("pulling image {}", spec.image));
            self.engine()
                .pull(&spec.image, |line| report(format!("pulling image {}: {line}", spec.image)))
                .await?;
        }
        self.network(&spec.endpoint, &spec.deployment, spec.private).await?;
        Ok(())
    }

    /// Makes the deployment's network (internal for a private deployment) if it is not there
    /// yet, and says what it is: the egress guard serves its bridge.
    pub async fn network(
        &self,
        endpoint: &str,
        deployment: &str,
        private: bool,
    ) -> Result<NetworkInfo, Error> {
        let home = &self.inner.config.home_id;
        let network = names::network(home, endpoint, deployment);
        let labels = names::deployment_labels(home, endpoint, deployment);
        self.engine().ensure_network(&network, labels, private).await?;
        self.engine().inspect_network(&network).await
    }

    async fn bring_up(
        &self,
        key: &DeploymentKey,
        spec: Arc<DeploymentSpec>,
        hash: &str,
    ) -> Result<(), ApplyError> {
        self.prepare(&spec).await?;
        let home = self.inner.config.home_id.as_str();
        let network = names::network(home, &key.0, &key.1);
        let mut existing = self
            .engine()
            .list_containers(&names::filters(&[
                (names::HOME, home),
                (names::ENDPOINT, &key.0),
                (names::DEPLOYMENT, &key.1),
            ]))
            .await?;
        let index_of = |c: &ContainerInfo| c.labels.get(names::INSTANCE).and_then(|i| i.parse::<u32>().ok());
        existing.sort_by_key(index_of);
        let mut adopted = Vec::new();
        for container in existing {
            let same_spec = container.labels.get(names::SPEC_HASH).map(String::as_str) == Some(hash);
            match index_of(&container) {
                Some(index)
                    if same_spec && container.running && adopted.len() < spec.instance_count as usize =>
                {
                    let mut status = InstanceStatus::new(format!("{}-{index}", key.1));
                    status.container_id = Some(container.id.clone());
                    status.address = container.addresses.get(&network).copied();
                    status.state = InstanceState::Starting;
                    status.ever_ready = true;
                    status.reason = Some("adopted; waiting for the readiness probe".into());
                    adopted.push(Instance::new(index, status));
                }
                _ => self.engine().remove(&container.id).await?,
            }
        }
        for instance in &adopted {
            instance.supervise(self.inner.ctx.clone(), spec.clone(), Start { settled: true });
        }
        let missing = (spec.instance_count as usize).saturating_sub(adopted.len());
        self.deployments().insert(
            key.clone(),
            Running { spec: spec.clone(), hash: hash.to_string(), instances: adopted.clone() },
        );
        self.inner.ctx.notify();
        for _ in 0..missing {
            self.add_instance(key, &spec, hash).await?;
        }
        self.wait_ready(&adopted, spec.readiness_deadline()).await
    }

    async fn roll(
        &self,
        key: &DeploymentKey,
        spec: Arc<DeploymentSpec>,
        hash: &str,
        same_shape: bool,
        old_spec: &DeploymentSpec,
    ) -> Result<(), ApplyError> {
        if !same_shape {
            self.prepare(&spec).await?;
        }
        let current: Vec<Arc<Instance>> = {
            let mut deployments = self.deployments();
            let Some(running) = deployments.get_mut(key) else {
                return Err(ApplyError {
                    reason: "the deployment was removed meanwhile".into(),
                    logs: String::new(),
                });
            };
            running.spec = spec.clone();
            running.instances.clone()
        };
        if same_shape && *old_spec != *spec {
            // New probe settings or routes: the same containers, supervised anew.
            for instance in &current {
                instance.supervise(self.inner.ctx.clone(), spec.clone(), Start { settled: true });
            }
        }
        let indices: Vec<u32> = current.iter().map(|i| i.index).collect();
        for step in rollout::steps(&indices, spec.instance_count as usize, same_shape) {
            match step {
                Step::Add => self.add_instance(key, &spec, hash).await?,
                Step::Drain(index) => self.drain_instance(key, index, spec.drain_grace).await?,
            }
        }
        if let Some(running) = self.deployments().get_mut(key) {
            running.hash = hash.to_string();
        }
        Ok(())
    }

    /// Starts one more instance and waits until it passes readiness.
    async fn add_instance(
        &self,
        key: &DeploymentKey,
        spec: &Arc<DeploymentSpec>,
        hash: &str,
    ) -> Result<(), ApplyError> {
        let home = self.inner.config.home_id.clone();
        let instance = {
            let mut deployments = self.deployments();
            let Some(running) = deployments.get_mut(key) else {
                return Err(ApplyError {
                    reason: "the deployment was removed meanwhile".into(),
                    logs: String::new(),
                });
            };
            let index = running.instances.iter().map(|i| i.index + 1).max().unwrap_or(0);
            let instance = Instance::new(index, InstanceStatus::new(format!("{}-{index}", key.1)));
            running.instances.push(instance.clone());
            instance
        };
        self.inner.ctx.notify();
        let network = names::network(&home, &key.0, &key.1);
        let mut labels = names::deployment_labels(&home, &key.0, &key.1);
        labels.insert(names::INSTANCE.to_string(), instance.index.to_string());
        labels.insert(names::SPEC_HASH.to_string(), hash.to_string());
        let cpus = spec.cpus.clamp(1, self.inner.host.cpus);
        let created = self
            .engine()
            .create_and_start(NewContainer {
                name: &names::container(&home, &key.0, &key.1, instance.index),
                image: &spec.image,
                env: spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
                labels,
                binds: spec
                    .mounts
                    .iter()
                    .map(|m| {
                        let mode = if m.read_only { "ro" } else { "rw" };
                        format!("{}:{}:{mode}", m.host_path.display(), m.container_path)
                    })
                    .collect(),
                network: &network,
                dns: spec.dns.iter().map(IpAddr::to_string).collect(),
                limits: Limits {
                    memory_bytes: i64::try_from(spec.memory_bytes).unwrap_or(i64::MAX),
                    nano_cpus: i64::from(cpus) * 1_000_000_000,
                    pids: PIDS_LIMIT,
                },
            })
            .await?;
        for warning in &created.warnings {
            tracing::warn!(endpoint = %key.0, deployment = %key.1, warning = %warning, "Docker warned about a new container");
        }
        let address =
            self.engine().inspect(&created.id).await?.and_then(|i| i.addresses.get(&network).copied());
        {
            let mut s = instance.lock();
            s.container_id = Some(created.id);
            s.address = address;
            s.state = InstanceState::Starting;
            s.docker_warnings = created.warnings;
            s.reason = Some("waiting for the readiness probe".into());
        }
        instance.supervise(self.inner.ctx.clone(), spec.clone(), Start { settled: false });
        self.inner.ctx.notify();
        self.wait_ready(&[instance], spec.readiness_deadline()).await
    }

    /// Waits until these instances pass readiness; fails as soon as one exits first.
    async fn wait_ready(&self, instances: &[Arc<Instance>], deadline: Duration) -> Result<(), ApplyError> {
        let mut changes = self.subscribe();
        let give_up = tokio::time::Instant::now() + deadline;
        loop {
            let statuses: Vec<InstanceStatus> = instances.iter().map(|i| i.snapshot()).collect();
            if let Some(dead) = statuses.iter().find(|i| i.state == InstanceState::Exited) {
                return Err(self.failure(dead, "exited before it was ready").await);
            }
            if statuses.iter().all(|i| i.ready) {
                return Ok(());
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() {
                    return Err(ApplyError { reason: "the supervisor stopped".into(), logs: String::new() });
                },
                _ = tokio::time::sleep_until(give_up) => {
                    let Some(slow) = statuses.iter().find(|i| !i.ready) else { continue };
                    let what = format!("was not ready within {}s", deadline.as_secs());
                    return Err(self.failure(slow, &what).await);
                }
            }
        }
    }

    async fn failure(&self, instance: &InstanceStatus, what: &str) -> ApplyError {
        let why = instance.reason.as_deref().unwrap_or("no reason reported");
        let logs = match (&instance.container_id, instance.last_logs.is_empty()) {
            (_, false) => instance.last_logs.clone(),
            (Some(id), true) => self.engine().logs_tail(id, FAILURE_LOG_LINES).await.unwrap_or_default(),
            (None, true) => String::new(),
        };
        ApplyError { reason: format!("instance {} {what}: {why}", instance.name), logs }
    }

    /// Takes one instance out of routing, lets its in-flight requests finish (up to
    /// `grace`), then stops it (SIGTERM, SIGKILL after the stop timeout) and removes it.
    async fn drain_instance(&self, key: &DeploymentKey, index: u32, grace: Duration) -> Result<(), Error> {
        let instance =
            self.deployments().get(key).and_then(|r| r.instances.iter().find(|i| i.index == index).cloned());
        let Some(instance) = instance else { return Ok(()) };
        let result = self.drain(&instance, grace).await;
        if let Some(running) = self.deployments().get_mut(key) {
            running.instances.retain(|i| i.index != index);
        }
        self.inner.ctx.notify();
        result
    }

    async fn drain(&self, instance: &Instance, grace: Duration) -> Result<(), Error> {
        instance.stop_supervising();
        let (id, address) = {
            let mut s = instance.lock();
            s.state = InstanceState::Stopping;
            s.ready = false;
            s.reason = Some("draining".into());
            (s.container_id.clone(), s.address)
        };
        self.inner.ctx.notify();
        if let Some(ip) = address {
            tokio::time::sleep(ROUTE_SETTLE).await;
            let until = tokio::time::Instant::now() + grace;
            while (self.inner.config.in_flight)(ip) > 0 && tokio::time::Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        match id {
            Some(id) => self.engine().stop_and_remove(&id, self.inner.config.stop_timeout).await,
            None => Ok(()),
        }
    }

    /// Drains and removes a deployment's instances, any other container it left, and its
    /// network.
    pub async fn remove(&self, endpoint: &str, deployment: &str) -> Result<(), Error> {
        let key = (endpoint.to_string(), deployment.to_string());
        let (instances, grace) = match self.deployments().get(&key) {
            Some(r) => (r.instances.clone(), r.spec.drain_grace),
            None => (Vec::new(), Duration::ZERO),
        };
        let drains = instances.iter().map(|i| self.drain(i, grace));
        let drained = futures_util::future::join_all(drains).await;
        self.deployments().remove(&key);
        self.inner.ctx.notify();
        drained.into_iter().collect::<Result<(), Error>>()?;
        let home = self.inner.config.home_id.as_str();
        let leftovers = self
            .engine()
            .list_containers(&names::filters(&[
                (names::HOME, home),
                (names::ENDPOINT, endpoint),
                (names::DEPLOYMENT, deployment),
            ]))
            .await?;
        for container in leftovers {
            self.engine().stop_and_remove(&container.id, self.inner.config.stop_timeout).await?;
        }
        self.engine().remove_network(&names::network(home, endpoint, deployment)).await
    }

    /// Removes this home's containers and networks of every deployment not in `keep`:
    /// what a restarted daemon does with the leftovers of deleted deployments.
    pub async fn remove_others(&self, keep: &HashSet<DeploymentKey>) -> Result<(), Error> {
        let home = self.inner.config.home_id.clone();
        let filters = names::filters(&[(names::HOME, &home)]);
        let mut stale: HashSet<DeploymentKey> = HashSet::new();
        let key_of = |labels: &HashMap<String, String>| {
            Some((labels.get(names::ENDPOINT)?.clone(), labels.get(names::DEPLOYMENT)?.clone()))
        };
        for container in self.engine().list_containers(&filters).await? {
            match key_of(&container.labels) {
                Some(key) if keep.contains(&key) => {}
                Some(key) => {
                    stale.insert(key);
                }
                None => self.engine().remove(&container.id).await?,
            }
        }
        for (name, labels) in self.engine().list_networks(&filters).await? {
            match key_of(&labels) {
                Some(key) if keep.contains(&key) => {}
                Some(key) => {
                    stale.insert(key);
                }
                None => self.engine().remove_network(&name).await?,
            }
        }
        let watched: Vec<DeploymentKey> = self.deployments().keys().cloned().collect();
        stale.extend(watched.into_iter().filter(|k| !keep.contains(k)));
        for (endpoint, deployment) in stale {
            self.remove(&endpoint, &deployment).await?;
        }
        Ok(())
    }

    /// The last `lines` log lines of each instance (or of the one named), by instance name.
    pub async fn logs(
        &self,
        endpoint: &str,
        deployment: &str,
        instance: Option<&str>,
        lines: usize,
    ) -> Result<Vec<(String, String)>, Error> {
        let mut out = Vec::new();
        for status in self.instances(endpoint, deployment) {
            if instance.is_some_and(|name| name != status.name) {
                continue;
            }
            if let Some(id) = &status.container_id {
                out.push((status.name.clone(), self.engine().logs_tail(id, lines).await?));
            }
        }
        Ok(out)
    }
}
