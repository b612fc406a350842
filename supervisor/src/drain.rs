//! Drain: an instance leaves routing first, the requests that had already picked it finish
//! (up to the deployment's grace), and only then is its container stopped and removed.

use std::sync::Arc;
use std::time::Duration;

use moat_id::DeploymentId;

use crate::Error;
use crate::instance::Instance;
use crate::lifecycle::{Ask, Event};
use crate::supervisor::Supervisor;

/// After an instance leaves routing, how long a request that had already picked it may
/// take to register as in flight.
const ROUTE_SETTLE: Duration = Duration::from_millis(100);
/// How often the in-flight count of a draining instance is looked at.
const IN_FLIGHT_POLL: Duration = Duration::from_millis(20);

impl Supervisor {
    /// Drains the deployment's instance `index` and forgets it.
    pub(crate) async fn drain_instance(
        &self,
        id: &DeploymentId,
        index: u32,
        grace: Duration,
    ) -> Result<(), Error> {
        let instance = self.members_of(id).into_iter().find(|i| i.index == index);
        let Some(instance) = instance else { return Ok(()) };
        let result = self.drain(&instance, grace).await;
        if let Some(running) = self.deployments().get_mut(id) {
            running.instances.retain(|i| i.index != index);
        }
        self.inner.ctx.notify();
        result
    }

    pub(crate) async fn drain(&self, instance: &Arc<Instance>, grace: Duration) -> Result<(), Error> {
        instance.stop_watching();
        if instance.on(&self.inner.ctx, Event::Drain) != Some(Ask::Stop) {
            return Ok(());
        }
        if let Some(ip) = instance.address() {
            tokio::time::sleep(ROUTE_SETTLE).await;
            let until = tokio::time::Instant::now() + grace;
            while (self.inner.config.in_flight)(ip) > 0 && tokio::time::Instant::now() < until {
                tokio::time::sleep(IN_FLIGHT_POLL).await;
            }
        }
        match instance.container_id() {
            Some(container) => {
                self.engine().stop(&container, self.inner.config.stop_timeout).await?;
                self.engine().remove(&container).await
            }
            None => Ok(()),
        }
    }
}
