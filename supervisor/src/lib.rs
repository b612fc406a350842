//! moat's supervisor: runs each deployment's instances as Docker containers and reports which
//! of them are ready to take requests.
//!
//! - [`spec`]: what a deployment asks for (image, count, env, mounts, routes, probes), as plain
//!   data; the supervisor knows nothing of YAML or Azure ML, `deploy` translates.
//! - [`names`]: container and network names and labels, all carrying the home id.
//! - [`engine`]: the only module that talks to Docker (bollard); 404/304/409 mean "already so".
//! - [`probe`]: the probe threshold rules (pure) and one HTTP probe.
//! - [`instance`]: an instance's state and the task that probes it and watches it exit.
//! - [`supervisor`]: apply, adopt and remove deployments; snapshots for the route table.
//!
//! The identity other components key on is the [`Lease`]: an instance's container id and its
//! address on the deployment's network, created and removed with the container.

pub mod engine;
pub mod instance;
pub mod names;
pub mod probe;
pub mod spec;
mod supervisor;

pub use instance::{InstanceState, InstanceStatus, Lease};
pub use spec::{DeploymentSpec, Mount, ProbeSettings, Route};
pub use supervisor::{ApplyError, DeploymentKey, Supervisor};

use std::time::Duration;

/// How a supervisor runs; `deploy` fills it from the home and config file.
#[derive(Debug, Clone)]
pub struct Config {
    /// The home id (8 hex characters) that every Docker object of this home carries.
    pub home_id: String,
    /// SIGTERM, then SIGKILL after this long.
    pub stop_timeout: Duration,
}

/// What went wrong talking to Docker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach the Docker engine: {0}")]
    Connect(String),
    #[error("Docker: {action}: {message}")]
    Docker { action: String, message: String },
    #[error("image {0} is not present on this machine (build or load it first)")]
    ImageMissing(String),
}
