//! Azure ML's container contract, as the supervisor's plain spec: where the model and code
//! are mounted, the variables that point at them, the routes and probes.

use std::path::Path;
use std::time::Duration;

use moat_supervisor as supervisor;

use crate::spec::deployment::{DeploymentSpec, ImageSource, Probe, Route};
use crate::spec::{Access, sku};
use moat_egress_guard::Attachment;

pub const APP_ROOT: &str = "/var/azureml-app";
pub const MODELS_ROOT: &str = "/var/azureml-app/azureml-models";

fn base_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into())
}

/// The supervisor's spec for a deployment; a private one comes with what the egress guard
/// set up for it (its DNS server and proxy variables).
pub fn supervisor_spec(spec: &DeploymentSpec, egress: Option<&Attachment>) -> supervisor::DeploymentSpec {
    let mut env = Vec::new();
    let mut mounts = Vec::new();
    if let Some(model) = &spec.model {
        let dir = match &spec.model_mount_path {
            Some(root) => root.trim_end_matches('/').to_string(),
            None => format!("{MODELS_ROOT}/{}/{}", model.name, model.version),
        };
        mounts.push(supervisor::Mount {
            host_path: model.path.clone(),
            container_path: format!("{dir}/{}", base_name(&model.path)),
            read_only: true,
        });
        env.push(("AZUREML_MODEL_DIR".to_string(), dir));
    }
    if let Some(code) = &spec.code_configuration {
        let root = format!("{APP_ROOT}/{}", base_name(&code.code));
        mounts.push(supervisor::Mount {
            host_path: code.code.clone(),
            container_path: root.clone(),
            read_only: true,
        });
        env.push(("AML_APP_ROOT".to_string(), root));
        env.push(("AZUREML_ENTRY_SCRIPT".to_string(), code.scoring_script.clone()));
    }
    if let Some(attachment) = egress {
        env.extend(attachment.env.iter().cloned());
    }
    // Set last: the user's variables override anything moat injects (proxies included).
    env.extend(spec.environment_variables.iter().map(|(k, v)| (k.clone(), v.clone())));
    let routes = &spec.environment.inference_config;
    // A built image's tag is known once its context is read: the supervisor fills it in.
    let (image, build) = match &spec.environment.source {
        ImageSource::Image(image) => (image.clone(), None),
        ImageSource::Build(b) => (
            String::new(),
            Some(supervisor::Build { context: b.path.clone(), dockerfile: b.dockerfile_path.clone() }),
        ),
    };
    supervisor::DeploymentSpec {
        id: spec.id(),
        image,
        build,
        instance_count: spec.instance_count,
        env,
        mounts,
        liveness_route: route(&routes.liveness_route),
        readiness_route: route(&routes.readiness_route),
        scoring_route: route(&routes.scoring_route),
        liveness_probe: probe(&spec.liveness_probe),
        readiness_probe: probe(&spec.readiness_probe),
        memory_bytes: memory_bytes(spec),
        cpus: sku::lookup(&spec.instance_type).map_or(1, |s| s.vcpus),
        // A drained instance's requests cannot run longer than the request timeout.
        drain_grace: Duration::from_millis(spec.request_settings.request_timeout_ms) + Duration::from_secs(1),
        private: spec.egress_public_network_access == Access::Disabled,
        dns: egress.map(|a| vec![a.dns]).unwrap_or_default(),
    }
}

/// Each instance's memory, from its SKU.
pub fn memory_bytes(spec: &DeploymentSpec) -> u64 {
    sku::lookup(&spec.instance_type).map_or(0, |s| s.memory_mib * 1024 * 1024)
}

fn route(r: &Route) -> supervisor::Route {
    supervisor::Route { port: r.port, path: r.path.clone() }
}

fn probe(p: &Probe) -> supervisor::ProbeSettings {
    let secs = |s: u32| Duration::from_secs(u64::from(s));
    supervisor::ProbeSettings {
        initial_delay: secs(p.initial_delay),
        period: secs(p.period),
        timeout: secs(p.timeout),
        success_threshold: p.success_threshold,
        failure_threshold: p.failure_threshold,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Document;
    use crate::spec::deployment::{Names, validate};

    fn spec(extra: &str) -> DeploymentSpec {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/model-1");
        let text = format!(
            "name: blue\nendpoint_name: ep1\nmodel:\n  path: model/model-1.json\nenvironment:\n  image: img\ninstance_type: Standard_F2s_v2\nenvironment_variables:\n  AZUREML_MODEL_DIR: /override\n{extra}"
        );
        validate(&Document::parse(&dir.join("d.yml"), &text, &[]).expect("parses"), Names::default())
            .expect("valid")
    }

    #[test]
    fn the_model_file_appears_under_azureml_model_dir_by_its_base_name() {
        let s = supervisor_spec(&spec(""), None);
        assert_eq!(s.mounts[0].container_path, "/var/azureml-app/azureml-models/blue-model/1/model-1.json");
        assert!(s.mounts[0].read_only);
        assert_eq!(
            s.env[0],
            ("AZUREML_MODEL_DIR".into(), "/var/azureml-app/azureml-models/blue-model/1".into())
        );
        // The user's variable comes last, so it wins.
        assert_eq!(
            s.env.last().map(|(k, v)| (k.as_str(), v.as_str())),
            Some(("AZUREML_MODEL_DIR", "/override"))
        );
    }

    #[test]
    fn code_is_mounted_under_the_app_root_with_its_entry_script() {
        let s =
            supervisor_spec(&spec("code_configuration:\n  code: model\n  scoring_script: score.py\n"), None);
        let code =
            s.mounts.iter().find(|m| m.container_path == "/var/azureml-app/model").expect("code mount");
        assert!(code.read_only && code.host_path.is_absolute());
        let env: Vec<(&str, &str)> = s.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert!(env.contains(&("AML_APP_ROOT", "/var/azureml-app/model")));
        assert!(env.contains(&("AZUREML_ENTRY_SCRIPT", "score.py")));
    }

    #[test]
    fn model_mount_path_replaces_the_root() {
        let s = supervisor_spec(&spec("model_mount_path: /models\n"), None);
        assert_eq!(s.mounts[0].container_path, "/models/model-1.json");
        assert_eq!(s.env[0].1, "/models");
    }
}
