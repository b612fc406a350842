//! Remove: a deployment's instances are drained and removed, then whatever else of it is left
//! (a container of a crashed create, its network); and at start-up, everything of this home
//! that belongs to no deployment any more.

use std::collections::HashSet;

use moat_id::DeploymentId;

use crate::supervisor::Supervisor;
use crate::{Error, names};

impl Supervisor {
    /// Drains and removes a deployment's instances, any other container it left, its
    /// network and its built images.
    pub async fn remove(&self, id: &DeploymentId) -> Result<(), Error> {
        let (instances, grace) = match self.deployments().get(id) {
            Some(r) => (r.instances.clone(), r.spec.drain_grace),
            None => (Vec::new(), std::time::Duration::ZERO),
        };
        let drains = instances.iter().map(|i| self.drain(i, grace));
        let drained = futures_util::future::join_all(drains).await;
        self.deployments().remove(id);
        self.inner.ctx.notify();
        drained.into_iter().collect::<Result<(), Error>>()?;
        let home = self.home();
        for container in self.engine().containers(&names::of_deployment(home, id)).await? {
            self.engine().stop(&container.id, self.inner.config.stop_timeout).await?;
            self.engine().remove(&container.id).await?;
        }
        self.engine().remove_network(&names::network(home, id)).await?;
        self.forget_network(id);
        self.remove_built(id, None).await?;
        self.take_initializer_log(id);
        Ok(())
    }

    /// Removes this home's containers, networks and built images of every deployment not in
    /// `keep`:
    /// what a restarted daemon does with the leftovers of deleted deployments.
    pub async fn remove_others(&self, keep: &HashSet<DeploymentId>) -> Result<(), Error> {
        let home = self.home().to_string();
        let mine = [(names::HOME, home.as_str())];
        let mut stale: HashSet<DeploymentId> = HashSet::new();
        // True for an object of no deployment at all: removed on its own.
        let mut orphan = |labels: &crate::engine::Labels| match names::deployment_of(labels) {
            Some(id) => {
                if !keep.contains(&id) {
                    stale.insert(id);
                }
                false
            }
            None => true,
        };
        for container in self.engine().containers(&mine).await? {
            if orphan(&container.labels) {
                self.engine().remove(&container.id).await?;
            }
        }
        for (name, labels) in self.engine().networks(&mine).await? {
            if orphan(&labels) {
                self.engine().remove_network(&name).await?;
            }
        }
        for (tag, labels) in self.engine().images(&mine).await? {
            if orphan(&labels) {
                self.engine().remove_image(&tag).await?;
            }
        }
        let watched: Vec<DeploymentId> = self.deployments().keys().cloned().collect();
        stale.extend(watched.into_iter().filter(|id| !keep.contains(id)));
        for id in stale {
            self.remove(&id).await?;
        }
        Ok(())
    }
}
