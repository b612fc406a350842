//! What `/readyz` says, kept current: not ready until the store is loaded and the first route
//! table is built, nor while the node drains, nor while its copy of the desired state is stale
//! (a fleet node cut off from etcd longer than `max_staleness_s`). Balancers then send its
//! traffic to the other nodes; it keeps serving what comes anyway.

use std::sync::Arc;
use std::time::Duration;

use moat_gateway::health::Health;
use tokio::sync::watch;

use crate::store::Store;

/// How often staleness is looked at (the other conditions wake it at once).
const CHECK_EVERY: Duration = Duration::from_millis(250);

/// Why the node is not ready, if it is not.
pub fn unready(serving: bool, draining: bool, store: &dyn Store) -> Option<String> {
    if draining {
        return Some("draining".into());
    }
    if !serving {
        return Some("building the route tables".into());
    }
    let fresh = store.freshness();
    (!fresh.current).then(|| format!("stale: no word from etcd for {} s", fresh.stale.as_secs()))
}

pub async fn keep(
    health: Arc<Health>,
    store: Arc<dyn Store>,
    mut serving: watch::Receiver<bool>,
    mut draining: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    loop {
        let why = unready(*serving.borrow(), *draining.borrow(), &*store);
        if why != health.unready() {
            match &why {
                None => tracing::info!("ready"),
                Some(why) => tracing::info!(reason = %why, "not ready"),
            }
            match why {
                None => health.set_ready(),
                Some(why) => health.set_unready(why),
            }
        }
        tokio::select! {
            _ = tick.tick() => {}
            changed = serving.changed() => if changed.is_err() { return },
            changed = draining.changed() => if changed.is_err() { return },
        }
    }
}
