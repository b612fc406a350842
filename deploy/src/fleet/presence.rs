//! A node's presence: its record `nodes/<node>` under an etcd lease it keeps alive, so that a
//! node that stops, or is cut off, leaves the fleet's live nodes within the lease's TTL. The
//! record also says how many instances of each deployment the node has ready, for `show`.
//! Presence only: the desired state never depends on it; it decides which nodes' outcomes
//! the fleet's provisioning state waits for.
//!
//! Every keep-alive answer is a sign of life from etcd's leader (a lease needs one), so it is
//! also what keeps the node's copy of the desired state counted as fresh.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use etcd_client::PutOptions;
use moat_supervisor::Supervisor;

use crate::state::{NodeRecord, node_key};
use crate::store::etcd::EtcdStore;

/// A node silent this long drops out of the live nodes.
pub const LEASE_TTL_S: i64 = 5;
const KEEP_ALIVE_EVERY: Duration = Duration::from_secs(1);
/// Readiness changes come in bursts (a rollout): the record is written once they settle.
const SETTLE: Duration = Duration::from_millis(100);

pub struct Presence {
    store: Arc<EtcdStore>,
    me: String,
    advertise: String,
    supervisor: Supervisor,
    /// The lease in use (0: none yet).
    lease: AtomicI64,
}

impl Presence {
    pub fn new(store: Arc<EtcdStore>, me: &str, advertise: &str, supervisor: Supervisor) -> Arc<Presence> {
        Arc::new(Presence {
            store,
            me: me.to_string(),
            advertise: advertise.to_string(),
            supervisor,
            lease: AtomicI64::new(0),
        })
    }

    fn record(&self, lease: i64) -> NodeRecord {
        let ready: BTreeMap<String, u32> = self
            .supervisor
            .leases()
            .iter()
            .map(|(id, leases)| (id.to_string(), leases.len() as u32))
            .collect();
        NodeRecord {
            advertise: self.advertise.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            ready,
            lease,
        }
    }

    /// Keeps the record and its lease until the task is dropped; a lost lease (expired while
    /// cut off) is granted anew and the record written again.
    pub async fn keep(self: Arc<Self>) {
        let mut delay = Duration::from_millis(250);
        loop {
            if let Err(e) = self.hold_one_lease().await {
                tracing::warn!(error = %e, "node presence in etcd lost; trying again");
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    async fn hold_one_lease(&self) -> Result<(), String> {
        let mut client = self.store.client();
        let lease = tokio::time::timeout(KEEP_ALIVE_EVERY * 4, client.lease_grant(LEASE_TTL_S, None))
            .await
            .map_err(|_| "no answer to a lease grant".to_string())?
            .map_err(|e| e.to_string())?
            .id();
        self.lease.store(lease, Ordering::Relaxed);
        let (mut keeper, mut answers) = client.lease_keep_alive(lease).await.map_err(|e| e.to_string())?;
        let mut changes = self.supervisor.subscribe();
        let mut written: Option<NodeRecord> = None;
        let mut tick = tokio::time::interval(KEEP_ALIVE_EVERY);
        loop {
            let record = self.record(lease);
            if written.as_ref() != Some(&record) {
                let value = serde_json::to_string(&record).map_err(|e| e.to_string())?;
                let key = self.store.full_key(&node_key(&self.me));
                tokio::time::timeout(
                    KEEP_ALIVE_EVERY * 4,
                    client.put(key, value, Some(PutOptions::new().with_lease(lease))),
                )
                .await
                .map_err(|_| "no answer to writing the node record".to_string())?
                .map_err(|e| e.to_string())?;
                written = Some(record);
            }
            tokio::select! {
                _ = tick.tick() => {
                    keeper.keep_alive().await.map_err(|e| e.to_string())?;
                    let answer = tokio::time::timeout(KEEP_ALIVE_EVERY * 3, answers.message())
                        .await
                        .map_err(|_| "no answer to a lease keep-alive".to_string())?
                        .map_err(|e| e.to_string())?;
                    match answer {
                        Some(a) if a.ttl() > 0 => self.store.heard(),
                        _ => return Err("the node's lease expired".into()),
                    }
                }
                changed = changes.changed() => {
                    if changed.is_err() {
                        return Err("the supervisor stopped".into());
                    }
                    tokio::time::sleep(SETTLE).await;
                }
            }
        }
    }

    /// Takes the node out of the live nodes at once (a clean stop), instead of after the TTL.
    pub async fn leave(&self) {
        let lease = self.lease.load(Ordering::Relaxed);
        if lease != 0 {
            let mut client = self.store.client();
            let _ = tokio::time::timeout(Duration::from_secs(2), client.lease_revoke(lease)).await;
        }
    }
}
