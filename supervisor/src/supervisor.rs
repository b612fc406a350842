//! The supervisor's shared state: the deployments it runs and their instances, and what the
//! rest of moat reads of them (instance snapshots, leases, logs, a change counter). The verbs
//! live in their own modules: [`crate::apply`], [`crate::adopt`], [`crate::drain`],
//! [`crate::remove`].

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use moat_id::DeploymentId;
use tokio::sync::{broadcast, watch};

use crate::docker::Docker;
use crate::engine::{Engine, Host, NetworkInfo};
use crate::instance::{Ctx, Instance, InstanceStatus, Lease};
use crate::probe::{HttpProbe, Probe};
use crate::spec::DeploymentSpec;
use crate::{Config, Error, names};

/// A line of progress about one deployment (an image pull or build, its mounts), for whoever
/// waits on it.
#[derive(Debug, Clone)]
pub struct Progress {
    pub id: DeploymentId,
    pub message: String,
}

#[derive(Clone)]
pub struct Supervisor {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub config: Config,
    pub ctx: Arc<Ctx>,
    pub host: Host,
    deployments: Mutex<HashMap<DeploymentId, Running>>,
    /// The networks this supervisor has made or found, by deployment.
    networks: Mutex<HashMap<DeploymentId, NetworkInfo>>,
    pub progress: broadcast::Sender<Progress>,
    /// Each deployment's progress lines of its last apply: az's storage-initializer log.
    initializer: Mutex<HashMap<DeploymentId, VecDeque<String>>>,
}

/// How many lines of an apply's progress a deployment's initializer log keeps.
const INITIALIZER_LINES: usize = 2000;

/// A deployment this daemon supervises.
pub(crate) struct Running {
    /// The spec last applied (its current instances are watched with its probes).
    pub spec: Arc<DeploymentSpec>,
    pub instances: Vec<Arc<Instance>>,
}

impl Supervisor {
    /// A supervisor of containers on the local Docker engine.
    pub async fn connect(config: Config) -> Result<Supervisor, Error> {
        let engine = Docker::connect().await?;
        Supervisor::with_engine(config, Arc::new(engine), Arc::new(HttpProbe::default())).await
    }

    /// A supervisor of containers on `engine`, probed by `probe` (a scripted pair in tests).
    pub async fn with_engine(
        config: Config,
        engine: Arc<dyn Engine>,
        probe: Arc<dyn Probe>,
    ) -> Result<Supervisor, Error> {
        let host = engine.host().await?;
        let ctx = Arc::new(Ctx {
            engine,
            probe,
            changes: watch::channel(0).0,
            stop_timeout: config.stop_timeout,
            standing_by: watch::channel(false).0,
        });
        let inner = Inner {
            config,
            ctx,
            host,
            deployments: Mutex::new(HashMap::new()),
            networks: Mutex::new(HashMap::new()),
            progress: broadcast::channel(256).0,
            initializer: Mutex::new(HashMap::new()),
        };
        Ok(Supervisor { inner: Arc::new(inner) })
    }

    /// Progress lines of every deployment being applied.
    /// While true, no instance is stopped or restarted (probes go on): another daemon is
    /// taking this one's place, and one of them must act alone. False again resumes what
    /// waited.
    pub fn stand_by(&self, standing_by: bool) {
        self.inner.ctx.standing_by.send_replace(standing_by);
    }

    /// Whether this daemon stands by ([`Supervisor::stand_by`]), and each change of it: the
    /// one flag every loop of the daemon that changes something waits on.
    pub fn standing_by(&self) -> watch::Receiver<bool> {
        self.inner.ctx.standing_by.subscribe()
    }

    pub fn progress(&self) -> broadcast::Receiver<Progress> {
        self.inner.progress.subscribe()
    }

    /// A progress line of a deployment's apply: to whoever waits on it, and kept in its
    /// initializer log.
    pub(crate) fn report(&self, id: &DeploymentId, message: String) {
        {
            let mut logs = self.initializer_logs();
            let log = logs.entry(id.clone()).or_default();
            if log.len() == INITIALIZER_LINES {
                log.pop_front();
            }
            log.push_back(message.clone());
        }
        let _ = self.inner.progress.send(Progress { id: id.clone(), message });
    }

    /// The last `lines` lines of the deployment's last apply: its image pulled or built, its
    /// mounts. `None` when this supervisor has not applied it since it started.
    pub fn initializer_log(&self, id: &DeploymentId, lines: usize) -> Option<String> {
        let logs = self.initializer_logs();
        let log = logs.get(id)?;
        let skip = log.len().saturating_sub(lines);
        Some(log.iter().skip(skip).map(|l| format!("{l}\n")).collect())
    }

    /// Takes the deployment's initializer log out (a new apply starts one; a removal drops
    /// it), to put back with [`Supervisor::keep_initializer_log`] when it should stay.
    pub(crate) fn take_initializer_log(&self, id: &DeploymentId) -> VecDeque<String> {
        self.initializer_logs().remove(id).unwrap_or_default()
    }

    pub(crate) fn keep_initializer_log(&self, id: &DeploymentId, log: VecDeque<String>) {
        self.initializer_logs().insert(id.clone(), log);
    }

    fn initializer_logs(&self) -> MutexGuard<'_, HashMap<DeploymentId, VecDeque<String>>> {
        self.inner.initializer.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn deployments(&self) -> MutexGuard<'_, HashMap<DeploymentId, Running>> {
        self.inner.deployments.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn engine(&self) -> &dyn Engine {
        &*self.inner.ctx.engine
    }

    pub(crate) fn home(&self) -> &str {
        &self.inner.config.home_id
    }

    /// The instances of one deployment, as held right now.
    pub(crate) fn members_of(&self, id: &DeploymentId) -> Vec<Arc<Instance>> {
        self.deployments().get(id).map(|r| r.instances.clone()).unwrap_or_default()
    }

    /// What each running instance uses, by deployment and instance name, measured at once
    /// for all of them (each measurement takes the engine about a second).
    pub async fn usage(&self) -> Vec<(DeploymentId, String, crate::engine::Usage)> {
        let running: Vec<(DeploymentId, String, String)> = self
            .deployments()
            .iter()
            .flat_map(|(id, r)| {
                r.instances.iter().filter_map(|i| {
                    let status = i.snapshot();
                    Some((id.clone(), status.name, status.container_id?))
                })
            })
            .collect();
        let engine = self.inner.ctx.engine.clone();
        let measured = running.into_iter().map(|(id, name, container)| {
            let engine = engine.clone();
            async move { engine.usage(&container).await.map(|u| (id, name, u)) }
        });
        futures_util::future::join_all(measured).await.into_iter().flatten().collect()
    }

    /// The CPUs and memory the engine reports for this machine.
    pub fn host(&self) -> Host {
        self.inner.host
    }

    /// Bumps whenever an instance appears, leaves, or changes state or readiness.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.ctx.changes.subscribe()
    }

    /// The instances of one deployment as this daemon sees them, by index.
    pub fn instances(&self, id: &DeploymentId) -> Vec<InstanceStatus> {
        self.members_of(id).iter().map(|i| i.snapshot()).collect()
    }

    /// The ready instances of every deployment: what the route table is built from.
    pub fn leases(&self) -> HashMap<DeploymentId, Vec<Lease>> {
        self.deployments()
            .iter()
            .map(|(id, r)| (id.clone(), r.instances.iter().filter_map(|i| i.snapshot().lease()).collect()))
            .collect()
    }

    /// Makes the deployment's network (internal for a private deployment) if it is not there
    /// yet, and says what it is: the egress guard serves its bridge.
    pub async fn network(&self, id: &DeploymentId, private: bool) -> Result<NetworkInfo, Error> {
        let labels = names::deployment_labels(self.home(), id);
        let info = self.engine().network(&names::network(self.home(), id), &labels, private).await?;
        self.known_networks().insert(id.clone(), info.clone());
        self.inner.ctx.notify();
        Ok(info)
    }

    fn known_networks(&self) -> MutexGuard<'_, HashMap<DeploymentId, NetworkInfo>> {
        self.inner.networks.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn forget_network(&self, id: &DeploymentId) {
        self.known_networks().remove(id);
    }

    /// The rule every mount is held to.
    pub fn mounts(&self) -> &crate::MountPolicy {
        &self.inner.config.mounts
    }

    /// The subnets of this home's networks: moat's own containers, never a destination the
    /// guard relays to, nor private ingress.
    pub fn subnets(&self) -> Vec<ipnet::IpNet> {
        self.known_networks()
            .values()
            .filter_map(|n| ipnet::Ipv4Net::new(n.subnet, n.prefix).ok().map(ipnet::IpNet::V4))
            .collect()
    }

    /// The last `lines` log lines of each instance (or of the one named), by instance name.
    pub async fn logs(
        &self,
        id: &DeploymentId,
        instance: Option<&str>,
        lines: usize,
    ) -> Result<Vec<(String, String)>, Error> {
        let mut out = Vec::new();
        for status in self.instances(id) {
            if instance.is_some_and(|name| name != status.name) {
                continue;
            }
            if let Some(container) = &status.container_id {
                out.push((status.name.clone(), self.engine().logs(container, lines).await?));
            }
        }
        Ok(out)
    }
}
