//! Names and labels of the Docker objects a home owns (CONTRACT.md): every object carries
//! `moat.home=<id>`, and adoption or clean-up looks only at its own home's labels.

use moat_id::DeploymentId;

use crate::engine::Labels;

pub const HOME: &str = "moat.home";
pub const ENDPOINT: &str = "moat.endpoint";
pub const DEPLOYMENT: &str = "moat.deployment";
pub const INSTANCE: &str = "moat.instance";
/// The spec fingerprint a container was made from (see `DeploymentSpec::container_hash`).
pub const SPEC_HASH: &str = "moat.spec-hash";

pub fn network(home: &str, id: &DeploymentId) -> String {
    format!("moat-{home}-{}-{}", id.endpoint, id.deployment)
}

pub fn container(home: &str, id: &DeploymentId, index: u32) -> String {
    format!("moat-{home}-{}-{}-{index}", id.endpoint, id.deployment)
}

/// The image built for a deployment from a context whose build digest is `digest`: one
/// repository per deployment, one tag per context. Docker takes only lowercase repositories.
pub fn built_image(home: &str, id: &DeploymentId, digest: &str) -> String {
    format!("moat-{home}-{}-{}:{digest}", id.endpoint, id.deployment).to_lowercase()
}

/// Labels shared by a deployment's network, containers and built images.
pub fn deployment_labels(home: &str, id: &DeploymentId) -> Labels {
    Labels::from([
        (HOME.to_string(), home.to_string()),
        (ENDPOINT.to_string(), id.endpoint.clone()),
        (DEPLOYMENT.to_string(), id.deployment.clone()),
    ])
}

/// The label filter that selects one deployment's objects of this home.
pub fn of_deployment<'a>(home: &'a str, id: &'a DeploymentId) -> [(&'static str, &'a str); 3] {
    [(HOME, home), (ENDPOINT, &id.endpoint), (DEPLOYMENT, &id.deployment)]
}

/// The deployment an object of this home belongs to, by its labels.
pub fn deployment_of(labels: &Labels) -> Option<DeploymentId> {
    Some(DeploymentId::new(labels.get(ENDPOINT)?.clone(), labels.get(DEPLOYMENT)?.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_contract() {
        let id = DeploymentId::new("my-ep", "blue");
        assert_eq!(network("0a1b2c3d", &id), "moat-0a1b2c3d-my-ep-blue");
        assert_eq!(container("0a1b2c3d", &id, 2), "moat-0a1b2c3d-my-ep-blue-2");
        let id = DeploymentId::new("My-Ep", "blue");
        assert_eq!(built_image("0a1b2c3d", &id, "00ff"), "moat-0a1b2c3d-my-ep-blue:00ff");
        assert_eq!(deployment_of(&deployment_labels("0a1b2c3d", &id)), Some(id));
    }
}
