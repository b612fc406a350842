//! The deployment YAML (`az ml online-deployment`, managed, custom container): model, code,
//! image and its routes, scale, request settings, probes, egress. Defaults are Azure ML's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{
    Access, Broken, Document, Text, check_mount_source, ensure, local_path, names, sku, string_or_struct,
    texts,
};
use crate::error::Error;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentFile {
    #[serde(rename = "$schema")]
    pub schema: Option<String>,
    pub name: Option<String>,
    pub endpoint_name: Option<String>,
    #[serde(default, deserialize_with = "string_or_struct")]
    pub model: Option<ModelFile>,
    pub model_mount_path: Option<String>,
    pub code_configuration: Option<CodeFile>,
    #[serde(default, deserialize_with = "string_or_struct")]
    pub environment: Option<EnvironmentFile>,
    pub environment_variables: Option<BTreeMap<String, Text>>,
    pub instance_type: Option<String>,
    pub instance_count: Option<u32>,
    pub request_settings: Option<RequestSettingsFile>,
    pub liveness_probe: Option<ProbeFile>,
    pub readiness_probe: Option<ProbeFile>,
    pub egress_public_network_access: Option<Access>,
    /// The preview spelling: `true` means egress disabled.
    pub private_network_connection: Option<bool>,
    pub description: Option<String>,
    pub tags: Option<BTreeMap<String, Text>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    pub name: Option<String>,
    pub version: Option<Text>,
    pub path: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub description: Option<String>,
}

impl From<String> for ModelFile {
    fn from(path: String) -> Self {
        ModelFile { path: Some(path), ..ModelFile::default() }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeFile {
    pub code: Option<String>,
    pub scoring_script: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentFile {
    pub name: Option<String>,
    pub version: Option<Text>,
    pub image: Option<String>,
    pub build: Option<BuildFile>,
    pub conda_file: Option<serde_json::Value>,
    pub inference_config: Option<InferenceConfigFile>,
    pub description: Option<String>,
    /// An `azureml:` reference written as a plain string.
    #[serde(skip)]
    pub reference: Option<String>,
}

impl From<String> for EnvironmentFile {
    fn from(reference: String) -> Self {
        EnvironmentFile { reference: Some(reference), ..EnvironmentFile::default() }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildFile {
    pub path: Option<String>,
    pub dockerfile_path: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceConfigFile {
    pub liveness_route: Option<RouteFile>,
    pub readiness_route: Option<RouteFile>,
    pub scoring_route: Option<RouteFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    pub port: Option<u16>,
    pub path: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSettingsFile {
    pub request_timeout_ms: Option<u64>,
    pub max_concurrent_requests_per_instance: Option<u32>,
    pub max_queue_wait_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeFile {
    pub initial_delay: Option<u32>,
    pub period: Option<u32>,
    pub timeout: Option<u32>,
    pub success_threshold: Option<u32>,
    pub failure_threshold: Option<u32>,
}

/// A validated deployment, every default filled in; `show` prints it in the file's shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentSpec {
    pub name: String,
    pub endpoint_name: String,
    pub model: Option<Model>,
    pub model_mount_path: Option<String>,
    pub code_configuration: Option<Code>,
    pub environment: Environment,
    pub environment_variables: BTreeMap<String, String>,
    pub instance_type: String,
    pub instance_count: u32,
    pub request_settings: RequestSettings,
    pub liveness_probe: Probe,
    pub readiness_probe: Probe,
    pub egress_public_network_access: Access,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Model {
    pub name: String,
    pub version: String,
    /// Absolute, resolved from the spec file's folder.
    pub path: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Code {
    pub code: PathBuf,
    pub scoring_script: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Environment {
    /// Written as `image: ...` or `build: {...}` beside `inference_config`, as Azure ML does.
    #[serde(flatten)]
    pub source: ImageSource,
    pub inference_config: InferenceConfig,
}

/// Where the containers' image comes from: a reference to pull, or a context to build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageSource {
    Image(String),
    Build(Build),
}

/// Azure ML's `environment.build`: a local folder and the Dockerfile in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Build {
    /// Absolute, resolved from the spec file's folder.
    pub path: PathBuf,
    /// Relative to `path`; Azure ML's default is `Dockerfile`.
    pub dockerfile_path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InferenceConfig {
    pub liveness_route: Route,
    pub readiness_route: Route,
    pub scoring_route: Route,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub port: u16,
    pub path: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestSettings {
    pub request_timeout_ms: u64,
    pub max_concurrent_requests_per_instance: u32,
    pub max_queue_wait_ms: u64,
}

/// Seconds, as Azure ML writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    pub initial_delay: u32,
    pub period: u32,
    pub timeout: u32,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl DeploymentSpec {
    pub fn id(&self) -> crate::state::DeploymentId {
        crate::state::DeploymentId::new(&self.endpoint_name, &self.name)
    }
}

pub const DEFAULT_PORT: u16 = 5001;
pub const MAX_REQUEST_TIMEOUT_MS: u64 = 180_000;
pub const MAX_INSTANCE_COUNT: u32 = 100;

/// Overrides from the command line: `--name` and `--endpoint-name` win over the file.
#[derive(Debug, Default, Clone, Copy)]
pub struct Names<'a> {
    pub name: Option<&'a str>,
    pub endpoint_name: Option<&'a str>,
}

pub fn validate(doc: &Document, flags: Names<'_>) -> Result<DeploymentSpec, Error> {
    let file: DeploymentFile = doc.decode()?;
    let pick = |flag: Option<&str>, field: Option<String>, what: &str, hint: &str| match (flag, field) {
        (Some(f), _) => Ok(f.to_string()),
        (None, Some(v)) => Ok(v),
        (None, None) => Err(Error::Invalid(doc.locate("", &format!("no {what}: give {hint}")))),
    };
    let name = pick(flags.name, file.name, "deployment name", "--name or set `name`")?;
    let endpoint_name = pick(
        flags.endpoint_name,
        file.endpoint_name,
        "endpoint name",
        "--endpoint-name or set `endpoint_name`",
    )?;

    let egress = match (file.egress_public_network_access, file.private_network_connection) {
        (Some(Access::Enabled), Some(true)) => {
            return Err(Error::Invalid(doc.locate(
                "private_network_connection",
                "private_network_connection: true contradicts egress_public_network_access: enabled",
            )));
        }
        (Some(access), _) => access,
        (None, Some(true)) => Access::Disabled,
        (None, _) => Access::Enabled,
    };

    let model = match file.model {
        None => None,
        Some(m) => {
            let Some(path) = m.path else {
                return Err(Error::Invalid(
                    doc.locate("model", "give the model's `path` (a file or a folder)"),
                ));
            };
            Some(Model {
                path: local_path(doc, "model.path", &path)?,
                name: m.name.unwrap_or_else(|| format!("{name}-model")),
                version: m.version.map_or_else(|| "1".to_string(), |v| v.0),
            })
        }
    };

    let code_configuration = match file.code_configuration {
        None => None,
        Some(c) => {
            let code = c
                .code
                .ok_or_else(|| Error::Invalid(doc.locate("code_configuration", "missing field `code`")))?;
            let script = c.scoring_script.ok_or_else(|| {
                Error::Invalid(doc.locate("code_configuration", "missing field `scoring_script`"))
            })?;
            Some(Code { code: local_path(doc, "code_configuration.code", &code)?, scoring_script: script })
        }
    };

    let env = file.environment.ok_or_else(|| {
        Error::Invalid(doc.locate("", "missing field `environment` (with `image` or `build`)"))
    })?;
    if let Some(reference) = env.reference {
        return Err(Error::Invalid(doc.locate(
            "environment",
            &format!(
                "{reference:?} is an Azure ML environment reference; moat needs `environment.image` or `environment.build`"
            ),
        )));
    }
    if env.conda_file.is_some() {
        return Err(Error::Invalid(doc.locate(
            "environment.conda_file",
            "conda_file is not supported: moat runs images; give environment.build a Dockerfile that installs it, or set environment.image",
        )));
    }
    let source = match (env.image, env.build) {
        (Some(image), None) => ImageSource::Image(image),
        (None, Some(build)) => {
            let path = build.path.ok_or_else(|| {
                Error::Invalid(
                    doc.locate("environment.build", "missing field `path` (the build context folder)"),
                )
            })?;
            ImageSource::Build(Build {
                path: local_path(doc, "environment.build.path", &path)?,
                dockerfile_path: build.dockerfile_path.unwrap_or_else(|| "Dockerfile".to_string()),
            })
        }
        (Some(_), Some(_)) => {
            return Err(Error::Invalid(doc.locate("environment", "give `image` or `build`, not both")));
        }
        (None, None) => {
            return Err(Error::Invalid(
                doc.locate("environment", "missing field `image` (or `build` with a context folder)"),
            ));
        }
    };
    let routes = env.inference_config;
    let route = |r: Option<&RouteFile>, default_path: &str| Route {
        port: r.and_then(|r| r.port).unwrap_or(DEFAULT_PORT),
        path: r.and_then(|r| r.path.clone()).unwrap_or_else(|| default_path.to_string()),
    };
    let inference_config = InferenceConfig {
        liveness_route: route(routes.as_ref().and_then(|r| r.liveness_route.as_ref()), "/"),
        readiness_route: route(routes.as_ref().and_then(|r| r.readiness_route.as_ref()), "/"),
        scoring_route: route(routes.as_ref().and_then(|r| r.scoring_route.as_ref()), "/score"),
    };

    let instance_type = file.instance_type.ok_or_else(|| {
        Error::Invalid(doc.locate("", "missing field `instance_type` (e.g. Standard_F2s_v2)"))
    })?;
    // The SKU's own spelling, whatever case the file used.
    let instance_type = sku::lookup(&instance_type).map(|s| s.name.to_string()).unwrap_or(instance_type);

    let rs = file.request_settings;
    let request_settings = RequestSettings {
        request_timeout_ms: rs.as_ref().and_then(|r| r.request_timeout_ms).unwrap_or(5000),
        max_concurrent_requests_per_instance: rs
            .as_ref()
            .and_then(|r| r.max_concurrent_requests_per_instance)
            .unwrap_or(1),
        max_queue_wait_ms: rs.as_ref().and_then(|r| r.max_queue_wait_ms).unwrap_or(500),
    };

    let spec = DeploymentSpec {
        liveness_probe: probe(file.liveness_probe.as_ref()),
        readiness_probe: probe(file.readiness_probe.as_ref()),
        name,
        endpoint_name,
        model,
        model_mount_path: file.model_mount_path,
        code_configuration,
        environment: Environment { source, inference_config },
        environment_variables: texts(file.environment_variables),
        instance_type,
        instance_count: file.instance_count.unwrap_or(1),
        request_settings,
        egress_public_network_access: egress,
        description: file.description,
        tags: texts(file.tags),
    };
    spec.check().map_err(|broken| broken.located(doc))?;
    Ok(spec)
}

fn probe(p: Option<&ProbeFile>) -> Probe {
    Probe {
        initial_delay: p.and_then(|p| p.initial_delay).unwrap_or(10),
        period: p.and_then(|p| p.period).unwrap_or(10),
        timeout: p.and_then(|p| p.timeout).unwrap_or(2),
        success_threshold: p.and_then(|p| p.success_threshold).unwrap_or(1),
        failure_threshold: p.and_then(|p| p.failure_threshold).unwrap_or(30),
    }
}

impl DeploymentSpec {
    /// Every rule a deployment spec must keep, whoever made it: `moat validate` and the CLI
    /// on a file, the daemon on whatever arrives on its socket.
    pub fn check(&self) -> Result<(), Broken> {
        let named = |field: &str, kind: &str, name: &str| {
            names::check(kind, name).map_err(|e| Broken { field: field.into(), message: e.to_string() })
        };
        named("name", "deployment", &self.name)?;
        named("endpoint_name", "endpoint", &self.endpoint_name)?;
        if let Some(model) = &self.model {
            check_mount_source("model.path", &model.path)?;
            for (field, part) in [("model.name", &model.name), ("model.version", &model.version)] {
                let plain = !part.is_empty() && !part.contains(['/', '\0']) && part != "." && part != "..";
                ensure(plain, field, "must be a plain name (it is a folder in the container)")?;
            }
        }
        if let Some(mount) = &self.model_mount_path {
            ensure(mount.starts_with('/'), "model_mount_path", "must be an absolute path in the container")?;
        }
        if let Some(code) = &self.code_configuration {
            check_mount_source("code_configuration.code", &code.code)?;
            ensure(code.code.is_dir(), "code_configuration.code", "must be a folder")?;
            ensure(!code.scoring_script.is_empty(), "code_configuration.scoring_script", "must name a file")?;
        }
        match &self.environment.source {
            ImageSource::Image(image) => ensure(
                !image.trim().is_empty() && !image.contains(char::is_whitespace),
                "environment.image",
                "must be an image reference like repo/img:v1",
            )?,
            ImageSource::Build(build) => {
                check_mount_source("environment.build.path", &build.path)?;
                ensure(
                    build.path.is_dir(),
                    "environment.build.path",
                    "must be a folder (the build context)",
                )?;
                let dockerfile = Path::new(&build.dockerfile_path);
                let inside = !build.dockerfile_path.is_empty()
                    && dockerfile.components().all(|c| matches!(c, std::path::Component::Normal(_)));
                ensure(
                    inside,
                    "environment.build.dockerfile_path",
                    "must be a path inside the build context, like Dockerfile or docker/Dockerfile",
                )?;
                ensure(
                    build.path.join(dockerfile).is_file(),
                    "environment.build.dockerfile_path",
                    format!("{} is not a file in {}", build.dockerfile_path, build.path.display()),
                )?;
            }
        }
        let routes = &self.environment.inference_config;
        for (field, r) in [
            ("liveness_route", &routes.liveness_route),
            ("readiness_route", &routes.readiness_route),
            ("scoring_route", &routes.scoring_route),
        ] {
            let at = format!("environment.inference_config.{field}");
            ensure(r.port != 0, &format!("{at}.port"), "must be 1-65535")?;
            ensure(r.path.starts_with('/'), &format!("{at}.path"), "must start with '/'")?;
        }
        for key in self.environment_variables.keys() {
            let ok = !key.is_empty() && !key.contains(['=', '\0']);
            ensure(ok, &format!("environment_variables.{key}"), "is not a valid variable name")?;
        }
        let known = sku::lookup(&self.instance_type)
            .map_err(|e| Broken { field: "instance_type".into(), message: e.to_string() })?;
        ensure(known.name == self.instance_type, "instance_type", format!("write it as {}", known.name))?;
        ensure(
            (1..=MAX_INSTANCE_COUNT).contains(&self.instance_count),
            "instance_count",
            format!("must be 1 to {MAX_INSTANCE_COUNT}"),
        )?;
        let rs = &self.request_settings;
        ensure(
            (1..=MAX_REQUEST_TIMEOUT_MS).contains(&rs.request_timeout_ms),
            "request_settings.request_timeout_ms",
            format!("must be 1 to {MAX_REQUEST_TIMEOUT_MS}"),
        )?;
        ensure(
            rs.max_concurrent_requests_per_instance >= 1,
            "request_settings.max_concurrent_requests_per_instance",
            "must be at least 1",
        )?;
        for (field, p) in
            [("liveness_probe", &self.liveness_probe), ("readiness_probe", &self.readiness_probe)]
        {
            for (name, value) in [
                ("period", p.period),
                ("timeout", p.timeout),
                ("success_threshold", p.success_threshold),
                ("failure_threshold", p.failure_threshold),
            ] {
                ensure(value >= 1, &format!("{field}.{name}"), "must be at least 1")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn examples() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/model-1")
    }

    fn parse(text: &str, sets: &[&str]) -> Result<DeploymentSpec, Error> {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        let doc = Document::parse(&examples().join("inline.yml"), text, &sets)?;
        validate(&doc, Names::default())
    }

    const MINIMAL: &str = "name: blue\nendpoint_name: my-ep\nmodel:\n  path: model/\nenvironment:\n  image: img:v1\ninstance_type: Standard_F2s_v2\n";

    #[test]
    fn defaults_are_azure_mls() {
        let d = parse(MINIMAL, &[]).expect("valid");
        assert_eq!(d.instance_count, 1);
        assert_eq!(
            d.request_settings,
            RequestSettings {
                request_timeout_ms: 5000,
                max_concurrent_requests_per_instance: 1,
                max_queue_wait_ms: 500
            }
        );
        assert_eq!(
            d.readiness_probe,
            Probe { initial_delay: 10, period: 10, timeout: 2, success_threshold: 1, failure_threshold: 30 }
        );
        assert_eq!(d.environment.inference_config.scoring_route, Route { port: 5001, path: "/score".into() });
        let model = d.model.expect("model");
        assert_eq!((model.name.as_str(), model.version.as_str()), ("blue-model", "1"));
        assert!(model.path.is_absolute() && model.path.ends_with("model"));
    }

    #[test]
    fn the_seeds_set_words_work() {
        let d = parse(MINIMAL, &["environment.image=other:v2", "instance_count=2"]).expect("valid");
        assert_eq!((&d.environment.source, d.instance_count), (&ImageSource::Image("other:v2".into()), 2));
        let d = parse(MINIMAL, &["private_network_connection=true"]).expect("the preview spelling");
        assert_eq!(d.egress_public_network_access, Access::Disabled);
    }

    #[test]
    fn no_mount_may_show_a_container_the_system_folders_or_the_docker_socket() {
        for path in ["/", "/etc", "/root", "/proc/self", "/var", "/run", "/var/run/docker.sock"] {
            if !Path::new(path).exists() {
                continue;
            }
            let e = parse(MINIMAL, &[&format!("model.path={path}")]).unwrap_err().to_string();
            assert!(e.contains("model.path") && e.contains("no container may see"), "{path}: {e}");
        }
        let code = ["code_configuration.code=/etc", "code_configuration.scoring_script=score.py"];
        let e = parse(MINIMAL, &code).unwrap_err().to_string();
        assert!(e.contains("code_configuration.code") && e.contains("system folder /etc"), "{e}");
    }

    #[test]
    fn what_moat_cannot_run_is_refused_with_the_reason() {
        let cases = [
            ("model: azureml:my-model:1", "asset reference"),
            ("environment: azureml:my-env:1", "environment reference"),
            ("environment:\n  image: x\n  conda_file: env.yml", "conda_file is not supported"),
            ("model:\n  path: no-such-folder/", "no-such-folder"),
            ("instance_type: Standard_Huge", "not a known SKU"),
            ("instance_count: 0", "must be 1 to 100"),
            ("request_settings:\n  request_timeout_ms: 180001", "must be 1 to 180000"),
        ];
        for (overlay, expected) in cases {
            // Drop the minimal spec's lines that the overlay replaces.
            let key = overlay.split(':').next().expect("key");
            let replaced = |l: &str| {
                l.starts_with(key)
                    || (key == "model" && l.starts_with("  path"))
                    || (key == "environment" && l.starts_with("  image"))
            };
            let kept: String = MINIMAL.lines().filter(|l| !replaced(l)).map(|l| format!("{l}\n")).collect();
            let text = kept + overlay + "\n";
            let e = parse(&text, &[]).unwrap_err().to_string();
            assert!(e.contains(expected), "{overlay}: {e}");
        }
    }

    const BUILT: &str = "name: green\nendpoint_name: my-ep\nenvironment:\n  build:\n    path: environment/\ninstance_type: Standard_F2s_v2\n";

    #[test]
    fn an_image_built_from_a_context_resolves_like_a_model_path_and_shows_as_written() {
        let d = parse(BUILT, &[]).expect("valid");
        let ImageSource::Build(build) = &d.environment.source else { panic!("a build: {d:?}") };
        assert_eq!(build.path, examples().join("environment").canonicalize().expect("the example context"));
        assert_eq!(build.dockerfile_path, "Dockerfile", "Azure ML's default");
        // As show prints it, and back.
        let shown = serde_json::to_value(&d).expect("json");
        assert_eq!(shown["environment"]["build"]["dockerfile_path"], "Dockerfile");
        assert!(shown["environment"].get("image").is_none(), "{shown}");
        assert_eq!(serde_json::from_value::<DeploymentSpec>(shown).expect("read back"), d);
        let pulled = serde_json::to_value(parse(MINIMAL, &[]).expect("valid")).expect("json");
        assert_eq!(pulled["environment"]["image"], "img:v1");
    }

    #[test]
    fn a_build_context_is_checked_like_a_mount_and_its_dockerfile_must_be_inside() {
        let cases: [(&[&str], &str); 6] = [
            (&["environment.image=img:v1"], "give `image` or `build`, not both"),
            (
                &["environment.build.dockerfile_path=../blue-deployment.yml"],
                "must be a path inside the build context",
            ),
            (&["environment.build.dockerfile_path=/etc/passwd"], "must be a path inside the build context"),
            (&["environment.build.dockerfile_path=Dockerfile.gpu"], "Dockerfile.gpu is not a file in"),
            (&["environment.build.path=/etc"], "no container may see"),
            (&["environment.build.path=../model-1/model/model-1.json"], "must be a folder"),
        ];
        for (sets, expected) in cases {
            let e = parse(BUILT, sets).expect_err("refused").to_string();
            assert!(e.contains(expected), "{sets:?}: {e}");
        }
        let e = parse(&BUILT.replace("    path: environment/\n", "    dockerfile_path: Dockerfile\n"), &[])
            .expect_err("no path")
            .to_string();
        assert!(e.contains("missing field `path`"), "{e}");
        let e = parse(&BUILT.replace("  build:\n    path: environment/\n", "  name: bare\n"), &[])
            .expect_err("neither")
            .to_string();
        assert!(e.contains("missing field `image` (or `build`"), "{e}");
    }
}
