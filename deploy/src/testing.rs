//! Desired states for the unit tests of the rules, the plan and the views: built directly,
//! each record at a revision of its own, without a store or a file.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::spec::Access;
use crate::spec::deployment::{
    DeploymentSpec, Environment, ImageSource, InferenceConfig, Model, Probe, RequestSettings, Route,
};
use crate::spec::endpoint::{AuthMode, EndpointSpec};
use crate::spec::workspace::WorkspaceSpec;
use crate::state::{At, DeploymentId, DeploymentRecord, Desired, EndpointRecord, Keys, NodeRecord, Outcome};

/// The node the tests' desired states are read by.
pub const ME: &str = "0a1b2c3d";

/// A valid deployment of the sample model: one Standard_F2s_v2 (4 GiB), egress enabled.
pub fn deployment(endpoint: &str, name: &str) -> DeploymentSpec {
    let route = |path: &str| Route { port: 5001, path: path.into() };
    let probe =
        Probe { initial_delay: 10, period: 10, timeout: 2, success_threshold: 1, failure_threshold: 30 };
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/model-1/model");
    DeploymentSpec {
        name: name.into(),
        endpoint_name: endpoint.into(),
        model: Some(Model {
            name: "model-1".into(),
            version: "1".into(),
            path: model.canonicalize().expect("the sample model"),
        }),
        model_mount_path: None,
        code_configuration: None,
        environment: Environment {
            source: ImageSource::Image("scorer:v1".into()),
            inference_config: InferenceConfig {
                liveness_route: route("/"),
                readiness_route: route("/"),
                scoring_route: route("/score"),
            },
        },
        environment_variables: BTreeMap::new(),
        instance_type: "Standard_F2s_v2".into(),
        instance_count: 1,
        request_settings: RequestSettings {
            request_timeout_ms: 5000,
            max_concurrent_requests_per_instance: 1,
            max_queue_wait_ms: 500,
        },
        liveness_probe: probe,
        readiness_probe: probe,
        egress_public_network_access: Access::Enabled,
        description: None,
        tags: BTreeMap::new(),
    }
}

pub fn private(mut spec: DeploymentSpec) -> DeploymentSpec {
    spec.egress_public_network_access = Access::Disabled;
    spec
}

pub fn endpoint(name: &str) -> EndpointSpec {
    EndpointSpec {
        name: name.into(),
        auth_mode: AuthMode::Key,
        public_network_access: Access::Enabled,
        traffic: BTreeMap::new(),
        mirror_traffic: BTreeMap::new(),
        description: None,
        tags: BTreeMap::new(),
        allowed_principals: Default::default(),
    }
}

/// A desired state grown one record at a time, each at the next revision.
pub struct World {
    pub desired: Desired,
    revision: u64,
}

impl World {
    /// The default workspace, with `access`, and nothing else.
    pub fn new(access: Access) -> World {
        let mut workspace = WorkspaceSpec::default_workspace();
        workspace.public_network_access = access;
        let desired = Desired {
            me: ME.into(),
            workspace,
            workspace_revision: None,
            endpoints: BTreeMap::new(),
            deployments: BTreeMap::new(),
            outcomes: BTreeMap::new(),
            moves: BTreeMap::new(),
            nodes: BTreeMap::new(),
            undecodable: Vec::new(),
        };
        World { desired, revision: 0 }
    }

    fn next(&mut self) -> u64 {
        self.revision += 1;
        self.revision
    }

    pub fn endpoint(mut self, spec: EndpointSpec) -> World {
        let keys = Keys { primary: "p".repeat(32), secondary: "s".repeat(32) };
        let revision = self.next();
        self.desired
            .endpoints
            .insert(spec.name.clone(), At { record: EndpointRecord { spec, keys }, revision });
        self
    }

    /// An endpoint with these live traffic shares.
    pub fn endpoint_with_traffic(self, name: &str, traffic: &[(&str, u32)]) -> World {
        let mut spec = endpoint(name);
        spec.traffic = traffic.iter().map(|(d, p)| (d.to_string(), *p)).collect();
        self.endpoint(spec)
    }

    pub fn deployment(mut self, spec: DeploymentSpec) -> World {
        let revision = self.next();
        let record = DeploymentRecord { spec, all_traffic: false };
        self.desired.deployments.insert(record.spec.id(), At { record, revision });
        self
    }

    /// How bringing up the deployment's current revision ended on this node.
    pub fn outcome(self, id: &DeploymentId, succeeded: bool) -> World {
        self.outcome_on(ME, id, succeeded)
    }

    /// How bringing up the deployment's current revision ended on `node`.
    pub fn outcome_on(mut self, node: &str, id: &DeploymentId, succeeded: bool) -> World {
        let of = self.desired.deployments[id].revision;
        let revision = self.next();
        let reason = (!succeeded).then(|| format!("it failed on {node}"));
        let record = Outcome { revision: of, succeeded, reason, logs: String::new() };
        self.desired.outcomes.entry(id.clone()).or_default().insert(node.into(), At { record, revision });
        self
    }

    /// Another node that is up, with its ready instances of each deployment.
    pub fn node(mut self, node: &str, ready: &[(&DeploymentId, u32)]) -> World {
        let revision = self.next();
        let record = NodeRecord {
            advertise: format!("{node}.example:8080"),
            version: "0.1.0".into(),
            ready: ready.iter().map(|(id, n)| (id.to_string(), *n)).collect(),
            lease: 0,
        };
        self.desired.nodes.insert(node.into(), At { record, revision });
        self
    }

    /// A deployment that takes all traffic once it succeeds.
    pub fn all_traffic(mut self, id: &DeploymentId) -> World {
        if let Some(at) = self.desired.deployments.get_mut(id) {
            at.record.all_traffic = true;
        }
        self
    }
}
