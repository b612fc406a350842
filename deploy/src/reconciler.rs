//! The reconciler: watches the store and the supervisor, and after every change
//! 1. publishes a new route table to the gateway (atomically swapped), then
//! 2. starts the actions [`plan`] decides, one at a time per deployment, each in its own task;
//!    an apply records its outcome in the store, and a success with `--all-traffic` moves the
//!    endpoint's traffic in the same commit.
//!
//! It works from what is stored, never from the command that stored it, so a restarted
//! daemon (or, later, another node) reaches the same state.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use moat_egress_guard::Guard;
use moat_gateway::auth::aml::AmlKey;
use moat_gateway::{Admissions, Load, Routes};
use moat_supervisor::Supervisor;
use moat_supervisor::{Adoption, ApplyError};
use tokio::sync::watch;

use crate::plan::{Action, plan};
use crate::routes::route_table;
use crate::spec::Access;
use crate::spec::deployment::DeploymentSpec;
use crate::state::{self, DeploymentId, Desired, Moved, Outcome, Reader};
use crate::store::Txn;
use crate::{container, egress, rules};

/// A store that cannot be reached is tried again after this, doubling up to the next.
const RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(250);
const RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(5);

pub struct Reconciler {
    state: Arc<Reader>,
    supervisor: Supervisor,
    routes: Routes,
    load: Arc<Load>,
    aml: Arc<AmlKey>,
    guard: Arc<Guard>,
    admissions: Arc<Admissions>,
    books: Mutex<Books>,
    /// Bumps when an action ends; admin calls waiting on a delete watch it.
    progress: watch::Sender<u64>,
    /// The store revision the published route table reflects.
    published: watch::Sender<u64>,
    /// A route table has been published: the node can serve.
    serving: watch::Sender<bool>,
}

#[derive(Default)]
struct Books {
    applied: HashMap<DeploymentId, u64>,
    busy: HashMap<DeploymentId, Busy>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    Applying,
    Removing,
    /// Moving the endpoint's traffic for `--all-traffic`.
    Moving,
}

impl Reconciler {
    pub fn new(
        state: Arc<Reader>,
        supervisor: Supervisor,
        routes: Routes,
        load: Arc<Load>,
        aml: Arc<AmlKey>,
        guard: Arc<Guard>,
    ) -> Arc<Reconciler> {
        Arc::new(Reconciler {
            state,
            supervisor,
            routes,
            load,
            aml,
            guard,
            admissions: Arc::new(Admissions::default()),
            books: Mutex::new(Books::default()),
            progress: watch::channel(0).0,
            published: watch::channel(0).0,
            serving: watch::channel(false).0,
        })
    }

    fn books(&self) -> MutexGuard<'_, Books> {
        self.books.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What is running for a deployment right now, if anything.
    pub fn busy(&self, id: &DeploymentId) -> Option<Busy> {
        self.books().busy.get(id).copied()
    }

    /// Whether this daemon still has containers (or an action) for the deployment.
    pub fn holds(&self, id: &DeploymentId) -> bool {
        let books = self.books();
        books.busy.contains_key(id) || books.applied.contains_key(id)
    }

    pub fn guard(&self) -> &Guard {
        &self.guard
    }

    pub fn progress(&self) -> watch::Receiver<u64> {
        self.progress.subscribe()
    }

    pub fn published(&self) -> watch::Receiver<u64> {
        self.published.subscribe()
    }

    /// True from the first route table on.
    pub fn serving(&self) -> watch::Receiver<bool> {
        self.serving.subscribe()
    }

    /// Stops (true) or resumes (false) every change this daemon makes to containers, networks
    /// and kernel rules, while another daemon takes over (`serve --upgrade`): no pass, no
    /// action, no kernel-table repair, no container stopped or restarted. Scoring goes on from
    /// the last route table; actions already running finish. The flag is the supervisor's.
    pub fn stand_by(&self, standing_by: bool) {
        self.supervisor.stand_by(standing_by);
    }

    pub fn standing_by(&self) -> bool {
        *self.supervisor.standing_by().borrow()
    }

    /// Whether no action is running: after the first pass, the node has done what the desired
    /// state asks (adopted, applied or failed each deployment).
    pub fn settled(&self) -> bool {
        *self.serving.borrow() && self.books().busy.is_empty()
    }

    /// Removes what an earlier daemon left for deployments that are gone (or failed), then
    /// reconciles on every change until the task is dropped.
    pub async fn run(self: Arc<Self>) {
        let desired = self.state.read();
        let keep: HashSet<DeploymentId> = desired
            .deployments
            .keys()
            .filter(|id| desired.current_outcome(id).is_none_or(|o| o.succeeded))
            .cloned()
            .collect();
        if let Err(e) = self.supervisor.remove_others(&keep).await {
            tracing::warn!(error = %e, "removing leftover containers");
        }
        self.guard.remove_others(&keep.iter().cloned().collect::<Vec<_>>());
        tokio::spawn(egress::report_kernel_drops(self.guard.clone()));
        tokio::spawn(egress::keep_kernel_rules(self.guard.clone(), self.supervisor.standing_by()));
        let mut store_changes = self.state.store().watch();
        let mut instance_changes = self.supervisor.subscribe();
        let mut progress = self.progress.subscribe();
        let mut standing_by = self.supervisor.standing_by();
        loop {
            let _ = standing_by.wait_for(|s| !*s).await;
            self.pass();
            tokio::select! {
                _ = store_changes.changed() => {}
                _ = instance_changes.changed() => {}
                _ = progress.changed() => {}
                _ = standing_by.changed() => {}
            }
        }
    }

    fn pass(self: &Arc<Self>) {
        let revision = *self.state.store().watch().borrow();
        let desired = self.state.read();
        let moat_networks = self.supervisor.subnets();
        self.guard.set_moat_networks(moat_networks.clone());
        let table = route_table(
            &desired,
            &self.supervisor.leases(),
            &self.load,
            &self.admissions,
            &self.aml,
            &moat_networks,
        );
        for id in self.guard.deployments() {
            let instances = self.supervisor.instances(&id);
            let by_address = instances.into_iter().filter_map(|i| Some((i.address?, i.name))).collect();
            self.guard.set_instances(&id, by_address);
        }
        self.routes.publish(table);
        self.load.prune();
        self.admissions.prune();

        let actions = {
            let mut books = self.books();
            let busy: HashSet<DeploymentId> = books.busy.keys().cloned().collect();
            let guarded = self
                .guard
                .deployments()
                .into_iter()
                .filter_map(|id| Some((id.clone(), self.guard.endpoints(&id)?)))
                .collect();
            let actions = plan(&desired, &books.applied, &busy, &guarded);
            for action in &actions {
                match action {
                    Action::Apply { id, .. } | Action::Reattach { id } => {
                        books.busy.insert(id.clone(), Busy::Applying)
                    }
                    Action::Remove { id } => books.busy.insert(id.clone(), Busy::Removing),
                    Action::MoveTraffic { id, .. } => books.busy.insert(id.clone(), Busy::Moving),
                };
            }
            actions
        };
        // After the actions are booked: `settled` must never see a first pass with nothing busy
        // that is about to start something.
        self.serving.send_if_modified(|s| !std::mem::replace(s, true));
        self.published.send_if_modified(|p| {
            let newer = revision > *p;
            *p = (*p).max(revision);
            newer
        });
        for action in actions {
            let this = self.clone();
            let desired = desired.clone();
            tokio::spawn(async move {
                let id = action.id().clone();
                match action {
                    Action::Apply { id, revision } => this.apply(&desired, &id, revision).await,
                    Action::Remove { id } => this.remove(&id).await,
                    Action::Reattach { id } => this.reattach(&desired, &id).await,
                    Action::MoveTraffic { id, revision } => this.move_traffic(&id, revision).await,
                }
                this.books().busy.remove(&id);
                this.progress.send_modify(|n| *n = n.wrapping_add(1));
            });
        }
    }

    async fn apply(&self, desired: &Desired, id: &DeploymentId, revision: u64) {
        let Some(at) = desired.deployments.get(id) else {
            return;
        };
        tracing::info!(endpoint = %id.endpoint, deployment = %id.deployment, revision, "applying deployment");
        // A revision that already succeeded vouches for the containers it left running.
        let adoption = match desired.current_outcome(id) {
            Some(o) if o.succeeded => Adoption::Trusted,
            _ => Adoption::Probation,
        };
        let result = self.bring_up(desired, &at.record.spec, adoption).await;
        let outcome = match result {
            Ok(()) => Outcome { revision, succeeded: true, reason: None, logs: String::new() },
            Err(e) => Outcome { revision, succeeded: false, reason: Some(e.reason), logs: e.logs },
        };
        self.books().applied.insert(id.clone(), revision);
        self.record_outcome(id, revision, outcome).await;
    }

    /// A private deployment first gets its internal network and the egress guard on it; then
    /// the supervisor starts (or adopts) its containers.
    async fn bring_up(
        &self,
        desired: &Desired,
        spec: &DeploymentSpec,
        adoption: Adoption,
    ) -> Result<(), ApplyError> {
        let failed = |reason: String| ApplyError { reason, logs: String::new() };
        let id = spec.id();
        let private = spec.egress_public_network_access == Access::Disabled;
        let network = self.supervisor.network(&id, private).await.map_err(|e| failed(e.to_string()))?;
        // The fence comes before any container: a network that cannot be fenced runs nothing.
        let attachment = if private {
            let net = egress::network(&id, &network, &desired.workspace);
            self.guard.attach(net).await.map(Some)
        } else {
            self.guard.fence(&id, &network.bridge).map(|()| None)
        };
        let attachment = match attachment {
            Ok(attachment) => attachment,
            Err(e) => {
                self.remove_fenced(&id).await;
                return Err(failed(e.to_string()));
            }
        };
        let result =
            self.supervisor.apply(container::supervisor_spec(spec, attachment.as_ref()), adoption).await;
        if result.is_err() {
            // The apply removed its containers; only then do the rules go.
            self.guard.detach(&id);
        }
        result
    }

    /// Removes a deployment's containers, then its kernel rules: in that order, so that no
    /// container of it ever runs unfenced.
    async fn remove_fenced(&self, id: &DeploymentId) {
        if let Err(e) = self.supervisor.remove(id).await {
            tracing::warn!(endpoint = %id.endpoint, deployment = %id.deployment, error = %e, "removing containers; their rules stay");
            return;
        }
        self.guard.detach(id);
    }

    /// The workspace's private endpoints changed under a running private deployment: the
    /// guard takes the new list (DNS, listeners, kernel rules) while the containers keep
    /// running (their environment does not name private endpoints). If the guard cannot be attached,
    /// the deployment fails closed: its containers go and it is Failed with the reason.
    async fn reattach(&self, desired: &Desired, id: &DeploymentId) {
        let Some(at) = desired.deployments.get(id) else { return };
        tracing::info!(endpoint = %id.endpoint, deployment = %id.deployment, "the workspace's private endpoints changed; attaching the egress guard again");
        let attached = match self.supervisor.network(id, true).await {
            Ok(network) => {
                let net = egress::network(id, &network, &desired.workspace);
                self.guard.attach(net).await.map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        let Err(reason) = attached else { return };
        tracing::warn!(endpoint = %id.endpoint, deployment = %id.deployment, reason, "egress guard lost; removing the deployment's containers");
        self.remove_fenced(id).await;
        let outcome =
            Outcome { revision: at.revision, succeeded: false, reason: Some(reason), logs: String::new() };
        self.record_outcome(id, at.revision, outcome).await;
    }

    /// Stores this node's outcome unless the same one is already there for this revision (a
    /// restart re-applies). A store that cannot be reached is tried again until it can, or
    /// until the revision is no longer current: whoever waits on the outcome waits for it.
    async fn record_outcome(&self, id: &DeploymentId, revision: u64, outcome: Outcome) {
        let mut delay = RETRY_FIRST;
        loop {
            // Re-read: the deployment may have changed or gone while its containers came up.
            let desired = self.state.read();
            if desired.deployments.get(id).is_none_or(|at| at.revision != revision) {
                return;
            }
            let previous = desired.outcomes.get(id).and_then(|by_node| by_node.get(&desired.me));
            let previous_here = previous.map(|p| &p.record).filter(|p| p.revision == revision);
            if previous_here.is_some_and(|p| p.succeeded == outcome.succeeded) {
                return;
            }
            let key = state::outcome_key(id, &desired.me);
            let txn = Txn::default()
                .expect(&state::deployment_key(id), Some(revision))
                .expect(&key, previous.map(|p| p.revision))
                .put(&key, &outcome);
            match self.state.store().commit(txn).await {
                Ok(Some(_)) => return,
                Ok(None) => {
                    // Something changed underneath; the next pass sees it and decides again.
                    tracing::info!(endpoint = %id.endpoint, deployment = %id.deployment, "state changed while applying; outcome not recorded");
                    self.books().applied.remove(id);
                    return;
                }
                Err(e) => {
                    tracing::warn!(endpoint = %id.endpoint, deployment = %id.deployment, error = %e, "recording the outcome; trying again");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(RETRY_MAX);
                }
            }
        }
    }

    /// `--all-traffic` for a revision every live node brought up: the endpoint's traffic and
    /// the record that it moved, in one commit; a node that loses the race finds it done.
    async fn move_traffic(&self, id: &DeploymentId, revision: u64) {
        let desired = self.state.read();
        let Some(ep) = desired.endpoints.get(&id.endpoint) else { return };
        if desired.deployments.get(id).is_none_or(|at| at.revision != revision) {
            return;
        }
        let (endpoint_key, move_key) = (state::endpoint_key(&id.endpoint), state::move_key(id));
        let mut record = ep.record.clone();
        record.spec = rules::all_traffic(&record.spec, &id.deployment);
        let txn = Txn::default()
            .expect(&endpoint_key, Some(ep.revision))
            .expect(&state::deployment_key(id), Some(revision))
            .expect(&move_key, desired.moves.get(id).map(|m| m.revision))
            .put(&endpoint_key, record)
            .put(&move_key, Moved { revision });
        match self.state.store().commit(txn).await {
            Ok(Some(_)) => {
                tracing::info!(endpoint = %id.endpoint, deployment = %id.deployment, "all traffic moved to the deployment")
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(endpoint = %id.endpoint, deployment = %id.deployment, error = %e, "moving traffic; trying again");
                tokio::time::sleep(RETRY_FIRST).await;
            }
        }
    }

    async fn remove(&self, id: &DeploymentId) {
        tracing::info!(endpoint = %id.endpoint, deployment = %id.deployment, "removing deployment");
        match self.supervisor.remove(id).await {
            Ok(()) => {
                self.guard.detach(id);
                self.books().applied.remove(id);
            }
            Err(e) => {
                tracing::warn!(endpoint = %id.endpoint, deployment = %id.deployment, error = %e, "removing containers; will retry");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}
