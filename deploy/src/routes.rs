//! The gateway's route table, built from the desired state and the supervisor's leases:
//! the one place that knows both sides.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use moat_gateway::{
    Admissions, ByName, Credentials, DeploymentRoute, EndpointRoute, Limits, Load, RouteTable, Upstream,
};
use moat_supervisor::Lease;

use crate::spec::Access;
use crate::spec::endpoint::AuthMode;
use crate::state::{DeploymentId, Desired};
use moat_gateway::auth::aml::{AmlKey, audience};
use moat_gateway::auth::principals::Principals;

/// `load` lends each instance its in-flight counter and `admissions` each deployment its
/// queue, the same ones across tables.
pub fn route_table(
    desired: &Desired,
    leases: &HashMap<DeploymentId, Vec<Lease>>,
    load: &Load,
    admissions: &Admissions,
    aml: &Arc<AmlKey>,
    moat_networks: &[ipnet::IpNet],
) -> RouteTable {
    let mut endpoints = ByName::default();
    for (name, at) in &desired.endpoints {
        let record = &at.record;
        let mut deployments = ByName::default();
        for deployment in desired.deployments_of(name) {
            let spec = &deployment.record.spec;
            let port = spec.environment.inference_config.scoring_route.port;
            let instances = leases
                .get(&spec.id())
                .map(|leases| {
                    leases
                        .iter()
                        .map(|l| {
                            Upstream::new(
                                l.instance.clone(),
                                SocketAddr::new(l.address, port),
                                load.counter(l.address),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let settings = &spec.request_settings;
            let limits = Limits {
                max_per_instance: settings.max_concurrent_requests_per_instance as usize,
                max_queue_wait: Duration::from_millis(settings.max_queue_wait_ms),
                instance_count: spec.instance_count as usize,
            };
            let route = DeploymentRoute::new(
                &spec.name,
                &spec.environment.inference_config.scoring_route.path,
                Duration::from_millis(settings.request_timeout_ms),
                admissions.get(&spec.id(), limits),
                instances,
                limits,
            );
            deployments.insert(spec.name.clone(), Arc::new(route));
        }
        let traffic = record
            .spec
            .traffic
            .iter()
            .filter(|&(d, &w)| w > 0 && deployments.contains_key(d))
            .map(|(d, &w)| (d.clone(), w))
            .collect();
        let credentials = match record.spec.auth_mode {
            AuthMode::Key => Credentials::Keys(vec![
                record.keys.primary.clone().into_bytes(),
                record.keys.secondary.clone().into_bytes(),
            ]),
            AuthMode::AmlToken => {
                Credentials::AmlToken { key: aml.clone(), audience: audience(&desired.workspace.name, name) }
            }
            AuthMode::AadToken => {
                let allowed = &record.spec.allowed_principals;
                Credentials::AadToken {
                    allowed: Principals::new(&allowed.object_ids, &allowed.app_ids, &allowed.roles),
                }
            }
        };
        let mirror = record
            .spec
            .mirror_traffic
            .iter()
            .find(|&(d, &p)| p > 0 && deployments.contains_key(d))
            .map(|(d, &p)| (d.clone(), p));
        let public_access = desired.workspace.public_network_access == Access::Enabled
            && record.spec.public_network_access == Access::Enabled;
        let route = EndpointRoute {
            name: name.as_str().into(),
            public_access,
            credentials,
            traffic,
            mirror,
            deployments,
        };
        endpoints.insert(name.clone(), route);
    }
    RouteTable { endpoints, moat_networks: moat_networks.to_vec() }
}
