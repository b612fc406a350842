//! One instance: its reported status, its lease, and the task that supervises it: probes
//! readiness and liveness on their own schedules, and restarts the container with backoff
//! when it exits after it was first ready or fails its liveness probe.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::backoff::{Backoff, BackoffSettings};
use crate::engine::Engine;
use crate::probe::{Prober, Threshold};
use crate::spec::{DeploymentSpec, ProbeSettings, Route};

/// Where an instance is in its life (CONTRACT.md's `state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    /// Its container is being made.
    Creating,
    /// Its container runs but has not passed readiness since it (re)started.
    Starting,
    /// It has passed readiness since it (re)started; `ready` says whether it still does.
    Running,
    /// Waiting out the backoff before its container starts again.
    Restarting,
    /// Drained and being stopped.
    Stopping,
    /// Its container exited before it was ever ready.
    Exited,
}

impl InstanceState {
    /// Only a running instance may take requests, and only while its readiness passes.
    pub fn can_serve(self) -> bool {
        self == InstanceState::Running
    }
}

/// What `online-deployment show` reports per instance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceStatus {
    pub name: String,
    pub container_id: Option<String>,
    pub address: Option<IpAddr>,
    pub state: InstanceState,
    pub ready: bool,
    pub restarts: u32,
    pub last_exit_code: Option<i64>,
    pub reason: Option<String>,
    /// Passed readiness at least once in its life.
    #[serde(skip)]
    pub ever_ready: bool,
    /// The container's last log lines when it last exited.
    #[serde(skip)]
    pub last_logs: String,
    /// What Docker warned about when it made the container.
    #[serde(skip)]
    pub docker_warnings: Vec<String>,
}

/// The identity shared by the supervisor, the gateway and the egress guard: a running
/// container and its address on its deployment's network.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Lease {
    pub instance: String,
    pub container_id: String,
    pub address: IpAddr,
}

impl InstanceStatus {
    pub fn new(name: String) -> InstanceStatus {
        InstanceStatus {
            name,
            container_id: None,
            address: None,
            state: InstanceState::Creating,
            ready: false,
            restarts: 0,
            last_exit_code: None,
            reason: None,
            ever_ready: false,
            last_logs: String::new(),
            docker_warnings: Vec::new(),
        }
    }

    pub fn lease(&self) -> Option<Lease> {
        if !(self.ready && self.state.can_serve()) {
            return None;
        }
        Some(Lease {
            instance: self.name.clone(),
            container_id: self.container_id.clone()?,
            address: self.address?,
        })
    }
}

/// An instance as the supervisor holds it: its index (in its name and container name), its
/// status, and the task supervising it, aborted when the instance is dropped.
pub(crate) struct Instance {
    pub index: u32,
    status: Mutex<InstanceStatus>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.stop_supervising();
    }
}

impl Instance {
    pub(crate) fn new(index: u32, status: InstanceStatus) -> Arc<Instance> {
        Arc::new(Instance { index, status: Mutex::new(status), task: Mutex::new(None) })
    }

    /// The status lock is never held across an await, so poisoning can only come from a
    /// panic inside one of the short updates below; the data is still usable then.
    pub(crate) fn lock(&self) -> MutexGuard<'_, InstanceStatus> {
        self.status.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn snapshot(&self) -> InstanceStatus {
        self.lock().clone()
    }

    pub(crate) fn container_id(&self) -> Option<String> {
        self.lock().container_id.clone()
    }

    pub(crate) fn stop_supervising(&self) {
        if let Some(task) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
    }

    /// (Re)starts supervision with `spec`'s probes; the previous task, if any, ends.
    pub(crate) fn supervise(self: &Arc<Self>, ctx: Arc<Ctx>, spec: Arc<DeploymentSpec>, start: Start) {
        self.stop_supervising();
        let task = tokio::spawn(supervise(ctx, spec, Arc::downgrade(self), start));
        *self.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
    }
}

/// What every supervision task shares.
pub(crate) struct Ctx {
    pub engine: Engine,
    pub prober: Prober,
    pub changes: watch::Sender<u64>,
    pub backoff: BackoffSettings,
    pub stop_timeout: Duration,
}

impl Ctx {
    pub(crate) fn notify(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// How supervision begins.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Start {
    /// The container has been up for a while (adopted, or re-supervised with new probe
    /// settings): the initial delays are not waited.
    pub settled: bool,
}

/// Why one run of the container ended.
enum Ended {
    Exited(Option<i64>),
    Unhealthy(String),
}

const LOG_LINES_KEPT: usize = 20;

async fn supervise(
    ctx: Arc<Ctx>,
    spec: Arc<DeploymentSpec>,
    instance: std::sync::Weak<Instance>,
    start: Start,
) {
    let mut backoff = Backoff::new(ctx.backoff);
    let mut settled = start.settled;
    loop {
        let Some(this) = instance.upgrade() else { return };
        let Some(id) = this.container_id() else { return };
        drop(this);
        let started = Instant::now();
        let ended = run(&ctx, &spec, &instance, &id, settled).await;
        settled = false;
        let Some(this) = instance.upgrade() else { return };
        let gone = matches!(ended, Ended::Exited(None));
        let (code, why) = match ended {
            Ended::Exited(code) => {
                let error = ctx.engine.inspect(&id).await.ok().flatten().and_then(|i| i.error);
                let why = match (code, error) {
                    (_, Some(e)) => e,
                    (Some(c), None) => format!("the container exited with code {c}"),
                    (None, None) => "the container was removed".to_string(),
                };
                (code, why)
            }
            Ended::Unhealthy(why) => {
                // Liveness failed: stop it (SIGTERM, then SIGKILL) and start it again below.
                let _ = ctx.engine.stop(&id, ctx.stop_timeout).await;
                let code = ctx.engine.inspect(&id).await.ok().flatten().and_then(|i| i.exit_code);
                (code, why)
            }
        };
        let logs = ctx.engine.logs_tail(&id, LOG_LINES_KEPT).await.unwrap_or_default();
        let ever_ready = this.lock().ever_ready;
        if !ever_ready || gone {
            // Never ready: the create or update that made it fails (the apply decides).
            let mut s = this.lock();
            s.state = InstanceState::Exited;
            s.ready = false;
            s.last_exit_code = code;
            s.reason = Some(why);
            s.last_logs = logs;
            drop(s);
            ctx.notify();
            return;
        }
        let delay = backoff.next_delay(started.elapsed());
        let labels = [("endpoint", spec.endpoint.clone()), ("deployment", spec.deployment.clone())];
        metrics::counter!("moat_instance_restarts_total", &labels).increment(1);
        {
            let mut s = this.lock();
            s.state = InstanceState::Restarting;
            s.ready = false;
            s.restarts += 1;
            s.last_exit_code = code;
            s.reason = Some(format!("{why}; restarting in {} ms", delay.as_millis()));
            s.last_logs = logs;
        }
        ctx.notify();
        drop(this);
        tokio::time::sleep(delay).await;
        let Some(this) = instance.upgrade() else { return };
        if let Err(e) = ctx.engine.start(&id).await {
            this.lock().reason = Some(format!("restart failed: {e}"));
            ctx.notify();
            continue;
        }
        let address =
            ctx.engine.inspect(&id).await.ok().flatten().and_then(|i| i.addresses.values().next().copied());
        {
            let mut s = this.lock();
            s.state = InstanceState::Starting;
            s.address = address.or(s.address);
            s.reason = Some("restarted; waiting for the readiness probe".into());
        }
        ctx.notify();
    }
}

/// One run of the container: probes until it exits or fails liveness.
async fn run(
    ctx: &Ctx,
    spec: &DeploymentSpec,
    instance: &std::sync::Weak<Instance>,
    id: &str,
    settled: bool,
) -> Ended {
    let exit = ctx.engine.wait_exit(id);
    tokio::pin!(exit);
    let (rp, lp) = (spec.readiness_probe, spec.liveness_probe);
    let mut readiness_tick = ticker(&rp, settled);
    let mut liveness_tick = ticker(&lp, settled);
    let initially_ready = instance.upgrade().is_some_and(|i| i.lock().ready);
    let mut readiness = Threshold::new(rp.success_threshold, rp.failure_threshold, initially_ready);
    let mut liveness = Threshold::new(1, lp.failure_threshold, true);
    loop {
        tokio::select! {
            code = &mut exit => return Ended::Exited(code),
            _ = readiness_tick.tick() => {
                // A probe of a container that is exiting times out; the exit tells the truth.
                let result = tokio::select! {
                    code = &mut exit => return Ended::Exited(code),
                    result = probe(ctx, instance, &spec.readiness_route, rp.timeout) => result,
                };
                let flipped = readiness.observe(result.is_ok());
                let Some(this) = instance.upgrade() else { return Ended::Exited(None) };
                let mut s = this.lock();
                if let Some(ready) = flipped {
                    s.ready = ready;
                    if ready {
                        s.ever_ready = true;
                        s.state = InstanceState::Running;
                    }
                }
                s.reason = match (&result, s.ready) {
                    (Err(e), _) => Some(format!("readiness probe failed: {e}")),
                    (Ok(()), true) => None,
                    (Ok(()), false) => s.reason.take(),
                };
                drop(s);
                if flipped.is_some() {
                    ctx.notify();
                }
            }
            _ = liveness_tick.tick() => {
                let result = tokio::select! {
                    code = &mut exit => return Ended::Exited(code),
                    result = probe(ctx, instance, &spec.liveness_route, lp.timeout) => result,
                };
                if liveness.observe(result.is_ok()) == Some(false) {
                    let why = result.err().unwrap_or_default();
                    return Ended::Unhealthy(format!("liveness probe failed {} times in a row: {why}", lp.failure_threshold));
                }
            }
        }
    }
}

fn ticker(p: &ProbeSettings, settled: bool) -> tokio::time::Interval {
    let first = if settled { Duration::ZERO } else { p.initial_delay };
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + first, p.period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tick
}

async fn probe(
    ctx: &Ctx,
    instance: &std::sync::Weak<Instance>,
    route: &Route,
    timeout: Duration,
) -> Result<(), String> {
    let address = instance.upgrade().and_then(|i| i.lock().address);
    match address {
        Some(ip) => ctx.prober.check(ip, route, timeout).await,
        None => Err("the container has no address on its network".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: InstanceState, ready: bool) -> InstanceStatus {
        InstanceStatus {
            container_id: Some("c0ffee".into()),
            address: Some(IpAddr::from([172, 18, 0, 2])),
            state,
            ready,
            ..InstanceStatus::new("blue-0".into())
        }
    }

    #[test]
    fn only_a_running_ready_instance_holds_a_lease() {
        assert!(status(InstanceState::Running, true).lease().is_some());
        assert!(status(InstanceState::Running, false).lease().is_none());
        for state in [
            InstanceState::Creating,
            InstanceState::Starting,
            InstanceState::Restarting,
            InstanceState::Stopping,
            InstanceState::Exited,
        ] {
            assert!(status(state, true).lease().is_none(), "{state:?}");
        }
    }

    #[test]
    fn state_is_reported_in_lowercase_without_internal_fields() {
        let json = serde_json::to_value(status(InstanceState::Running, true)).expect("json");
        assert_eq!(json["state"], "running");
        assert!(json.get("ever_ready").is_none() && json.get("last_logs").is_none());
    }
}
