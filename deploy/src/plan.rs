//! The reconciler's decisions as a pure function: from the desired state and what this
//! daemon has brought up, which deployments to apply and which to remove.

use std::collections::{HashMap, HashSet};

use moat_egress_guard::Endpoint;

use crate::egress;
use crate::state::{DeploymentId, Desired, FleetOutcome};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Bring the deployment's containers to this revision of its spec (adopting what runs).
    Apply { id: DeploymentId, revision: u64 },
    /// Stop and remove its containers: the deployment is gone from the desired state.
    Remove { id: DeploymentId },
    /// Attach the egress guard to a running private deployment again: the workspace's private
    /// endpoints changed (its containers keep running).
    Reattach { id: DeploymentId },
    /// `--all-traffic`: the revision succeeded on every live node; send it the endpoint's
    /// traffic (once for the fleet: the move is recorded in the same commit).
    MoveTraffic { id: DeploymentId, revision: u64 },
}

impl Action {
    pub fn id(&self) -> &DeploymentId {
        match self {
            Action::Apply { id, .. }
            | Action::Remove { id }
            | Action::Reattach { id }
            | Action::MoveTraffic { id, .. } => id,
        }
    }
}

/// `applied`: the revision this daemon last brought up (or saw fail) per deployment.
/// `busy`: deployments with an action still running; they are left alone until it ends.
/// `guarded`: the private endpoints the egress guard serves each private deployment with.
pub fn plan(
    desired: &Desired,
    applied: &HashMap<DeploymentId, u64>,
    busy: &HashSet<DeploymentId>,
    guarded: &HashMap<DeploymentId, Vec<Endpoint>>,
) -> Vec<Action> {
    let mut actions = Vec::new();
    for (id, at) in &desired.deployments {
        if busy.contains(id) || applied.get(id) == Some(&at.revision) {
            continue;
        }
        // A revision that failed stays Failed until it is updated or deleted.
        if desired.current_outcome(id).is_some_and(|o| !o.succeeded) {
            continue;
        }
        actions.push(Action::Apply { id: id.clone(), revision: at.revision });
    }
    for id in applied.keys() {
        if !busy.contains(id) && !desired.deployments.contains_key(id) {
            actions.push(Action::Remove { id: id.clone() });
        }
    }
    for (id, at) in &desired.deployments {
        let moved = desired.moves.get(id).is_some_and(|m| m.record.revision == at.revision);
        let everywhere = desired.fleet_outcome(id) == FleetOutcome::Succeeded;
        let acted = actions.iter().any(|a| a.id() == id);
        if at.record.all_traffic && everywhere && !moved && !acted && !busy.contains(id) {
            actions.push(Action::MoveTraffic { id: id.clone(), revision: at.revision });
        }
    }
    let wanted = egress::endpoints(&desired.workspace);
    for (id, serving) in guarded {
        let acted = actions.iter().any(|a| a.id() == id);
        if *serving != wanted && !acted && !busy.contains(id) && desired.deployments.contains_key(id) {
            actions.push(Action::Reattach { id: id.clone() });
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Access;
    use crate::testing::{World, deployment, endpoint};

    fn id(name: &str) -> DeploymentId {
        DeploymentId::new("ep1", name)
    }

    /// Deployments of `ep1` at the revisions the world gives them, and outcomes of theirs.
    fn desired(names: &[&str], outcomes: &[(&str, bool)]) -> Desired {
        let world = names.iter().fold(World::new(Access::Enabled).endpoint(endpoint("ep1")), |w, n| {
            w.deployment(deployment("ep1", n))
        });
        outcomes.iter().fold(world, |w, (n, ok)| w.outcome(&id(n), *ok)).desired
    }

    fn revision(d: &Desired, name: &str) -> u64 {
        d.deployments[&id(name)].revision
    }

    #[test]
    fn new_and_changed_deployments_are_applied_once() {
        let d = desired(&["blue", "green"], &[]);
        let applied = HashMap::from([(id("blue"), revision(&d, "blue")), (id("green"), 1)]);
        assert_eq!(
            plan(&d, &applied, &HashSet::new(), &HashMap::new()),
            [Action::Apply { id: id("green"), revision: revision(&d, "green") }]
        );
    }

    #[test]
    fn a_restarted_daemon_reapplies_succeeded_deployments_to_adopt_them_but_not_failed_ones() {
        let d = desired(&["blue", "red"], &[("blue", true), ("red", false)]);
        assert_eq!(
            plan(&d, &HashMap::new(), &HashSet::new(), &HashMap::new()),
            [Action::Apply { id: id("blue"), revision: revision(&d, "blue") }]
        );
    }

    #[test]
    fn an_updated_failed_deployment_is_tried_again() {
        let failed = desired(&["red"], &[("red", false)]);
        // The same deployment stored again: a newer revision than the one that failed.
        let mut updated = failed.clone();
        let at = updated.deployments.get_mut(&id("red")).expect("red");
        at.revision += 10;
        assert_eq!(
            plan(&updated, &HashMap::new(), &HashSet::new(), &HashMap::new()),
            [Action::Apply { id: id("red"), revision: revision(&updated, "red") }]
        );
    }

    #[test]
    fn deleted_deployments_are_removed_and_busy_ones_wait() {
        let d = desired(&["blue"], &[]);
        let applied = HashMap::from([(id("gone"), 2), (id("busy"), 1)]);
        let busy = HashSet::from([id("busy"), id("blue")]);
        assert_eq!(plan(&d, &applied, &busy, &HashMap::new()), [Action::Remove { id: id("gone") }]);
    }

    #[test]
    fn all_traffic_moves_once_when_every_live_node_succeeded() {
        let blue = id("blue");
        let world = World::new(Access::Enabled)
            .endpoint(endpoint("ep1"))
            .deployment(deployment("ep1", "blue"))
            .all_traffic(&blue);
        let applied = |d: &Desired| HashMap::from([(blue.clone(), revision(d, "blue"))]);
        let none = |d: &Desired| plan(d, &applied(d), &HashSet::new(), &HashMap::new());
        let other = "ffff0000";
        let mine_only = world.node(other, &[]).outcome(&blue, true);
        assert_eq!(none(&mine_only.desired), [], "the other live node has not succeeded yet");
        let both = mine_only.outcome_on(other, &blue, true);
        let r = revision(&both.desired, "blue");
        assert_eq!(none(&both.desired), [Action::MoveTraffic { id: blue.clone(), revision: r }]);
        let mut moved = both.desired.clone();
        moved.moves.insert(
            blue.clone(),
            crate::state::At { record: crate::state::Moved { revision: r }, revision: 99 },
        );
        assert_eq!(none(&moved), [], "moved once");
        let failed = World::new(Access::Enabled)
            .endpoint(endpoint("ep1"))
            .deployment(deployment("ep1", "blue"))
            .all_traffic(&blue)
            .node(other, &[])
            .outcome(&blue, true)
            .outcome_on(other, &blue, false);
        assert_eq!(none(&failed.desired), [], "a node failed it: no traffic moves");
    }

    #[test]
    fn a_private_deployment_is_reattached_when_the_workspace_private_endpoints_change() {
        let d = desired(&["blue", "green"], &[("blue", true), ("green", true)]);
        let applied =
            HashMap::from([(id("blue"), revision(&d, "blue")), (id("green"), revision(&d, "green"))]);
        let stale = vec![Endpoint {
            name: "gone".into(),
            fqdn: "gone.example".into(),
            aliases: Vec::new(),
            ips: vec!["10.0.0.9".parse().expect("ip")],
            ports: vec![443],
            tls_ports: Vec::new(),
        }];
        let current = egress::endpoints(&d.workspace);
        let guarded = HashMap::from([(id("blue"), stale.clone()), (id("green"), current)]);
        assert_eq!(plan(&d, &applied, &HashSet::new(), &guarded), [Action::Reattach { id: id("blue") }]);
        let busy = HashSet::from([id("blue")]);
        assert_eq!(plan(&d, &applied, &busy, &guarded), []);
    }
}
