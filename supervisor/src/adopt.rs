//! Adoption: a daemon that starts again finds the containers an earlier one left running and
//! takes them over instead of starting anew, so a restart costs no capacity.
//!
//! Every running container of the deployment is adopted, whatever spec made it: those of an
//! older spec (a daemon that died mid-rollout) keep serving until the rollout replaces them.
//! How far an adopted container is trusted is the caller's word ([`Adoption`]): a spec that
//! succeeded before vouches for its containers, so an unready one does not hold the apply up.

use std::net::IpAddr;

use moat_id::DeploymentId;

use crate::engine::ContainerInfo;
use crate::instance::{Instance, InstanceStatus};
use crate::lifecycle::{Event, Life};
use crate::supervisor::Supervisor;
use crate::watch::{self, Start};
use crate::{Error, names};

/// What is known of the spec being applied, which decides how its adopted containers count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adoption {
    /// This spec succeeded before: its containers have served. One that is not ready yet is
    /// a degraded instance, not a failed apply, and an exit restarts it.
    Trusted,
    /// Nothing says its containers ever passed readiness (the daemon stopped while creating
    /// them): the apply waits for them like for new ones and fails if one exits first.
    Probation,
}

/// A container found for the deployment and worth keeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    pub index: u32,
    pub id: String,
    pub hash: String,
    pub address: Option<IpAddr>,
}

/// Which containers to adopt (running, with an instance index of their own) and which to
/// remove (stopped, unlabelled, or a second container claiming an index).
pub(crate) fn sort(mut containers: Vec<ContainerInfo>, network: &str) -> (Vec<Found>, Vec<String>) {
    let index_of = |c: &ContainerInfo| c.labels.get(names::INSTANCE).and_then(|i| i.parse::<u32>().ok());
    containers.sort_by_key(|c| (index_of(c), c.id.clone()));
    let (mut keep, mut remove) = (Vec::<Found>::new(), Vec::new());
    for c in containers {
        match index_of(&c) {
            Some(index) if c.running && keep.last().is_none_or(|k| k.index != index) => keep.push(Found {
                index,
                hash: c.labels.get(names::SPEC_HASH).cloned().unwrap_or_default(),
                address: c.addresses.get(network).copied(),
                id: c.id,
            }),
            _ => remove.push(c.id),
        }
    }
    (keep, remove)
}

impl Supervisor {
    /// Takes over the deployment's running containers; returns the adopted instances of the
    /// current spec (`hash`), which a [`Adoption::Probation`] apply must wait for.
    pub(crate) async fn adopt(
        &self,
        id: &DeploymentId,
        spec: &std::sync::Arc<crate::DeploymentSpec>,
        hash: &str,
        adoption: Adoption,
    ) -> Result<Vec<std::sync::Arc<Instance>>, Error> {
        let home = self.home();
        let existing = self.engine().containers(&names::of_deployment(home, id)).await?;
        let (found, leftovers) = sort(existing, &names::network(home, id));
        for container in leftovers {
            self.engine().remove(&container).await?;
        }
        let ctx = self.inner.ctx.clone();
        let mut instances = Vec::new();
        for f in found {
            let status = InstanceStatus {
                name: format!("{}-{}", id.deployment, f.index),
                container_id: Some(f.id),
                address: f.address,
                life: Life::new(self.inner.config.backoff),
                last_logs: String::new(),
                docker_warnings: Vec::new(),
            };
            let instance = Instance::new(f.index, &f.hash, status);
            // An older spec's container served before this spec was asked for.
            let proven = adoption == Adoption::Trusted || f.hash != hash;
            instance.on(&ctx, Event::Adopted { proven });
            watch::watch(&ctx, spec, &instance, Start { settled: true });
            instances.push(instance);
        }
        let on_trial = match adoption {
            Adoption::Trusted => Vec::new(),
            Adoption::Probation => instances.iter().filter(|i| i.hash == hash).cloned().collect(),
        };
        self.register(id, spec.clone(), instances);
        Ok(on_trial)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn container(id: &str, index: Option<&str>, running: bool) -> ContainerInfo {
        let mut labels = HashMap::from([(names::SPEC_HASH.to_string(), "h1".to_string())]);
        if let Some(i) = index {
            labels.insert(names::INSTANCE.to_string(), i.to_string());
        }
        ContainerInfo {
            id: id.into(),
            labels,
            running,
            exit_code: None,
            error: None,
            addresses: HashMap::from([("net".to_string(), IpAddr::from([172, 18, 0, 9]))]),
        }
    }

    #[test]
    fn running_containers_with_an_index_are_adopted_in_order_with_their_address() {
        let (keep, remove) =
            sort(vec![container("b", Some("1"), true), container("a", Some("0"), true)], "net");
        assert_eq!(keep.iter().map(|f| (f.index, f.id.as_str())).collect::<Vec<_>>(), [(0, "a"), (1, "b")]);
        assert_eq!(keep[0].address, Some(IpAddr::from([172, 18, 0, 9])));
        assert_eq!(keep[0].hash, "h1");
        assert!(remove.is_empty());
    }

    #[test]
    fn stopped_unlabelled_and_duplicate_containers_are_removed() {
        let (keep, remove) = sort(
            vec![
                container("stopped", Some("0"), false),
                container("nameless", None, true),
                container("garbled", Some("x"), true),
                container("first", Some("1"), true),
                container("second", Some("1"), true),
            ],
            "net",
        );
        assert_eq!(keep.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(), ["first"]);
        let mut remove = remove;
        remove.sort();
        assert_eq!(remove, ["garbled", "nameless", "second", "stopped"]);
    }

    #[test]
    fn a_container_on_another_network_has_no_address_here() {
        let (keep, _) = sort(vec![container("a", Some("0"), true)], "other");
        assert_eq!(keep[0].address, None);
    }
}
