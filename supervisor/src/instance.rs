//! One instance: its reported status, its lease, and the task that probes its readiness and
//! notices when its container exits.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use crate::engine::Engine;
use crate::probe::{Prober, Threshold};
use crate::spec::DeploymentSpec;

/// Where an instance is in its life (CONTRACT.md's `state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    Creating,
    Starting,
    Running,
    Restarting,
    Stopping,
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
    /// Passed readiness at least once since its container started.
    #[serde(skip)]
    pub ever_ready: bool,
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

/// An instance's status, shared between its watch task and whoever reports on it.
pub(crate) struct Instance {
    status: Mutex<InstanceStatus>,
}

impl Instance {
    pub(crate) fn new(status: InstanceStatus) -> Arc<Instance> {
        Arc::new(Instance { status: Mutex::new(status) })
    }

    /// The status lock is never held across an await, so poisoning can only come from a
    /// panic inside one of the short updates below; the data is still usable then.
    pub(crate) fn lock(&self) -> MutexGuard<'_, InstanceStatus> {
        self.status.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn snapshot(&self) -> InstanceStatus {
        self.lock().clone()
    }
}

/// Everything an instance's watch task needs.
pub(crate) struct Watch {
    pub engine: Engine,
    pub prober: Prober,
    pub changes: watch::Sender<u64>,
    pub spec: Arc<DeploymentSpec>,
    /// Adopted from an earlier daemon: it has been up, so the initial delay is not waited.
    pub adopted: bool,
}

pub(crate) fn notify(changes: &watch::Sender<u64>) {
    changes.send_modify(|n| *n = n.wrapping_add(1));
}

/// Probes readiness every period until the container exits (or the task is aborted).
pub(crate) async fn watch_instance(w: Watch, instance: Arc<Instance>) {
    let (id, ip) = {
        let s = instance.lock();
        (s.container_id.clone(), s.address)
    };
    let Some(id) = id else { return };
    let exit = w.engine.wait_exit(&id);
    tokio::pin!(exit);

    let probe = w.spec.readiness_probe;
    if !w.adopted {
        tokio::select! {
            code = &mut exit => return exited(&w, &instance, &id, code).await,
            _ = tokio::time::sleep(probe.initial_delay) => {}
        }
    }
    let mut threshold = Threshold::new(probe.success_threshold, probe.failure_threshold, false);
    let mut tick = tokio::time::interval(probe.period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            code = &mut exit => return exited(&w, &instance, &id, code).await,
            _ = tick.tick() => {}
        }
        let result = match ip {
            Some(ip) => w.prober.check(ip, &w.spec.readiness_route, probe.timeout).await,
            None => Err("the container has no address on its network".to_string()),
        };
        let flipped = threshold.observe(result.is_ok());
        {
            let mut s = instance.lock();
            if let Some(ready) = flipped {
                s.ready = ready;
                s.ever_ready |= ready;
            }
            s.reason = match (&result, s.ready) {
                (Err(e), _) => Some(format!("readiness probe failed: {e}")),
                (Ok(()), true) => None,
                (Ok(()), false) => s.reason.take(),
            };
        }
        if flipped.is_some() {
            notify(&w.changes);
        }
    }
}

async fn exited(w: &Watch, instance: &Instance, id: &str, code: Option<i64>) {
    let error = match w.engine.inspect(id).await {
        Ok(Some(info)) => info.error,
        _ => None,
    };
    {
        let mut s = instance.lock();
        s.state = InstanceState::Exited;
        s.ready = false;
        s.last_exit_code = code;
        s.reason = Some(match (code, error) {
            (_, Some(e)) => e,
            (Some(c), None) => format!("the container exited with code {c}"),
            (None, None) => "the container was removed".to_string(),
        });
    }
    notify(&w.changes);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: InstanceState, ready: bool) -> InstanceStatus {
        InstanceStatus {
            name: "blue-0".into(),
            container_id: Some("c0ffee".into()),
            address: Some(IpAddr::from([172, 18, 0, 2])),
            state,
            ready,
            restarts: 0,
            last_exit_code: None,
            reason: None,
            ever_ready: ready,
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
    fn state_is_reported_in_lowercase() {
        let json = serde_json::to_value(status(InstanceState::Running, true)).expect("json");
        assert_eq!(json["state"], "running");
        assert!(json.get("ever_ready").is_none());
    }
}
