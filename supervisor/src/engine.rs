//! What the supervisor needs of a container engine, as one small trait: [`crate::docker`]
//! implements it with bollard, [`crate::fake`] with a scripted world for tests. Every call is
//! idempotent where the engine lets it be: removing what is gone, stopping what is stopped
//! and making a network that exists all succeed.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use async_trait::async_trait;

use crate::Error;
use crate::spec::Mount;

pub type Labels = HashMap<String, String>;

/// A container as the supervisor sees it.
#[derive(Debug, Clone)]
pub struct ContainerInfo {
    pub id: String,
    pub labels: Labels,
    pub running: bool,
    pub exit_code: Option<i64>,
    /// The engine's own words when the container could not run (OOM kill, start error).
    pub error: Option<String>,
    /// Its address on each network it is attached to.
    pub addresses: HashMap<String, IpAddr>,
}

/// A deployment network's Linux side: its bridge and its IPv4 subnet and gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkInfo {
    pub bridge: String,
    pub subnet: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
}

/// What `create_and_start` needs; names and labels come from [`crate::names`].
#[derive(Debug, Clone)]
pub struct NewContainer {
    pub name: String,
    pub image: String,
    pub env: Vec<String>,
    pub labels: Labels,
    pub mounts: Vec<Mount>,
    pub network: String,
    pub limits: Limits,
    /// DNS servers for the container (empty: the engine's default).
    pub dns: Vec<String>,
}

/// What one container may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: i64,
    /// CPUs in billionths, as Docker's `NanoCpus`.
    pub nano_cpus: i64,
    pub pids: i64,
}

/// What the machine offers, as the engine reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Host {
    pub cpus: u32,
    pub memory_bytes: u64,
}

/// A new container and the engine's warnings about it (a limit the kernel cannot enforce).
#[derive(Debug, Clone)]
pub struct Created {
    pub id: String,
    pub warnings: Vec<String>,
}

/// What `build` needs; the tag and labels come from [`crate::names`].
#[derive(Debug, Clone)]
pub struct NewImage {
    pub tag: String,
    /// The build context as an uncompressed tar archive ([`crate::context`]).
    pub context: bytes::Bytes,
    /// The Dockerfile's path inside the context.
    pub dockerfile: String,
    pub labels: Labels,
    /// The network the build's steps run on: the deployment's own, fenced as its
    /// containers are, so that a `RUN` step reaches no more than the deployment may.
    pub network: String,
    /// Build arguments (the proxy variables of a private deployment).
    pub args: Vec<(String, String)>,
}

/// What a running container uses, as the engine measures it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// CPU cores busy on its behalf, averaged over the engine's sampling interval (1.5 is
    /// one and a half cores).
    pub cpu_cores: f64,
    /// Memory in use, page cache the kernel may reclaim left out (as `docker stats` counts).
    pub memory_bytes: u64,
    /// Its memory limit (the machine's memory when it has none).
    pub memory_limit_bytes: u64,
}

/// Reports one line of an image pull's or build's progress.
pub type PullProgress<'a> = &'a (dyn Fn(String) + Send + Sync);

#[async_trait]
pub trait Engine: Send + Sync + 'static {
    async fn host(&self) -> Result<Host, Error>;
    async fn image_present(&self, image: &str) -> Result<bool, Error>;
    /// Pulls an image, reporting progress lines as they come.
    async fn pull(&self, image: &str, progress: PullProgress<'_>) -> Result<(), Error>;
    /// Builds an image from a context, reporting each line of the build's output as it comes;
    /// the error carries the builder's own words.
    async fn build(&self, new: NewImage, progress: PullProgress<'_>) -> Result<(), Error>;
    /// Tags and labels of the images carrying all of `labels`.
    async fn images(&self, labels: &[(&str, &str)]) -> Result<Vec<(String, Labels)>, Error>;
    /// Removes an image by tag; one already gone is fine.
    async fn remove_image(&self, tag: &str) -> Result<(), Error>;
    /// Makes the network (internal: no way out) unless it exists, and says what it is.
    async fn network(&self, name: &str, labels: &Labels, internal: bool) -> Result<NetworkInfo, Error>;
    async fn remove_network(&self, name: &str) -> Result<(), Error>;
    /// Names and labels of the networks carrying all of `labels`.
    async fn networks(&self, labels: &[(&str, &str)]) -> Result<Vec<(String, Labels)>, Error>;
    /// Containers, running or not, carrying all of `labels`.
    async fn containers(&self, labels: &[(&str, &str)]) -> Result<Vec<ContainerInfo>, Error>;
    /// `None` when the container is gone.
    async fn inspect(&self, id: &str) -> Result<Option<ContainerInfo>, Error>;
    /// Creates and starts a container; a leftover of this very instance under the same name
    /// (a crash between create and start) is replaced.
    async fn create_and_start(&self, new: NewContainer) -> Result<Created, Error>;
    /// Starts a created or exited container; one already running is fine.
    async fn start(&self, id: &str) -> Result<(), Error>;
    /// SIGTERM, SIGKILL after `timeout`; a container already stopped or gone is fine.
    async fn stop(&self, id: &str, timeout: Duration) -> Result<(), Error>;
    /// Removes at once (SIGKILL if still running); one already gone is fine.
    async fn remove(&self, id: &str) -> Result<(), Error>;
    /// Waits until the container stops and returns its exit code (`None`: it is gone).
    async fn wait_exit(&self, id: &str) -> Option<i64>;
    /// The last `lines` lines of its stdout and stderr, interleaved as written.
    async fn logs(&self, id: &str, lines: usize) -> Result<String, Error>;
    /// What it uses now; `None` when it is not running or the engine cannot say.
    async fn usage(&self, _id: &str) -> Option<Usage> {
        None
    }
}
