//! What `show` and `list` print: the stored spec with defaults filled in, plus the state the
//! daemon observes (provisioning state, health, instances, URIs), made by pure functions of
//! the desired state and those observations.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use moat_supervisor::InstanceStatus;
use serde::Serialize;

use crate::reconciler::Busy;
use crate::rules;
use crate::spec::Access;
use crate::spec::deployment::DeploymentSpec;
use crate::spec::endpoint::{AllowedPrincipals, AuthMode};
use crate::state::{DeploymentId, Desired, EndpointRecord, FleetOutcome};

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
    /// An `aad_token` endpoint's, even when empty (then nobody may score).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_principals: Option<AllowedPrincipals>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeploymentView {
    #[serde(flatten)]
    pub spec: DeploymentSpec,
    /// The fleet's: Succeeded once every live node succeeded (one node: this one).
    pub provisioning_state: &'static str,
    pub health: &'static str,
    /// This node's.
    pub instances: Vec<InstanceStatus>,
    pub egress: Egress,
    pub warnings: Vec<String>,
    /// Every live node's state of the deployment.
    pub nodes: Vec<NodeView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeView {
    pub node: String,
    pub provisioning_state: &'static str,
    pub ready_instances: u32,
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

pub fn endpoint(record: &EndpointRecord, scoring: Option<&ScoringBase>) -> EndpointView {
    let spec = &record.spec;
    let uri = |leaf: &str| scoring.map(|s| s.uri(&spec.name, leaf));
    EndpointView {
        name: spec.name.clone(),
        auth_mode: spec.auth_mode,
        public_network_access: spec.public_network_access,
        traffic: spec.traffic.clone(),
        mirror_traffic: spec.mirror_traffic.clone(),
        scoring_uri: uri("score"),
        swagger_uri: uri("swagger.json"),
        openapi_uri: uri("swagger.json"),
        provisioning_state: "Succeeded",
        description: spec.description.clone(),
        tags: spec.tags.clone(),
        allowed_principals: (spec.auth_mode == AuthMode::AadToken).then(|| spec.allowed_principals.clone()),
    }
}

/// What this node observes of a deployment beside the desired state.
pub struct Observed {
    pub busy: Option<Busy>,
    pub instances: Vec<InstanceStatus>,
    /// The egress guard's address for each private endpoint, for a private deployment.
    pub egress: Vec<(String, Ipv4Addr)>,
}

/// The deployment as `show` prints it; `None` when it is not in the desired state.
pub fn deployment(desired: &Desired, id: &DeploymentId, observed: Observed) -> Option<DeploymentView> {
    let at = desired.deployments.get(id)?;
    let spec = at.record.spec.clone();
    let fleet = desired.fleet_outcome(id);
    let mut warnings: Vec<String> = match fleet {
        FleetOutcome::Failed { node, outcome } if node != desired.me => {
            vec![format!(
                "failed on node {node}: {}",
                outcome.reason.as_deref().unwrap_or("no reason recorded")
            )]
        }
        FleetOutcome::Failed { outcome, .. } => outcome.reason.clone().into_iter().collect(),
        _ => Vec::new(),
    };
    warnings.extend(rules::pair_warning(&desired.workspace, &spec));
    warnings.extend(instance_warnings(&observed.instances));
    let ready_here = observed.instances.iter().filter(|i| i.life.ready).count() as u32;
    let nodes = desired
        .live_nodes()
        .into_iter()
        .map(|node| NodeView {
            node: node.to_string(),
            provisioning_state: provisioning_state(
                None,
                desired.outcome_on(id, node).map(|o| o.succeeded),
                desired.updated(id),
            ),
            ready_instances: match node == desired.me {
                true => ready_here,
                false => desired
                    .nodes
                    .get(node)
                    .and_then(|n| n.record.ready.get(&id.to_string()))
                    .copied()
                    .unwrap_or(0),
            },
        })
        .collect();
    let succeeded = match fleet {
        FleetOutcome::Succeeded => Some(true),
        FleetOutcome::Failed { .. } => Some(false),
        FleetOutcome::Pending => None,
    };
    Some(DeploymentView {
        // An outcome of an earlier revision means this one is an update.
        provisioning_state: provisioning_state(observed.busy, succeeded, desired.updated(id)),
        nodes,
        health: health(&observed.instances, spec.instance_count),
        spec,
        instances: observed.instances,
        egress: Egress {
            private_endpoints: observed
                .egress
                .into_iter()
                .map(|(name, address)| EgressEndpoint { name, address })
                .collect(),
        },
        warnings,
    })
}

/// Deleting while it is being removed; else the outcome of the current revision, or
/// Creating/Updating while there is none yet.
pub fn provisioning_state(
    busy: Option<Busy>,
    succeeded: Option<bool>,
    earlier_outcome: bool,
) -> &'static str {
    match (busy, succeeded) {
        (Some(Busy::Removing), _) => "Deleting",
        (_, Some(true)) => "Succeeded",
        (_, Some(false)) => "Failed",
        (_, None) if earlier_outcome => "Updating",
        (_, None) => "Creating",
    }
}

/// Restarts from which an instance counts as crashing.
pub const CRASH_LOOP_RESTARTS: u32 = 3;

/// What deserves a word about the instances: crash loops (with their last log lines) and
/// Docker's warnings about their containers.
pub fn instance_warnings(instances: &[InstanceStatus]) -> Vec<String> {
    let mut warnings = Vec::new();
    for i in instances {
        if i.life.restarts >= CRASH_LOOP_RESTARTS {
            let code = i.life.last_exit_code.map_or_else(|| "none".to_string(), |c| c.to_string());
            warnings.push(format!(
                "instance {} keeps crashing: {} restarts, last exit code {code}; its last log lines:\n{}",
                i.name,
                i.life.restarts,
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
    let ready = instances.iter().filter(|i| i.life.ready).count();
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
    /// `scheme://host:port`, how other nodes and operators reach this one.
    pub fn origin(&self) -> String {
        format!("{}://{}:{}", self.scheme, self.host, self.port)
    }

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
    fn provisioning_state_follows_the_outcome_of_the_current_revision() {
        use Busy::{Applying, Removing};
        #[rustfmt::skip]
        let table = [
            // (busy, outcome of this revision, an earlier revision's outcome) -> state
            (None, None, false, "Creating"),
            (Some(Applying), None, false, "Creating"),
            (Some(Applying), None, true, "Updating"),
            (None, Some(true), true, "Succeeded"),
            (Some(Applying), Some(true), true, "Succeeded"),
            (None, Some(false), false, "Failed"),
            (Some(Removing), Some(true), true, "Deleting"),
            (Some(Removing), None, false, "Deleting"),
        ];
        for (busy, succeeded, earlier, expected) in table {
            assert_eq!(
                provisioning_state(busy, succeeded, earlier),
                expected,
                "{busy:?} {succeeded:?} {earlier}"
            );
        }
    }

    #[test]
    fn show_gives_the_fleets_state_and_every_live_nodes_own() {
        use crate::spec::Access;
        use crate::testing::{ME, World, deployment, endpoint};
        let id = DeploymentId::new("ep1", "blue");
        let world = World::new(Access::Enabled)
            .endpoint(endpoint("ep1"))
            .deployment(deployment("ep1", "blue"))
            .node("ffff0000", &[(&id, 2)])
            .outcome(&id, true);
        let observed = || Observed { busy: None, instances: Vec::new(), egress: Vec::new() };
        let view = super::deployment(&world.desired, &id, observed()).expect("view");
        assert_eq!(view.provisioning_state, "Creating", "the other node is not done");
        let node = |node: &str, provisioning_state, ready_instances| NodeView {
            node: node.into(),
            provisioning_state,
            ready_instances,
        };
        assert_eq!(view.nodes, [node(ME, "Succeeded", 0), node("ffff0000", "Creating", 2)]);
        let failed = world.outcome_on("ffff0000", &id, false);
        let view = super::deployment(&failed.desired, &id, observed()).expect("view");
        assert_eq!(view.provisioning_state, "Failed");
        assert_eq!(view.warnings, ["failed on node ffff0000: it failed on ffff0000"]);
    }

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
