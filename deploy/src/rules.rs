//! The rules that span resources, as pure functions from the desired state and a change to a
//! decision: refused (with the reason a user reads), or allowed with what else must change in
//! the same commit and what the operator should be warned of. [`crate::node`] reads the
//! state, asks these, and commits; nothing here touches the store.
//!
//! The seed's network-isolation rules: the supported pairs are (public access enabled,
//! egress enabled) and (public access disabled, egress disabled); a private deployment
//! switches its workspace to public access disabled; changing the workspace's access warns
//! about the deployments the change leaves in the other pair.

use crate::container;
use crate::error::Error;
use crate::spec::Access;
use crate::spec::deployment::DeploymentSpec;
use crate::spec::endpoint::{AuthMode, EndpointSpec};
use crate::spec::workspace::WorkspaceSpec;
use crate::state::{DeploymentId, Desired};

/// The seed's supported pairs, for the messages that name them.
pub const SUPPORTED_PAIRS: &str = "the supported pairs are (public access enabled, egress enabled) and (public access disabled, egress disabled)";

fn egress(spec: &DeploymentSpec) -> Access {
    spec.egress_public_network_access
}

/// Deployments with egress `access`, as `endpoint/deployment`.
fn deployments_with(desired: &Desired, access: Access) -> Vec<String> {
    desired
        .deployments
        .iter()
        .filter(|(_, d)| egress(&d.record.spec) == access)
        .map(|(id, _)| id.to_string())
        .collect()
}

pub fn endpoint_exists(desired: &Desired, name: &str) -> Result<(), Error> {
    match desired.endpoints.contains_key(name) {
        true => Ok(()),
        false => Err(Error::NotFound(format!("endpoint {name} not found"))),
    }
}

/// A home's workspace is replaced only while it has no endpoints.
pub fn create_workspace(desired: &Desired) -> Result<(), Error> {
    if desired.endpoints.is_empty() {
        return Ok(());
    }
    Err(Error::Conflict(format!(
        "workspace {} already has endpoints; use `moat workspace update` to change it",
        desired.workspace.name
    )))
}

/// A workspace update is always allowed; switching its public access warns about the
/// deployments the switch leaves outside their supported pair.
pub fn update_workspace(desired: &Desired, new: &WorkspaceSpec) -> Vec<String> {
    let mut warnings = Vec::new();
    match (desired.workspace.public_network_access, new.public_network_access) {
        (Access::Enabled, Access::Disabled) => {
            let public = deployments_with(desired, Access::Enabled);
            if !public.is_empty() {
                warnings.push(format!(
                    "public network access is now disabled: these deployments, which have egress enabled, are no longer reachable from public networks and lose their public path to workspace resources: {}",
                    public.join(", ")
                ));
            }
        }
        (Access::Disabled, Access::Enabled) => {
            let private = deployments_with(desired, Access::Disabled);
            if !private.is_empty() {
                warnings.push(format!(
                    "public network access is now enabled while these deployments have egress disabled, an unsupported pair ({SUPPORTED_PAIRS}): {}",
                    private.join(", ")
                ));
            }
        }
        _ => {}
    }
    warnings
}

pub fn create_endpoint(desired: &Desired, spec: &EndpointSpec, aad_configured: bool) -> Result<(), Error> {
    if spec.auth_mode == AuthMode::AadToken && !aad_configured {
        return Err(Error::Invalid(
            "auth_mode aad_token needs auth.aad (issuer and jwks_uri) in the daemon's config".into(),
        ));
    }
    if let Some(name) = spec.traffic.keys().chain(spec.mirror_traffic.keys()).next() {
        return Err(Error::Invalid(format!(
            "traffic names deployment {name}, which does not exist yet: create the endpoint without traffic, then its deployments (--all-traffic)"
        )));
    }
    if desired.endpoints.contains_key(&spec.name) {
        return Err(Error::Conflict(format!("endpoint {} already exists", spec.name)));
    }
    Ok(())
}

/// The endpoint exists, keeps its auth mode, and its traffic and mirror name only its own
/// deployments.
pub fn update_endpoint(desired: &Desired, spec: &EndpointSpec) -> Result<(), Error> {
    let at = desired
        .endpoints
        .get(&spec.name)
        .ok_or_else(|| Error::NotFound(format!("endpoint {} not found", spec.name)))?;
    if spec.auth_mode != at.record.spec.auth_mode {
        return Err(Error::Invalid("auth_mode cannot change; create a new endpoint instead".into()));
    }
    let exists = |d: &String| desired.deployments.contains_key(&DeploymentId::new(&spec.name, d));
    let mut named = spec.traffic.iter().chain(spec.mirror_traffic.iter()).filter(|(_, p)| **p > 0);
    if let Some((missing, _)) = named.find(|(d, _)| !exists(d)) {
        // The endpoint exists; its traffic names what does not: a refused rule, not a missing
        // resource (exit 1, not 3).
        return Err(Error::Invalid(format!("deployment {missing} not found on endpoint {}", spec.name)));
    }
    Ok(())
}

/// What else a new deployment changes, and what the operator should hear of it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct NewDeployment {
    /// A private deployment in a workspace with public access: the workspace switches to
    /// public access disabled in the same commit.
    pub switch_workspace: bool,
    pub warnings: Vec<String>,
}

pub fn create_deployment(
    desired: &Desired,
    spec: &DeploymentSpec,
    host_memory: u64,
) -> Result<NewDeployment, Error> {
    let id = spec.id();
    endpoint_exists(desired, &id.endpoint)?;
    // Docker names join endpoint and deployment with '-': two pairs must not meet there.
    let joined = format!("{}-{}", id.endpoint, id.deployment);
    if let Some(other) = desired.deployments.keys().find(|other| {
        other.endpoint != id.endpoint && format!("{}-{}", other.endpoint, other.deployment) == joined
    }) {
        return Err(Error::Conflict(format!(
            "deployment {} on endpoint {} would share its container names with deployment {} on endpoint {}; choose another name",
            id.deployment, id.endpoint, other.deployment, other.endpoint
        )));
    }
    if desired.deployments.contains_key(&id) {
        return Err(Error::Conflict(format!(
            "deployment {} already exists on endpoint {}",
            id.deployment, id.endpoint
        )));
    }
    let workspace = &desired.workspace;
    if workspace.public_network_access == Access::Disabled && egress(spec) == Access::Enabled {
        return Err(Error::Invalid(format!(
            "unsupported pair: workspace {} has public network access disabled, and deployment {} has egress_public_network_access enabled; {SUPPORTED_PAIRS}",
            workspace.name, id.deployment
        )));
    }
    capacity(desired, spec, host_memory)?;
    let mut decision = NewDeployment::default();
    if egress(spec) == Access::Disabled && workspace.public_network_access == Access::Enabled {
        decision.switch_workspace = true;
        decision.warnings.push(format!(
            "warning: deployment {} has egress disabled, so workspace {} now has public network access disabled: its endpoints answer private ingress only",
            id.deployment, workspace.name
        ));
        let public = deployments_with(desired, Access::Enabled);
        if !public.is_empty() {
            decision.warnings.push(format!(
                "warning: these deployments have egress enabled and are no longer reachable from public networks: {}",
                public.join(", ")
            ));
        }
    }
    Ok(decision)
}

pub fn update_deployment(desired: &Desired, spec: &DeploymentSpec, host_memory: u64) -> Result<(), Error> {
    let id = spec.id();
    endpoint_exists(desired, &id.endpoint)?;
    let at = desired.deployments.get(&id).ok_or_else(|| {
        Error::NotFound(format!(
            "deployment {} not found on endpoint {}; create it first",
            id.deployment, id.endpoint
        ))
    })?;
    if egress(&at.record.spec) != egress(spec) {
        return Err(Error::Invalid(format!(
            "egress_public_network_access of deployment {} cannot change on update: delete it and create it again",
            id.deployment
        )));
    }
    capacity(desired, spec, host_memory)
}

/// A deployment that takes live or mirrored traffic is not deleted until that traffic moves.
pub fn delete_deployment(desired: &Desired, id: &DeploymentId) -> Result<(), Error> {
    let ep = desired
        .endpoints
        .get(&id.endpoint)
        .ok_or_else(|| Error::NotFound(format!("endpoint {} not found", id.endpoint)))?;
    if !desired.deployments.contains_key(id) {
        return Err(Error::NotFound(format!(
            "deployment {} not found on endpoint {}",
            id.deployment, id.endpoint
        )));
    }
    let traffic = &ep.record.spec;
    let share = traffic.traffic.get(&id.deployment).copied().unwrap_or(0)
        + traffic.mirror_traffic.get(&id.deployment).copied().unwrap_or(0);
    if share > 0 {
        return Err(Error::Invalid(format!(
            "deployment {} still takes traffic on endpoint {}; move its traffic to another deployment first",
            id.deployment, id.endpoint
        )));
    }
    Ok(())
}

/// The deployment's instances, with one surge instance for a rollout, must fit in the host's
/// memory beside this home's other deployments (Failed ones run nothing).
pub fn capacity(desired: &Desired, spec: &DeploymentSpec, host_memory: u64) -> Result<(), Error> {
    let id = spec.id();
    let others: u64 = desired
        .deployments
        .iter()
        .filter(|(other, _)| **other != id && desired.current_outcome(other).is_none_or(|o| o.succeeded))
        .map(|(_, at)| u64::from(at.record.spec.instance_count) * container::memory_bytes(&at.record.spec))
        .sum();
    let per_instance = container::memory_bytes(spec);
    let wanted = (u64::from(spec.instance_count) + 1) * per_instance;
    if others + wanted <= host_memory {
        return Ok(());
    }
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    Err(Error::Invalid(format!(
        "not enough memory: {} × {} ({:.1} GiB each) plus one surge instance needs {:.1} GiB, but this host has {:.1} GiB and this home's other deployments take {:.1} GiB",
        spec.instance_count,
        spec.instance_type,
        gib(per_instance),
        gib(wanted),
        gib(host_memory),
        gib(others)
    )))
}

/// `--all-traffic`: the endpoint's traffic once `deployment` takes all of it.
pub fn all_traffic(endpoint: &EndpointSpec, deployment: &str) -> EndpointSpec {
    let mut moved = endpoint.clone();
    for share in moved.traffic.values_mut() {
        *share = 0;
    }
    moved.traffic.insert(deployment.to_string(), 100);
    moved
}

/// What `show` warns of a deployment left outside its supported pair.
pub fn pair_warning(workspace: &WorkspaceSpec, spec: &DeploymentSpec) -> Option<String> {
    (workspace.public_network_access == Access::Disabled && egress(spec) == Access::Enabled).then(|| {
        format!(
            "workspace {} has public network access disabled: this deployment (egress enabled) is no longer reachable from public networks and has lost its public path to workspace resources; {SUPPORTED_PAIRS}",
            workspace.name
        )
    })
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
