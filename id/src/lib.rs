//! The one identity the gateway, the supervisor, the egress guard and deploy all key on: a
//! deployment, named by its endpoint and its own name. It lives in a crate of its own so that
//! the three components share it without depending on each other (DESIGN.md's rule).

use std::fmt;

use serde::{Deserialize, Serialize};

/// A deployment of an endpoint. Shown as `endpoint/deployment`, the form kernel rules and
/// log lines carry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DeploymentId {
    pub endpoint: String,
    pub deployment: String,
}

impl DeploymentId {
    pub fn new(endpoint: impl Into<String>, deployment: impl Into<String>) -> DeploymentId {
        DeploymentId { endpoint: endpoint.into(), deployment: deployment.into() }
    }
}

impl fmt::Display for DeploymentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.endpoint, self.deployment)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_as_endpoint_slash_deployment_and_orders_by_endpoint_first() {
        let a = DeploymentId::new("ep-a", "zulu");
        let b = DeploymentId::new("ep-b", "alpha");
        assert_eq!(a.to_string(), "ep-a/zulu");
        assert!(a < b);
    }
}
