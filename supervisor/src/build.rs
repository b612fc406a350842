//! Build: a deployment's image made from its context (Azure ML's `environment.build`). The
//! tag names the deployment and the digest of everything that shapes the build (the context's
//! archive, the Dockerfile's path, the build arguments), so an unchanged context reuses the
//! image it built before, on every apply and after a restart; a changed one builds anew. The
//! build runs on the deployment's own network, already fenced, with a private deployment's
//! proxy variables as build arguments: its `RUN` steps reach what its containers may, no
//! more. A deployment keeps only the image it runs: the others go once a rollout ends.

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::apply::{ApplyError, FAILURE_LOG_LINES};
use crate::engine::NewImage;
use crate::spec::{Build, DeploymentSpec};
use crate::supervisor::Supervisor;
use crate::{Error, context, names};

/// Docker's predefined build arguments: a `RUN` step sees them without an `ARG` line.
const PROXY_ARGS: [&str; 8] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

impl Supervisor {
    /// The tag of the deployment's image built from `build`, building it unless an image of
    /// the same digest is there. Progress goes to `report`; a failed build's error carries
    /// the builder's last lines.
    pub(crate) async fn built_image(
        &self,
        spec: &DeploymentSpec,
        build: &Build,
        report: &(dyn Fn(String) + Send + Sync),
    ) -> Result<String, ApplyError> {
        let unreadable = |why: String| ApplyError {
            reason: format!("cannot read the build context {}: {why}", build.context.display()),
            logs: String::new(),
        };
        self.inner.config.mounts.check_unchanged(&build.context).map_err(unreadable)?;
        let folder = build.context.clone();
        let archive = tokio::task::spawn_blocking(move || context::archive(&folder))
            .await
            .map_err(|e| unreadable(e.to_string()))?
            .map_err(unreadable)?;
        let args: Vec<(String, String)> =
            spec.env.iter().filter(|(k, _)| PROXY_ARGS.contains(&k.as_str())).cloned().collect();
        let shaped_by = serde_json::to_vec(&(&build.dockerfile, &args)).unwrap_or_default();
        let tag = names::built_image(self.home(), &spec.id, &context::digest(&[&archive, &shaped_by]));
        if self.engine().image_present(&tag).await? {
            report(format!("image {tag} was built from this context before; reusing it"));
            return Ok(tag);
        }
        report(format!("building image {tag} from {}", build.context.display()));
        let last = Mutex::new(VecDeque::with_capacity(FAILURE_LOG_LINES));
        let new = NewImage {
            tag: tag.clone(),
            context: archive.into(),
            dockerfile: build.dockerfile.clone(),
            labels: names::deployment_labels(self.home(), &spec.id),
            network: names::network(self.home(), &spec.id),
            args,
        };
        let line = |line: String| {
            let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
            if last.len() == FAILURE_LOG_LINES {
                last.pop_front();
            }
            last.push_back(line.clone());
            drop(last);
            report(format!("build: {line}"));
        };
        match self.engine().build(new, &line).await {
            Ok(()) => Ok(tag),
            Err(e) => {
                report(e.to_string());
                let last = last.into_inner().unwrap_or_else(|p| p.into_inner());
                Err(ApplyError { reason: e.to_string(), logs: Vec::from(last).join("\n") })
            }
        }
    }

    /// Removes the deployment's built images but `keep` (none when `keep` is `None`).
    pub(crate) async fn remove_built(
        &self,
        id: &moat_id::DeploymentId,
        keep: Option<&str>,
    ) -> Result<(), Error> {
        for (tag, _) in self.engine().images(&names::of_deployment(self.home(), id)).await? {
            if Some(tag.as_str()) != keep {
                self.engine().remove_image(&tag).await?;
            }
        }
        Ok(())
    }
}
