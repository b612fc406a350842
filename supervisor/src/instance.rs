//! One instance as the supervisor holds it: what `show` reports of it, its [`Life`], the spec
//! fingerprint its container was made from, and the task that watches it
//! ([`crate::watch`]). Every change of its life goes through [`Instance::on`], which applies
//! the lifecycle's rules and tells subscribers when readiness or state changed.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::engine::Engine;
use crate::lifecycle::{Ask, Event, Life};
use crate::probe::Probe;

/// What `online-deployment show` reports per instance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceStatus {
    pub name: String,
    pub container_id: Option<String>,
    pub address: Option<IpAddr>,
    #[serde(flatten)]
    pub life: Life,
    /// The container's last log lines when it last exited.
    #[serde(skip)]
    pub last_logs: String,
    /// What the engine warned about when it made the container.
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
    /// Only a running, ready instance with a container and an address holds a lease.
    pub fn lease(&self) -> Option<Lease> {
        if !(self.life.ready && self.life.state.can_serve()) {
            return None;
        }
        Some(Lease {
            instance: self.name.clone(),
            container_id: self.container_id.clone()?,
            address: self.address?,
        })
    }
}

/// What every instance's task shares with the supervisor.
pub(crate) struct Ctx {
    pub engine: Arc<dyn Engine>,
    pub probe: Arc<dyn Probe>,
    pub changes: watch::Sender<u64>,
    pub stop_timeout: Duration,
    /// True while another daemon takes this one's place (`serve --upgrade`): what would
    /// change a container (a stop, a restart) waits, so that two daemons never act on one.
    pub standing_by: watch::Sender<bool>,
}

impl Ctx {
    pub(crate) fn notify(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Returns once this daemon may act on its containers.
    pub(crate) async fn until_active(&self) {
        let mut standing_by = self.standing_by.subscribe();
        let _ = standing_by.wait_for(|s| !*s).await;
    }
}

pub(crate) struct Instance {
    /// In its name (`<deployment>-<index>`) and its container's.
    pub index: u32,
    /// The fingerprint of the spec its container was made from.
    pub hash: String,
    status: Mutex<InstanceStatus>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.stop_watching();
    }
}

impl Instance {
    pub(crate) fn new(index: u32, hash: &str, status: InstanceStatus) -> Arc<Instance> {
        Arc::new(Instance {
            index,
            hash: hash.to_string(),
            status: Mutex::new(status),
            task: Mutex::new(None),
        })
    }

    /// The status lock is never held across an await, so poisoning can only come from a
    /// panic inside one of the short updates below; the data is still usable then.
    fn lock(&self) -> MutexGuard<'_, InstanceStatus> {
        self.status.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Applies the lifecycle's rule for `event`; subscribers hear of it when the state or
    /// readiness changed.
    pub(crate) fn on(&self, ctx: &Ctx, event: Event) -> Option<Ask> {
        let mut s = self.lock();
        let before = (s.life.state, s.life.ready);
        let ask = s.life.on(event);
        let changed = before != (s.life.state, s.life.ready);
        drop(s);
        if changed {
            ctx.notify();
        }
        ask
    }

    /// Changes what the status records beside the life (container, address, logs).
    pub(crate) fn update(&self, f: impl FnOnce(&mut InstanceStatus)) {
        f(&mut self.lock());
    }

    pub(crate) fn snapshot(&self) -> InstanceStatus {
        self.lock().clone()
    }

    pub(crate) fn container_id(&self) -> Option<String> {
        self.lock().container_id.clone()
    }

    pub(crate) fn address(&self) -> Option<IpAddr> {
        self.lock().address
    }

    pub(crate) fn stop_watching(&self) {
        if let Some(task) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
    }

    /// Hands the instance to a new watching task; the previous one, if any, ends.
    pub(crate) fn watch_with(&self, task: JoinHandle<()>) {
        let mut slot = self.task.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = slot.replace(task) {
            old.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backoff::BackoffSettings;
    use crate::lifecycle::InstanceState;

    fn status(events: &[Event]) -> InstanceStatus {
        let mut life = Life::new(BackoffSettings::default());
        for e in events {
            life.on(e.clone());
        }
        InstanceStatus {
            name: "blue-0".into(),
            container_id: Some("c0ffee".into()),
            address: Some(IpAddr::from([172, 18, 0, 2])),
            life,
            last_logs: String::new(),
            docker_warnings: Vec::new(),
        }
    }

    #[test]
    fn only_a_running_ready_instance_holds_a_lease() {
        let ready = Event::Readiness { ready: true, detail: None };
        let unready = Event::Readiness { ready: false, detail: None };
        assert!(status(&[Event::Created, ready.clone()]).lease().is_some());
        assert!(status(&[Event::Created, ready.clone(), unready]).lease().is_none());
        assert!(status(&[Event::Created]).lease().is_none(), "starting");
        assert!(status(&[Event::Created, ready, Event::Drain]).lease().is_none(), "stopping");
        let mut no_address = status(&[Event::Created, Event::Readiness { ready: true, detail: None }]);
        no_address.address = None;
        assert!(no_address.lease().is_none());
    }

    #[test]
    fn state_is_reported_in_lowercase_in_the_contracts_order_without_internal_fields() {
        let json = serde_json::to_value(status(&[Event::Created])).expect("json");
        assert_eq!(json["state"], "starting");
        let keys: Vec<&str> = json.as_object().expect("object").keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["name", "container_id", "address", "state", "ready", "restarts", "last_exit_code", "reason"]
        );
        assert_eq!(status(&[]).life.state, InstanceState::Creating);
    }
}
