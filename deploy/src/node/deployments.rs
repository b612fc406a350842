//! Deployments: create, update (a rolling update), delete, logs, and the waits for what the
//! reconciler brings about.

use super::*;

impl Node {
    // ---- deployments ----

    fn deployment_view(&self, desired: &Desired, id: &DeploymentId) -> Option<DeploymentView> {
        let observed = Observed {
            busy: self.reconciler.busy(id),
            instances: self.supervisor.instances(id),
            egress: self.reconciler.guard().addresses(id),
        };
        views::deployment(desired, id, observed)
    }

    pub fn deployment(&self, endpoint: &str, name: &str) -> Result<DeploymentView, Error> {
        self.deployment_at(endpoint, name).map(|(view, _)| view)
    }

    /// The deployment, and the revision of its record (an update sends it back).
    pub fn deployment_at(&self, endpoint: &str, name: &str) -> Result<(DeploymentView, u64), Error> {
        let desired = self.desired();
        endpoint_of(&desired, endpoint)?;
        let id = DeploymentId::new(endpoint, name);
        let missing = || Error::NotFound(format!("deployment {name} not found on endpoint {endpoint}"));
        let revision = desired.deployments.get(&id).ok_or_else(missing)?.revision;
        Ok((self.deployment_view(&desired, &id).ok_or_else(missing)?, revision))
    }

    pub fn deployments(&self, endpoint: &str) -> Result<Vec<DeploymentView>, Error> {
        let desired = self.desired();
        endpoint_of(&desired, endpoint)?;
        let ids = desired.deployments.keys().filter(|id| id.endpoint == endpoint);
        Ok(ids.filter_map(|id| self.deployment_view(&desired, id)).collect())
    }

    /// Stores the deployment; with `wait`, returns once it is Succeeded (or fails with the
    /// reason and the container's last log lines when it ends Failed).
    pub async fn create_deployment(
        &self,
        spec: DeploymentSpec,
        all_traffic: bool,
        wait: bool,
        sink: &ProgressSink,
    ) -> Result<DeploymentView, Error> {
        self.admissible(&spec)?;
        let desired = self.desired();
        let decision = rules::create_deployment(&desired, &spec, self.host_memory())?;
        let id = spec.id();
        let mut txn = Txn::default();
        if decision.switch_workspace {
            let mut workspace = desired.workspace.clone();
            workspace.public_network_access = Access::Disabled;
            txn = txn.expect(state::WORKSPACE, desired.workspace_revision).put(state::WORKSPACE, &workspace);
        }
        for warning in decision.warnings {
            let _ = sink.send(warning);
        }
        let ep = endpoint_of(&desired, &id.endpoint)?;
        let key = state::deployment_key(&id);
        let txn = txn
            .expect(&state::endpoint_key(&id.endpoint), Some(ep.revision))
            .expect(&key, None)
            .put(&key, &DeploymentRecord { spec, all_traffic })
            .delete_prefix(&state::outcomes_prefix(&id))
            .delete(&state::move_key(&id));
        self.commit_deployment(&id, txn, wait, sink).await
    }

    /// Stores a new spec for a deployment; the reconciler rolls its instances to it one
    /// surge instance at a time. With `wait`, returns once every instance runs the new spec.
    pub async fn update_deployment(
        &self,
        spec: DeploymentSpec,
        expected: Option<u64>,
        wait: bool,
        sink: &ProgressSink,
    ) -> Result<DeploymentView, Error> {
        self.admissible(&spec)?;
        let desired = self.desired();
        rules::update_deployment(&desired, &spec, self.host_memory())?;
        let id = spec.id();
        let revision = desired.deployments.get(&id).map(|at| at.revision);
        unmoved("deployment", &id.deployment, revision.unwrap_or(0), expected)?;
        let key = state::deployment_key(&id);
        let txn =
            Txn::default().expect(&key, revision).put(&key, &DeploymentRecord { spec, all_traffic: false });
        self.commit_deployment(&id, txn, wait, sink).await
    }

    /// The spec's own checks (as `validate` makes them), then the mount rule with this node's
    /// home and `supervisor.model_roots`, whatever sent the spec (`validate` knows neither).
    fn admissible(&self, spec: &DeploymentSpec) -> Result<(), Error> {
        checked(spec.check())?;
        checked(self.mounts_allowed(spec))
    }

    fn mounts_allowed(&self, spec: &DeploymentSpec) -> Result<(), Broken> {
        let policy = self.supervisor.mounts();
        if let Some(model) = &spec.model {
            spec::check_mount_with(policy, "model.path", &model.path)?;
        }
        if let Some(code) = &spec.code_configuration {
            spec::check_mount_with(policy, "code_configuration.code", &code.code)?;
        }
        Ok(())
    }

    async fn commit_deployment(
        &self,
        id: &DeploymentId,
        txn: Txn,
        wait: bool,
        sink: &ProgressSink,
    ) -> Result<DeploymentView, Error> {
        let progress = self.supervisor.progress();
        let revision = self.commit(txn).await?;
        if wait {
            self.wait_outcome(id, revision, progress, sink).await?;
        }
        self.deployment_view(&self.desired(), id)
            .ok_or_else(|| Error::Other(format!("deployment {} was deleted meanwhile", id.deployment)))
    }

    /// Refused while the deployment takes live or mirrored traffic.
    pub async fn delete_deployment(&self, endpoint: &str, name: &str, wait: bool) -> Result<(), Error> {
        let desired = self.desired();
        let id = DeploymentId::new(endpoint, name);
        rules::delete_deployment(&desired, &id)?;
        let (ep, at) = (endpoint_of(&desired, endpoint)?, &desired.deployments[&id]);
        let key = state::deployment_key(&id);
        let txn = Txn::default()
            .expect(&state::endpoint_key(endpoint), Some(ep.revision))
            .expect(&key, Some(at.revision))
            .delete(&key)
            .delete_prefix(&state::outcomes_prefix(&id))
            .delete(&state::move_key(&id));
        self.commit(txn).await?;
        if wait {
            self.wait_released(&[id]).await;
        }
        Ok(())
    }

    /// The last `lines` log lines of the deployment's instances (or of the one named).
    pub async fn logs(
        &self,
        endpoint: &str,
        name: &str,
        instance: Option<&str>,
        lines: usize,
    ) -> Result<String, Error> {
        let view = self.deployment(endpoint, name)?;
        if let Some(wanted) = instance
            && !view.instances.iter().any(|i| i.name == wanted)
        {
            let known: Vec<&str> = view.instances.iter().map(|i| i.name.as_str()).collect();
            return Err(Error::NotFound(format!(
                "instance {wanted} not found on deployment {name}; its instances: {}",
                known.join(", ")
            )));
        }
        let id = DeploymentId::new(endpoint, name);
        let logs =
            self.supervisor.logs(&id, instance, lines).await.map_err(|e| Error::Other(e.to_string()))?;
        Ok(match logs.as_slice() {
            [(_, text)] => text.clone(),
            many => many
                .iter()
                .map(|(instance, text)| format!("==> {instance} <==\n{text}"))
                .collect::<Vec<_>>()
                .join("\n"),
        })
    }

    /// The last `lines` lines of moat's own log of the deployment's last apply on this node
    /// (az's storage-initializer): its image pulled or built, its mounts.
    pub fn initializer_log(&self, endpoint: &str, name: &str, lines: usize) -> Result<String, Error> {
        self.deployment(endpoint, name)?;
        let id = DeploymentId::new(endpoint, name);
        Ok(self.supervisor.initializer_log(&id, lines).unwrap_or_else(|| {
            format!("deployment {name} has not been applied on this node since its daemon started\n")
        }))
    }

    /// Waits until the revision's outcome is stored, passing on the supervisor's progress
    /// lines about the deployment (an image pull) as they come.
    async fn wait_outcome(
        &self,
        id: &DeploymentId,
        revision: u64,
        mut progress: broadcast::Receiver<Progress>,
        sink: &ProgressSink,
    ) -> Result<(), Error> {
        let mut changes = self.state.store().watch();
        loop {
            let desired = self.desired();
            let all_traffic = match desired.deployments.get(id) {
                None => {
                    return Err(Error::Other(format!(
                        "deployment {} was deleted while it was being created",
                        id.deployment
                    )));
                }
                Some(at) if at.revision != revision => {
                    return Err(Error::Conflict(format!(
                        "deployment {} was changed by another command meanwhile",
                        id.deployment
                    )));
                }
                Some(at) => at.record.all_traffic,
            };
            let moved = desired.moves.get(id).is_some_and(|m| m.record.revision == revision);
            match desired.fleet_outcome(id) {
                FleetOutcome::Failed { node, outcome } => {
                    let reason = outcome.reason.clone().unwrap_or_default();
                    let on = if node == desired.me { String::new() } else { format!(" on node {node}") };
                    return Err(Error::Failed {
                        message: format!("deployment {} failed{on}: {reason}", id.deployment),
                        logs: outcome.logs.clone(),
                    });
                }
                FleetOutcome::Succeeded if moved || !all_traffic => {
                    let now = *changes.borrow_and_update();
                    let _ = self.reconciler.published().wait_for(|p| *p >= now).await;
                    return Ok(());
                }
                FleetOutcome::Succeeded | FleetOutcome::Pending => {}
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() {
                    return Err(Error::Other("the store closed".into()));
                },
                line = progress.recv() => match line {
                    Ok(p) if p.id == *id => {
                        let _ = sink.send(p.message);
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => progress = self.supervisor.progress(),
                },
            }
        }
    }

    /// Waits until the reconciler holds no containers for these deployments.
    pub(super) async fn wait_released(&self, ids: &[DeploymentId]) {
        let mut progress: watch::Receiver<u64> = self.reconciler.progress();
        while ids.iter().any(|id| self.reconciler.holds(id)) {
            if progress.changed().await.is_err() {
                return;
            }
        }
    }
}
