//! What several gateway tests (and the decision benchmark) build the same way; each uses
//! part of it.
#![allow(dead_code)]

pub mod keys;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use moat_gateway::{Admissions, Credentials, DeploymentRoute, EndpointRoute, Limits, Upstream};

/// Endpoint `name` with one deployment, `blue` (scoring path `/score`, all the traffic), whose
/// only instance listens at `up`.
pub fn endpoint(
    admissions: &Admissions,
    name: &str,
    up: SocketAddr,
    credentials: Credentials,
    public_access: bool,
) -> (String, EndpointRoute) {
    let limits = Limits { max_per_instance: 16, max_queue_wait: Duration::from_secs(1), instance_count: 1 };
    let instances = vec![Upstream::new(format!("{name}-0"), up, Default::default())];
    let admission = admissions.get(name, "blue", limits);
    let route = DeploymentRoute::new("blue", "/score", Duration::from_secs(5), admission, instances, limits);
    let route = EndpointRoute {
        name: name.into(),
        public_access,
        credentials,
        traffic: vec![("blue".into(), 100)],
        mirror: None,
        deployments: HashMap::from([("blue".to_string(), Arc::new(route))]),
    };
    (name.to_string(), route)
}
