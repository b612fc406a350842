//! Names and labels of the Docker objects a home owns (CONTRACT.md): every object carries
//! `moat.home=<id>`, and adoption or clean-up looks only at its own home's labels.

use std::collections::HashMap;

pub const HOME: &str = "moat.home";
pub const ENDPOINT: &str = "moat.endpoint";
pub const DEPLOYMENT: &str = "moat.deployment";
pub const INSTANCE: &str = "moat.instance";
/// The spec fingerprint a container was made from (see `DeploymentSpec::container_hash`).
pub const SPEC_HASH: &str = "moat.spec-hash";

pub fn network(home: &str, endpoint: &str, deployment: &str) -> String {
    format!("moat-{home}-{endpoint}-{deployment}")
}

pub fn container(home: &str, endpoint: &str, deployment: &str, index: u32) -> String {
    format!("moat-{home}-{endpoint}-{deployment}-{index}")
}

/// Labels shared by a deployment's network and containers.
pub fn deployment_labels(home: &str, endpoint: &str, deployment: &str) -> HashMap<String, String> {
    HashMap::from([
        (HOME.to_string(), home.to_string()),
        (ENDPOINT.to_string(), endpoint.to_string()),
        (DEPLOYMENT.to_string(), deployment.to_string()),
    ])
}

/// Docker `label=` filters selecting what `labels` name.
pub fn filters(labels: &[(&str, &str)]) -> HashMap<String, Vec<String>> {
    let values = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    HashMap::from([("label".to_string(), values)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_contract() {
        assert_eq!(network("0a1b2c3d", "my-ep", "blue"), "moat-0a1b2c3d-my-ep-blue");
        assert_eq!(container("0a1b2c3d", "my-ep", "blue", 2), "moat-0a1b2c3d-my-ep-blue-2");
    }
}
