//! What a deployment asks the supervisor for, already validated by `deploy`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use moat_id::DeploymentId;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeploymentSpec {
    pub id: DeploymentId,
    /// The image its containers run. For a deployment built from a context ([`Build`]) it is
    /// empty as `deploy` hands it over; the apply builds the image and fills in its tag.
    pub image: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build: Option<Build>,
    pub instance_count: u32,
    /// In order; a later entry for the same name wins.
    pub env: Vec<(String, String)>,
    pub mounts: Vec<Mount>,
    pub liveness_route: Route,
    pub readiness_route: Route,
    pub scoring_route: Route,
    pub liveness_probe: ProbeSettings,
    pub readiness_probe: ProbeSettings,
    /// Memory limit of each container.
    pub memory_bytes: u64,
    /// CPU limit of each container, already capped at the host's CPUs.
    pub cpus: u32,
    /// How long a drained instance's in-flight requests may take before it is stopped.
    pub drain_grace: Duration,
    /// A private deployment: its network is internal (no way out but what the host offers).
    pub private: bool,
    /// DNS servers for its containers (empty: Docker's default).
    pub dns: Vec<IpAddr>,
}

/// An image to build from a folder on this machine (Azure ML's `environment.build`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Build {
    /// The build context: an existing absolute folder, checked like a mount source.
    pub context: PathBuf,
    /// The Dockerfile, relative to the context and inside it.
    pub dockerfile: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    pub host_path: PathBuf,
    pub container_path: String,
    pub read_only: bool,
}

/// A port and path inside the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route {
    pub port: u16,
    pub path: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ProbeSettings {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl DeploymentSpec {
    /// A fingerprint of everything that shapes a container, stored as a label so that a
    /// restarted daemon adopts only containers made from the same spec. FNV-1a over the JSON
    /// form: stable across builds, unlike `std`'s hasher.
    pub fn container_hash(&self) -> String {
        #[derive(Serialize)]
        struct Shape<'a> {
            image: &'a str,
            env: &'a [(String, String)],
            mounts: &'a [Mount],
            memory_bytes: u64,
            cpus: u32,
            private: bool,
            dns: &'a [IpAddr],
        }
        let shape = Shape {
            image: &self.image,
            env: &self.env,
            mounts: &self.mounts,
            memory_bytes: self.memory_bytes,
            cpus: self.cpus,
            private: self.private,
            dns: &self.dns,
        };
        let bytes = serde_json::to_vec(&shape).unwrap_or_default();
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for b in bytes {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{hash:016x}")
    }

    /// How long a new instance may take to pass readiness before the create fails: the
    /// probe's initial delay plus `failure_threshold` periods, each probe given its timeout.
    pub fn readiness_deadline(&self) -> Duration {
        let p = &self.readiness_probe;
        p.initial_delay + (p.period + p.timeout) * p.failure_threshold.max(1)
    }
}
