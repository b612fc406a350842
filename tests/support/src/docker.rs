//! The test images and the guards that remove a home's Docker objects and kernel table.

use std::process::Command;

/// The image `examples/sample-scorer/build-image.sh` builds.
pub const SCORER_IMAGE: &str = "moat-sample-scorer:latest";
/// The image `tests/test-scorer/build-image.sh` builds: a scorer tests control by requests.
pub const TEST_IMAGE: &str = "moat-test-scorer:latest";

/// Fails the test with the command to run when the sample scorer image is missing.
pub fn require_scorer_image() {
    require_image(SCORER_IMAGE, "examples/sample-scorer/build-image.sh");
}

/// Fails the test with the command to run when the test scorer image is missing.
pub fn require_test_image() {
    require_image(TEST_IMAGE, "tests/test-scorer/build-image.sh");
}

fn require_image(image: &str, script: &str) {
    let present = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", image])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(present, "image {image} is missing: run {script} (tests/run.sh does)");
}

/// Removes every container and network labelled with a home id when dropped.
pub struct DockerCleanup {
    pub home_id: String,
}

impl DockerCleanup {
    pub fn new(home_id: &str) -> Self {
        DockerCleanup { home_id: home_id.to_string() }
    }

    /// Ids of this home's containers, running or not.
    pub fn containers(&self) -> Vec<String> {
        home_containers(&self.home_id)
    }

    pub fn networks(&self) -> Vec<String> {
        home_networks(&self.home_id)
    }

    /// Tags of the images built for this home's deployments.
    pub fn images(&self) -> Vec<String> {
        home_images(&self.home_id)
    }
}

/// Tags of a home's built images.
pub fn home_images(home_id: &str) -> Vec<String> {
    let filter = format!("label=moat.home={home_id}");
    docker_ids(&["images", "--format", "{{.Repository}}:{{.Tag}}", "--filter", &filter])
}

/// Ids of a home's containers, running or not.
pub fn home_containers(home_id: &str) -> Vec<String> {
    docker_ids(&["ps", "-aq", "--filter", &format!("label=moat.home={home_id}")])
}

/// Ids of a home's networks.
pub fn home_networks(home_id: &str) -> Vec<String> {
    docker_ids(&["network", "ls", "-q", "--filter", &format!("label=moat.home={home_id}")])
}

fn docker_ids(args: &[&str]) -> Vec<String> {
    Command::new("docker")
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().map(String::from).collect())
        .unwrap_or_default()
}

impl Drop for DockerCleanup {
    fn drop(&mut self) {
        // The home's kernel rules go too (they stay while a daemon is down, by design).
        let _ =
            Command::new("nft").args(["delete", "table", "inet", &format!("moat_{}", self.home_id)]).output();
        // A daemon killed mid-call can leave Docker finishing a create after the first
        // sweep has looked: sweep until a look a little later finds nothing.
        for _ in 0..5 {
            let containers = self.containers();
            if !containers.is_empty() {
                let _ = Command::new("docker").args(["rm", "-f"]).args(&containers).output();
            }
            let networks = self.networks();
            if !networks.is_empty() {
                let _ = Command::new("docker").args(["network", "rm"]).args(&networks).output();
            }
            let images = self.images();
            if !images.is_empty() {
                let _ = Command::new("docker").args(["rmi", "-f"]).args(&images).output();
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
            if self.containers().is_empty() && self.networks().is_empty() && self.images().is_empty() {
                break;
            }
        }
    }
}

/// A deployment file of the test scorer with 1-second probes that start at once, on the
/// smallest SKU.
pub fn scorer_deployment(endpoint: &str, name: &str, count: u32) -> String {
    format!(
        "name: {name}
endpoint_name: {endpoint}
environment:
  image: {TEST_IMAGE}
  inference_config:
    liveness_route: {{port: 5001, path: /live}}
    readiness_route: {{port: 5001, path: /ready}}
    scoring_route: {{port: 5001, path: /score}}
instance_type: Standard_F1s
instance_count: {count}
request_settings:
  request_timeout_ms: 5000
  max_concurrent_requests_per_instance: 16
liveness_probe: {{initial_delay: 0, period: 1, failure_threshold: 3}}
readiness_probe: {{initial_delay: 0, period: 1, failure_threshold: 3}}
environment_variables:
  VERSION: {name}
"
    )
}
