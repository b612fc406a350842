//! Helpers shared by moat's tests that use real Docker: unique home ids so tests run in
//! parallel, the scorer images, guards that remove what a test made even when it fails, a
//! daemon in a home of its own, test hosts in network namespaces, and load clients.
//!
//! - [`files`]: temp folders, the repository root, certificates.
//! - [`docker`]: the test images; clean-up of a home's containers, networks and nft table.
//! - [`http`]: one blocking HTTP/1.1 request.
//! - [`daemon`]: `moat serve` and the CLI against it.
//! - [`netns`]: test hosts.
//! - [`etcd`]: a real etcd cluster, and a relay to cut a node off from it.
//! - [`load`]: clients that score in a loop and count what fails.
//! - [`poll`]: waiting for a condition instead of a fixed time.
//! - [`registry`]: a container registry on loopback.
//! - [`scorer`]: the test scorer's `/probe`, and servers for it to reach.

pub mod daemon;
pub mod docker;
pub mod etcd;
pub mod files;
pub mod http;
pub mod load;
pub mod netns;
pub mod poll;
pub mod registry;
pub mod scorer;

pub use daemon::{Daemon, Killed, Run, run_moat};
pub use docker::{
    DockerCleanup, SCORER_IMAGE, TEST_IMAGE, home_containers, home_images, home_networks,
    require_scorer_image, require_test_image, scorer_deployment,
};
pub use etcd::{EtcdCluster, Relay};
pub use files::{CaSigned, TempDir, ca_signed_certificates, repo_root, self_signed_certificate};
pub use http::{Reply, http, http_unix};
pub use load::{Load, Tally};
pub use netns::TestHost;
pub use poll::wait_until;
pub use registry::{Registry, free_port};
pub use scorer::{counting_listener, probe, tcp_server};

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

/// A random 8-hex-digit id, the shape of a moat home id.
pub fn unique_id() -> String {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    format!("{:08x}", hasher.finish() as u32)
}
