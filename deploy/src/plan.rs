//! The reconciler's decisions as a pure function: from the desired state and what this
//! daemon has brought up, which deployments to apply and which to remove.

use std::collections::{HashMap, HashSet};

use moat_egress_guard::Endpoint;

use crate::egress;
use crate::state::{DeploymentId, Desired};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Bring the deployment's containers to this revision of its spec (adopting what runs).
    Apply { id: DeploymentId, revision: u64 },
    /// Stop and remove its containers: the deployment is gone from the desired state.
    Remove { id: DeploymentId },
    /// Attach the egress guard to a running private deployment again: the workspace's private
    /// endpoints changed (its containers keep running).
    Reattach { id: DeploymentId },
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
    let wanted = egress::endpoints(&desired.workspace);
    for (id, serving) in guarded {
        let acted = actions
            .iter()
            .any(|a| matches!(a, Action::Apply { id: i, .. } | Action::Remove { id: i } if i == id));
        if *serving != wanted && !acted && !busy.contains(id) && desired.deployments.contains_key(id) {
            actions.push(Action::Reattach { id: id.clone() });
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Document;
    use crate::spec::deployment::{Names, validate};
    use crate::spec::workspace::WorkspaceSpec;
    use crate::state::{At, DeploymentRecord, Outcome};
    use std::collections::BTreeMap;
    use std::path::Path;

    fn desired(deployments: &[(&str, u64)], outcomes: &[(&str, u64, bool)]) -> Desired {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/model-1");
        let record = |name: &str| {
            let text = format!(
                "name: {name}\nendpoint_name: ep1\nenvironment:\n  image: img\ninstance_type: Standard_F2s_v2\n"
            );
            let spec =
                validate(&Document::parse(&dir.join("d.yml"), &text, &[]).expect("parses"), Names::default())
                    .expect("valid");
            DeploymentRecord { spec, all_traffic: false }
        };
        let id = |name: &str| ("ep1".to_string(), name.to_string());
        Desired {
            workspace: WorkspaceSpec::default_workspace(),
            workspace_revision: None,
            endpoints: BTreeMap::new(),
            deployments: deployments
                .iter()
                .map(|(n, r)| (id(n), At { record: record(n), revision: *r }))
                .collect(),
            outcomes: outcomes
                .iter()
                .map(|(n, r, ok)| {
                    (
                        id(n),
                        At {
                            record: Outcome {
                                revision: *r,
                                succeeded: *ok,
                                reason: None,
                                logs: String::new(),
                            },
                            revision: r + 1,
                        },
                    )
                })
                .collect(),
        }
    }

    fn id(name: &str) -> DeploymentId {
        ("ep1".to_string(), name.to_string())
    }

    #[test]
    fn new_and_changed_deployments_are_applied_once() {
        let d = desired(&[("blue", 3), ("green", 7)], &[]);
        let applied = HashMap::from([(id("blue"), 3), (id("green"), 5)]);
        assert_eq!(
            plan(&d, &applied, &HashSet::new(), &HashMap::new()),
            [Action::Apply { id: id("green"), revision: 7 }]
        );
    }

    #[test]
    fn a_restarted_daemon_reapplies_succeeded_deployments_to_adopt_them_but_not_failed_ones() {
        let d = desired(&[("blue", 3), ("red", 4)], &[("blue", 3, true), ("red", 4, false)]);
        assert_eq!(
            plan(&d, &HashMap::new(), &HashSet::new(), &HashMap::new()),
            [Action::Apply { id: id("blue"), revision: 3 }]
        );
    }

    #[test]
    fn an_updated_failed_deployment_is_tried_again() {
        let d = desired(&[("red", 9)], &[("red", 4, false)]);
        assert_eq!(
            plan(&d, &HashMap::new(), &HashSet::new(), &HashMap::new()),
            [Action::Apply { id: id("red"), revision: 9 }]
        );
    }

    #[test]
    fn deleted_deployments_are_removed_and_busy_ones_wait() {
        let d = desired(&[("blue", 3)], &[]);
        let applied = HashMap::from([(id("gone"), 2), (id("busy"), 1)]);
        let busy = HashSet::from([id("busy"), id("blue")]);
        assert_eq!(plan(&d, &applied, &busy, &HashMap::new()), [Action::Remove { id: id("gone") }]);
    }

    #[test]
    fn a_private_deployment_is_reattached_when_the_workspace_private_endpoints_change() {
        let d = desired(&[("blue", 3), ("green", 4)], &[("blue", 3, true), ("green", 4, true)]);
        let applied = HashMap::from([(id("blue"), 3), (id("green"), 4)]);
        let stale = vec![Endpoint {
            name: "gone".into(),
            fqdn: "gone.example".into(),
            aliases: Vec::new(),
            ips: vec!["10.0.0.9".parse().expect("ip")],
            ports: vec![443],
        }];
        let current = egress::endpoints(&d.workspace);
        let guarded = HashMap::from([(id("blue"), stale.clone()), (id("green"), current)]);
        assert_eq!(plan(&d, &applied, &HashSet::new(), &guarded), [Action::Reattach { id: id("blue") }]);
        let busy = HashSet::from([id("blue")]);
        assert_eq!(plan(&d, &applied, &busy, &guarded), []);
    }
}
