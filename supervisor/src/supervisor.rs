//! The supervisor: makes a deployment's containers match its spec, adopting what an earlier
//! daemon left running, and reports instance changes through a counter that bumps on every
//! change (subscribers then read a snapshot).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::engine::{ContainerInfo, Engine, NewContainer};
use crate::instance::{self, Instance, InstanceState, InstanceStatus, Lease, Watch};
use crate::probe::Prober;
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

/// How many log lines a failed create carries back to the user.
const FAILURE_LOG_LINES: usize = 20;

#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    engine: Engine,
    prober: Prober,
    changes: watch::Sender<u64>,
    deployments: Mutex<HashMap<DeploymentKey, Running>>,
}

/// A deployment this daemon watches.
struct Running {
    hash: String,
    instances: Vec<Arc<Instance>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Supervisor {
    pub async fn connect(config: Config) -> Result<Supervisor, Error> {
        let engine = Engine::connect().await?;
        Ok(Supervisor {
            inner: Arc::new(Inner {
                config,
                engine,
                prober: Prober::default(),
                changes: watch::channel(0).0,
                deployments: Mutex::new(HashMap::new()),
            }),
        })
    }

    fn deployments(&self) -> MutexGuard<'_, HashMap<DeploymentKey, Running>> {
        self.inner.deployments.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bumps whenever an instance appears, leaves, or changes readiness.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// The instances of one deployment as this daemon sees them.
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
            .map(|(key, r)| {
                let leases = r.instances.iter().filter_map(|i| i.snapshot().lease()).collect();
                (key.clone(), leases)
            })
            .collect()
    }

    /// Brings a deployment's containers to its spec and waits until every instance passes
    /// readiness. Containers already running from the same spec are adopted as they are. On
    /// failure the deployment's containers are removed and the error carries the logs.
    pub async fn apply(&self, spec: DeploymentSpec) -> Result<(), ApplyError> {
        let key = (spec.endpoint.clone(), spec.deployment.clone());
        let hash = spec.container_hash();
        if let Some(running) = self.deployments().get(&key)
            && running.hash == hash
            && running.instances.len() == spec.instance_count as usize
        {
            return Ok(());
        }
        // Stop watching the old generation; its containers are adopted or replaced below.
        self.deployments().remove(&key);

        let result = self.bring_up(spec, hash).await;
        if let Err(e) = &result {
            tracing::warn!(endpoint = %key.0, deployment = %key.1, reason = %e.reason, "deployment failed");
            if let Err(clean) = self.remove(&key.0, &key.1).await {
                tracing::warn!(error = %clean, "removing the failed deployment's containers");
            }
        }
        result
    }

    async fn bring_up(&self, spec: DeploymentSpec, hash: String) -> Result<(), ApplyError> {
        let spec = Arc::new(spec);
        let engine = &self.inner.engine;
        let home = self.inner.config.home_id.as_str();
        let (endpoint, deployment) = (spec.endpoint.as_str(), spec.deployment.as_str());
        if !engine.image_present(&spec.image).await? {
            return Err(Error::ImageMissing(spec.image.clone()).into());
        }
        let network = names::network(home, endpoint, deployment);
        let labels = names::deployment_labels(home, endpoint, deployment);
        engine.ensure_network(&network, labels.clone(), false).await?;

        let existing = engine
            .list_containers(&names::filters(&[
                (names::HOME, home),
                (names::ENDPOINT, endpoint),
                (names::DEPLOYMENT, deployment),
            ]))
            .await?;
        let count = spec.instance_count as usize;
        let mut adopt: Vec<Option<ContainerInfo>> = vec![None; count];
        for container in existing {
            let slot = container.labels.get(names::INSTANCE).and_then(|i| i.parse::<usize>().ok());
            let same_spec = container.labels.get(names::SPEC_HASH) == Some(&hash);
            match slot {
                Some(i) if i < count && same_spec && container.running && adopt[i].is_none() => {
                    adopt[i] = Some(container);
                }
                _ => engine.remove(&container.id).await?,
            }
        }

        let mut running = Running { hash: hash.clone(), instances: Vec::new(), tasks: Vec::new() };
        for (index, adopted) in adopt.into_iter().enumerate() {
            let index = index as u32;
            let name = format!("{deployment}-{index}");
            let (info, was_adopted) = match adopted {
                Some(info) => (info, true),
                None => {
                    let container_name = names::container(home, endpoint, deployment, index);
                    let mut labels = labels.clone();
                    labels.insert(names::INSTANCE.to_string(), index.to_string());
                    labels.insert(names::SPEC_HASH.to_string(), hash.clone());
                    let id = engine
                        .create_and_start(NewContainer {
                            name: &container_name,
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
                        })
                        .await?;
                    let info = engine.inspect(&id).await?.ok_or_else(|| ApplyError {
                        reason: format!("container {container_name} vanished right after it started"),
                        logs: String::new(),
                    })?;
                    (info, false)
                }
            };
            let instance = Instance::new(InstanceStatus {
                name,
                container_id: Some(info.id.clone()),
                address: info.addresses.get(&network).copied(),
                state: InstanceState::Running,
                ready: false,
                restarts: 0,
                last_exit_code: None,
                reason: Some("waiting for the readiness probe".to_string()),
                ever_ready: false,
            });
            let watch = Watch {
                engine: engine.clone(),
                prober: self.inner.prober.clone(),
                changes: self.inner.changes.clone(),
                spec: spec.clone(),
                adopted: was_adopted,
            };
            running.tasks.push(tokio::spawn(instance::watch_instance(watch, instance.clone())));
            running.instances.push(instance);
        }
        let key = (spec.endpoint.clone(), spec.deployment.clone());
        self.deployments().insert(key.clone(), running);
        instance::notify(&self.inner.changes);
        self.wait_ready(&key, spec.readiness_deadline()).await
    }

    /// Waits until all instances have passed readiness; fails as soon as one exits first.
    async fn wait_ready(&self, key: &DeploymentKey, deadline: Duration) -> Result<(), ApplyError> {
        let mut changes = self.subscribe();
        let give_up = tokio::time::Instant::now() + deadline;
        loop {
            let instances = self.instances(&key.0, &key.1);
            if let Some(dead) = instances.iter().find(|i| i.state == InstanceState::Exited && !i.ever_ready) {
                return Err(self.failure(dead, "exited before it was ready").await);
            }
            if !instances.is_empty() && instances.iter().all(|i| i.ready) {
                return Ok(());
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() {
                    return Err(ApplyError { reason: "the supervisor stopped".into(), logs: String::new() });
                },
                _ = tokio::time::sleep_until(give_up) => {
                    let Some(slow) = instances.iter().find(|i| !i.ready) else { continue };
                    return Err(self.failure(slow, &format!("was not ready within {}s", deadline.as_secs())).await);
                }
            }
        }
    }

    async fn failure(&self, instance: &InstanceStatus, what: &str) -> ApplyError {
        let why = instance.reason.as_deref().unwrap_or("no reason reported");
        let logs = match &instance.container_id {
            Some(id) => self.inner.engine.logs_tail(id, FAILURE_LOG_LINES).await.unwrap_or_default(),
            None => String::new(),
        };
        ApplyError { reason: format!("instance {} {what}: {why}", instance.name), logs }
    }

    /// Stops and removes a deployment's containers and its network.
    pub async fn remove(&self, endpoint: &str, deployment: &str) -> Result<(), Error> {
        let key = (endpoint.to_string(), deployment.to_string());
        if let Some(running) = self.deployments().remove(&key) {
            drop(running);
            instance::notify(&self.inner.changes);
        }
        let home = self.inner.config.home_id.as_str();
        let engine = &self.inner.engine;
        let containers = engine
            .list_containers(&names::filters(&[
                (names::HOME, home),
                (names::ENDPOINT, endpoint),
                (names::DEPLOYMENT, deployment),
            ]))
            .await?;
        let timeout = self.inner.config.stop_timeout;
        let stops = containers.iter().map(|c| engine.stop_and_remove(&c.id, timeout));
        for result in futures_util::future::join_all(stops).await {
            result?;
        }
        engine.remove_network(&names::network(home, endpoint, deployment)).await
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
        for container in self.inner.engine.list_containers(&filters).await? {
            match key_of(&container.labels) {
                Some(key) if keep.contains(&key) => {}
                Some(key) => {
                    stale.insert(key);
                }
                None => self.inner.engine.remove(&container.id).await?,
            }
        }
        for (name, labels) in self.inner.engine.list_networks(&filters).await? {
            match key_of(&labels) {
                Some(key) if keep.contains(&key) => {}
                Some(key) => {
                    stale.insert(key);
                }
                None => self.inner.engine.remove_network(&name).await?,
            }
        }
        let watched: Vec<DeploymentKey> = self.deployments().keys().cloned().collect();
        stale.extend(watched.into_iter().filter(|k| !keep.contains(k)));
        for (endpoint, deployment) in stale {
            self.remove(&endpoint, &deployment).await?;
        }
        Ok(())
    }

    /// The last `lines` log lines of one instance's container.
    pub async fn logs(
        &self,
        endpoint: &str,
        deployment: &str,
        instance: &str,
        lines: usize,
    ) -> Result<Option<String>, Error> {
        let Some(id) = self
            .instances(endpoint, deployment)
            .into_iter()
            .find(|i| i.name == instance)
            .and_then(|i| i.container_id)
        else {
            return Ok(None);
        };
        self.inner.engine.logs_tail(&id, lines).await.map(Some)
    }
}
