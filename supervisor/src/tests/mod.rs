//! The supervisor's loops against the scripted engine, under paused time: apply and roll,
//! adoption, restarts with backoff, drain and removal. Each test is named after what a user
//! of moat would notice.

mod adopt;
mod apply;
mod build;
mod drain;
mod restart;
mod roll;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use moat_id::DeploymentId;

use crate::fake::Fake;
use crate::{
    BackoffSettings, Config, DeploymentSpec, InFlight, InstanceStatus, ProbeSettings, Route, Supervisor,
};

pub(crate) fn id() -> DeploymentId {
    DeploymentId::new("ep", "blue")
}

/// A deployment with 1-second probes that start at once and give up after 3 failures.
pub(crate) fn spec(count: u32, version: &str) -> DeploymentSpec {
    let probe = ProbeSettings {
        initial_delay: Duration::ZERO,
        period: Duration::from_secs(1),
        timeout: Duration::from_millis(500),
        success_threshold: 1,
        failure_threshold: 3,
    };
    let route = |path: &str| Route { port: 5001, path: path.into() };
    DeploymentSpec {
        id: id(),
        image: "scorer:v1".into(),
        build: None,
        instance_count: count,
        env: vec![("VERSION".into(), version.into())],
        mounts: Vec::new(),
        liveness_route: route("/live"),
        readiness_route: route("/ready"),
        scoring_route: route("/score"),
        liveness_probe: probe,
        readiness_probe: probe,
        memory_bytes: 1 << 30,
        cpus: 1,
        drain_grace: Duration::from_secs(5),
        private: false,
        dns: Vec::new(),
    }
}

pub(crate) fn config(in_flight: InFlight) -> Config {
    Config {
        home_id: "0a1b2c3d".into(),
        stop_timeout: Duration::from_secs(1),
        backoff: BackoffSettings {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(4),
            reset_after: Duration::from_secs(60),
        },
        in_flight,
        mounts: crate::MountPolicy::default(),
    }
}

pub(crate) async fn supervisor(fake: &Fake) -> Supervisor {
    supervisor_with(fake, Arc::new(|_: IpAddr| 0)).await
}

pub(crate) async fn supervisor_with(fake: &Fake, in_flight: InFlight) -> Supervisor {
    Supervisor::with_engine(config(in_flight), Arc::new(fake.clone()), Arc::new(fake.clone()))
        .await
        .expect("the fake engine answers")
}

/// The container name of instance `index` of the test deployment.
pub(crate) fn name(index: u32) -> String {
    crate::names::container("0a1b2c3d", &id(), index)
}

pub(crate) fn instances(s: &Supervisor) -> Vec<InstanceStatus> {
    s.instances(&id())
}

pub(crate) fn serving(s: &Supervisor) -> usize {
    s.leases().get(&id()).map_or(0, Vec::len)
}

/// Waits (on the paused clock) until `done` holds of the supervisor.
pub(crate) async fn until(s: &Supervisor, what: &str, done: impl Fn(&Supervisor) -> bool) {
    let mut changes = s.subscribe();
    let give_up = tokio::time::Instant::now() + Duration::from_secs(600);
    while !done(s) {
        tokio::select! {
            _ = changes.changed() => {}
            _ = tokio::time::sleep_until(give_up) => panic!("never saw: {what}; instances: {:?}", instances(s)),
        }
    }
}

/// The fewest serving instances seen at any change from now on.
pub(crate) struct Capacity {
    least: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Capacity {
    pub(crate) fn watch(s: &Supervisor) -> Capacity {
        let least = Arc::new(AtomicUsize::new(serving(s)));
        let (s, seen) = (s.clone(), least.clone());
        let task = tokio::spawn(async move {
            let mut changes = s.subscribe();
            while changes.changed().await.is_ok() {
                seen.fetch_min(serving(&s), Ordering::SeqCst);
            }
        });
        Capacity { least, task }
    }

    pub(crate) fn least(self) -> usize {
        self.task.abort();
        self.least.load(Ordering::SeqCst)
    }
}

/// The engine calls that made or removed containers, in order.
pub(crate) fn lifecycle_calls(fake: &Fake) -> Vec<String> {
    fake.calls().into_iter().filter(|c| c.starts_with("create") || c.starts_with("remove")).collect()
}
