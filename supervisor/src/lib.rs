//! moat's supervisor: runs each deployment's instances as containers and reports which of
//! them are ready to take requests.
//!
//! - [`spec`]: what a deployment asks for (image, count, env, mounts, routes, probes), as plain
//!   data; the supervisor knows nothing of YAML or Azure ML, `deploy` translates.
//! - [`lifecycle`]: an instance's states, the events that move them and what each transition
//!   asks for (pure, table-tested).
//! - [`rollout`]: the next step of a rolling update or a scale change (pure).
//! - [`probe`]: the probe threshold rules (pure) and the [`Probe`] that asks a container.
//! - [`backoff`]: the restart delay (pure).
//! - [`engine`]: the [`Engine`] trait, all the supervisor asks of a container engine;
//!   [`docker`] implements it with bollard, `fake` (tests) with a scripted world.
//! - [`context`]: a build context folder as the tar archive Docker takes, and its digest;
//!   `build`: an apply's image built from it, reused while the context is unchanged.
//! - [`names`]: container and network names and labels, all carrying the home id.
//! - [`mounts`]: which host folders a container may see (pure).
//! - `instance`: an instance's reported status and its lease; `watch`: the task that probes
//!   it and restarts it.
//! - `apply`, `adopt`, `drain`, `remove`: the supervisor's verbs, one module each, on the
//!   shared state of `supervisor`.
//!
//! The identity other components key on is the [`Lease`]: an instance's container id and its
//! address on the deployment's network, created and removed with the container.

mod adopt;
mod apply;
pub mod backoff;
mod build;
pub mod context;
pub mod docker;
mod drain;
pub mod engine;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
mod instance;
pub mod lifecycle;
pub mod mounts;
pub mod names;
pub mod probe;
mod remove;
pub mod rollout;
pub mod spec;
mod supervisor;
mod watch;

pub use adopt::Adoption;
pub use apply::ApplyError;
pub use backoff::BackoffSettings;
pub use engine::{Engine, Host, NetworkInfo};
pub use instance::{InstanceStatus, Lease};
pub use lifecycle::{InstanceState, Life};
pub use moat_id::DeploymentId;
pub use mounts::MountPolicy;
pub use probe::Probe;
pub use spec::{Build, DeploymentSpec, Mount, ProbeSettings, Route};
pub use supervisor::{Progress, Supervisor};
pub use watch::RESTARTS;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// How many requests are in flight to the instance at this address; `deploy` answers from
/// the gateway's counters, so that draining waits for them.
pub type InFlight = Arc<dyn Fn(IpAddr) -> usize + Send + Sync>;

/// How a supervisor runs; `deploy` fills it from the home and config file.
#[derive(Clone)]
pub struct Config {
    /// The home id (8 hex characters) that every Docker object of this home carries.
    pub home_id: String,
    /// SIGTERM, then SIGKILL after this long.
    pub stop_timeout: Duration,
    pub backoff: BackoffSettings,
    pub in_flight: InFlight,
    /// Checked again for every container made: a spec that passed when stored may name a
    /// folder that has since become a symlink elsewhere.
    pub mounts: mounts::MountPolicy,
}

impl Config {
    /// Defaults for everything but the home id; nothing in flight is ever reported.
    pub fn new(home_id: &str) -> Config {
        Config {
            home_id: home_id.to_string(),
            stop_timeout: Duration::from_secs(30),
            backoff: BackoffSettings::default(),
            in_flight: Arc::new(|_| 0),
            mounts: mounts::MountPolicy::default(),
        }
    }
}

/// What went wrong talking to the container engine.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("cannot reach the Docker engine: {0}")]
    Connect(String),
    #[error("Docker: {action}: {message}")]
    Docker { action: String, message: String },
    #[error("cannot pull image {image}: {message}")]
    Pull { image: String, message: String },
    #[error("cannot build image {image}: {message}")]
    Build { image: String, message: String },
}

#[cfg(test)]
mod tests;
