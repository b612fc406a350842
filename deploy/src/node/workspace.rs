//! The home's (or the fleet's) one workspace: replaced while it has no endpoints, updated with
//! the warnings of a switch of its public access.

use super::*;

impl Node {
    // ---- workspace ----

    /// The workspace, and the revision of its record (0 for the default one, never stored).
    pub fn workspace_at(&self) -> (WorkspaceSpec, u64) {
        let desired = self.desired();
        (desired.workspace, desired.workspace_revision.unwrap_or(0))
    }

    /// Replaces the default workspace; refused once endpoints exist.
    pub async fn create_workspace(&self, spec: WorkspaceSpec) -> Result<WorkspaceSpec, Error> {
        checked(spec.check())?;
        checked(self.beyond_moat_networks(&spec))?;
        let desired = self.desired();
        rules::create_workspace(&desired)?;
        let txn = desired.endpoints.keys().fold(
            Txn::default().expect(state::WORKSPACE, desired.workspace_revision).put(state::WORKSPACE, &spec),
            |t, name| t.expect(&state::endpoint_key(name), None),
        );
        self.commit(txn).await?;
        Ok(spec)
    }

    pub async fn update_workspace(
        &self,
        spec: WorkspaceSpec,
        expected: Option<u64>,
    ) -> Result<WorkspaceUpdate, Error> {
        checked(spec.check())?;
        checked(self.beyond_moat_networks(&spec))?;
        let desired = self.desired();
        unmoved("workspace", &desired.workspace.name, desired.workspace_revision.unwrap_or(0), expected)?;
        let warnings = rules::update_workspace(&desired, &spec);
        let txn =
            Txn::default().expect(state::WORKSPACE, desired.workspace_revision).put(state::WORKSPACE, &spec);
        self.commit(txn).await?;
        Ok(WorkspaceUpdate { workspace: spec, warnings })
    }

    /// A private endpoint inside one of this node's own networks would have the guard relay
    /// to a container; the guard refuses to dial those anyway, but the spec is wrong and says so.
    fn beyond_moat_networks(&self, spec: &WorkspaceSpec) -> Result<(), Broken> {
        let moat_networks = self.supervisor.subnets();
        for (i, pe) in spec.private_endpoints.iter().enumerate() {
            for (j, ip) in pe.ips.iter().enumerate() {
                if let Some(net) = moat_networks.iter().find(|n| n.contains(&moat_net::canonical(*ip))) {
                    return Err(Broken {
                        field: format!("private_endpoints[{i}].ips[{j}]"),
                        message: format!("{ip} is inside moat's own network {net}, where deployments run"),
                    });
                }
            }
        }
        Ok(())
    }
}
