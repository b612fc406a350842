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
        let desired = self.desired();
        unmoved("workspace", &desired.workspace.name, desired.workspace_revision.unwrap_or(0), expected)?;
        let warnings = rules::update_workspace(&desired, &spec);
        let txn =
            Txn::default().expect(state::WORKSPACE, desired.workspace_revision).put(state::WORKSPACE, &spec);
        self.commit(txn).await?;
        Ok(WorkspaceUpdate { workspace: spec, warnings })
    }
}
