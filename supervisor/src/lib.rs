//! moat's supervisor: runs each deployment's instances as Docker containers and reports which
//! of them are ready to take requests.
//!
//! - [`spec`]: what a deployment asks for (image, count, env, mounts, routes, probes), as plain
//!   data; the supervisor knows nothing of YAML or Azure ML, `deploy` translates.
//! - [`names`]: container and network names and labels, all carrying the home id.
//! - [`engine`]: the only module that talks to Docker (bollard); 404/304/409 mean "already so".
//! - [`probe`]: the probe threshold rules (pure) and one HTTP probe.
//! - [`backoff`]: the restart delay (pure).
//! - [`instance`]: an instance's state and the task that probes it and restarts it.
//! - [`rollout`]: the steps of a rolling update or a scale change (pure).
//! - [`supervisor`]: apply (create, adopt, roll, scale), drain and remove deployments;
//!   snapshots for the route table.
//!
//! The identity other components key on is the [`Lease`]: an instance's container id and its
//! address on the deployment's network, created and removed with the container.

pub mod backoff;
pub mod engine;
pub mod instance;
pub mod names;
pub mod probe;
pub mod rollout;
pub mod spec;
mod supervisor;

pub use instance::{InstanceState, InstanceStatus, Lease};
pub use spec::{DeploymentSpec, Mount, ProbeSettings, Route};
pub use supervisor::{ApplyError, DeploymentKey, Progress, Supervisor};

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

pub use backoff::BackoffSettings;
pub use engine::{Host, NetworkInfo};

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
}

impl Config {
    /// Defaults for everything but the home id; nothing in flight is ever reported.
    pub fn new(home_id: &str) -> Config {
        Config {
            home_id: home_id.to_string(),
            stop_timeout: Duration::from_secs(30),
            backoff: BackoffSettings::default(),
            in_flight: Arc::new(|_| 0),
        }
    }
}

/// What went wrong talking to Docker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach the Docker engine: {0}")]
    Connect(String),
    #[error("Docker: {action}: {message}")]
    Docker { action: String, message: String },
    #[error("cannot pull image {image}: {message}")]
    Pull { image: String, message: String },
}
