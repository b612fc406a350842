//! What `show` and `list` print: the stored spec with defaults filled in, plus the state the
//! daemon observes (provisioning state, health, instances, URIs).

use std::collections::BTreeMap;

use moat_supervisor::InstanceStatus;
use serde::Serialize;

use crate::spec::Access;
use crate::spec::deployment::DeploymentSpec;
use crate::spec::endpoint::AuthMode;

#[derive(Debug, Clone, Serialize)]
pub struct EndpointView {
    pub name: String,
    pub auth_mode: AuthMode,
    pub public_network_access: Access,
    pub traffic: BTreeMap<String, u32>,
    pub mirror_traffic: BTreeMap<String, u32>,
    pub scoring_uri: Option<String>,
    pub swagger_uri: Option<String>,
    pub openapi_uri: Option<String>,
    pub provisioning_state: &'static str,
    pub description: Option<String>,
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeploymentView {
    #[serde(flatten)]
    pub spec: DeploymentSpec,
    pub provisioning_state: &'static str,
    pub health: &'static str,
    pub instances: Vec<InstanceStatus>,
    pub egress: Egress,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Egress {
    /// The private endpoints the egress guard set up for a private deployment, each with
    /// the guard's address its names resolve to inside the deployment's network.
    pub private_endpoints: Vec<EgressEndpoint>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EgressEndpoint {
    pub name: String,
    pub address: std::net::Ipv4Addr,
}

/// Restarts from which an instance counts as crashing.
pub const CRASH_LOOP_RESTARTS: u32 = 3;

/// What deserves a word about the instances: crash loops (with their last log lines) and
/// Docker's warnings about their containers.
pub fn instance_warnings(instances: &[InstanceStatus]) -> Vec<String> {
    let mut warnings = Vec::new();
    for i in instances {
        if i.restarts >= CRASH_LOOP_RESTARTS {
            let code = i.last_exit_code.map_or_else(|| "none".to_string(), |c| c.to_string());
            warnings.push(format!(
                "instance {} keeps crashing: {} restarts, last exit code {code}; its last log lines:\n{}",
                i.name,
                i.restarts,
                i.last_logs.trim_end()
            ));
        }
        for w in &i.docker_warnings {
            warnings.push(format!("Docker warned about instance {}: {w}", i.name));
        }
    }
    warnings
}

/// Healthy: every instance ready; Degraded: some; Unhealthy: none.
pub fn health(instances: &[InstanceStatus], wanted: u32) -> &'static str {
    let ready = instances.iter().filter(|i| i.ready).count();
    match ready {
        0 => "Unhealthy",
        n if n >= wanted as usize => "Healthy",
        _ => "Degraded",
    }
}

/// Where clients score: `http(s)://host:port/endpoints/<name>/score`, or with a domain
/// `http(s)://<name>.<domain>[:port]/score` (the port left out when it is the scheme's own).
#[derive(Debug, Clone)]
pub struct ScoringBase {
    pub scheme: &'static str,
    pub host: String,
    pub port: u16,
    pub domain: Option<String>,
}

impl ScoringBase {
    pub fn uri(&self, endpoint: &str, leaf: &str) -> String {
        let default_port = matches!((self.scheme, self.port), ("http", 80) | ("https", 443));
        let port = if default_port { String::new() } else { format!(":{}", self.port) };
        match &self.domain {
            Some(domain) => format!("{}://{endpoint}.{domain}{port}/{leaf}", self.scheme),
            None => format!("{}://{}{port}/endpoints/{endpoint}/{leaf}", self.scheme, self.host),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scoring_uris_follow_the_contract() {
        let mut base = ScoringBase { scheme: "http", host: "127.0.0.1".into(), port: 8080, domain: None };
        assert_eq!(base.uri("my-ep", "score"), "http://127.0.0.1:8080/endpoints/my-ep/score");
        base.domain = Some("ml.example.test".into());
        assert_eq!(base.uri("my-ep", "swagger.json"), "http://my-ep.ml.example.test:8080/swagger.json");
        base.port = 80;
        assert_eq!(base.uri("my-ep", "score"), "http://my-ep.ml.example.test/score");
    }
}
