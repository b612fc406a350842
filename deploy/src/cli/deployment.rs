//! `moat online-deployment ...`

use std::path::PathBuf;

use clap::Subcommand;
use hyper::Method;

use super::{Context, SetArgs, confirm, document, with_retries, without_read_only};
use std::io::Write;

use serde_json::Value;

use crate::admin::{CreateDeployment, UpdateDeployment};
use crate::error::Error;
use crate::spec::Document;
use crate::spec::deployment::{self, Names};
use crate::spec::read_only::Resource;

#[derive(Debug, Clone, clap::Args)]
pub struct EndpointArg {
    /// The endpoint the deployment belongs to
    #[arg(short = 'e', long = "endpoint-name", visible_alias = "endpoint")]
    pub endpoint_name: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum DeploymentCommand {
    /// Create a deployment and wait until its instances are ready
    Create {
        #[arg(short = 'n', long)]
        name: Option<String>,
        #[command(flatten)]
        endpoint: EndpointArg,
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: Option<PathBuf>,
        #[command(flatten)]
        set: SetArgs,
        /// Send all live traffic to this deployment once it is up
        #[arg(long = "all-traffic")]
        all_traffic: bool,
        #[arg(long = "no-wait")]
        no_wait: bool,
    },
    /// Show a deployment: spec, state, instances, egress
    Show {
        #[arg(short = 'n', long)]
        name: String,
        #[command(flatten)]
        endpoint: EndpointArg,
    },
    /// List the deployments of an endpoint
    List {
        #[command(flatten)]
        endpoint: EndpointArg,
    },
    /// Change a deployment (a rolling update of its instances)
    Update {
        #[arg(short = 'n', long)]
        name: Option<String>,
        #[command(flatten)]
        endpoint: EndpointArg,
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: Option<PathBuf>,
        #[command(flatten)]
        set: SetArgs,
        #[arg(long = "no-wait")]
        no_wait: bool,
    },
    /// Delete a deployment and its containers
    Delete {
        #[arg(short = 'n', long)]
        name: String,
        #[command(flatten)]
        endpoint: EndpointArg,
        #[arg(short = 'y', long)]
        yes: bool,
        #[arg(long = "no-wait")]
        no_wait: bool,
    },
    /// Print the last log lines of a deployment's container
    GetLogs {
        #[arg(short = 'n', long)]
        name: String,
        #[command(flatten)]
        endpoint: EndpointArg,
        #[arg(short = 'l', long, default_value_t = 5000)]
        lines: usize,
        #[arg(long)]
        instance: Option<String>,
        /// Whose log: the scoring container's (inference-server, the default) or moat's own of
        /// the image pull or build and the mounts (storage-initializer)
        #[arg(long = "container-type", value_name = "TYPE", value_parser = ["inference-server", "storage-initializer"])]
        container_type: Option<String>,
    },
}

fn endpoint_of(arg: &EndpointArg) -> Result<&str, Error> {
    arg.endpoint_name
        .as_deref()
        .ok_or_else(|| Error::Parse("give the endpoint with --endpoint-name (-e)".into()))
}

pub async fn run(ctx: &Context, command: DeploymentCommand) -> Result<(), Error> {
    let admin = ctx.admin();
    match command {
        DeploymentCommand::Create { name, endpoint, file, set, all_traffic, no_wait } => {
            let doc = without_read_only(document(file.as_deref(), &set)?, Resource::Deployment)?;
            let names = Names { name: name.as_deref(), endpoint_name: endpoint.endpoint_name.as_deref() };
            let spec = deployment::validate(&doc, names)?;
            let path = format!("/v1/endpoints/{}/deployments", spec.endpoint_name);
            if !no_wait && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                eprintln!(
                    "Creating deployment {} on endpoint {}; waiting until its instances are ready...",
                    spec.name, spec.endpoint_name
                );
            }
            let body = CreateDeployment { spec, all_traffic, wait: !no_wait };
            ctx.print(with_logs(admin.send_streamed(Method::POST, &path, &body, progress).await)?)
        }
        DeploymentCommand::Show { name, endpoint } => ctx.print(
            admin.get(&format!("/v1/endpoints/{}/deployments/{name}", endpoint_of(&endpoint)?)).await?,
        ),
        DeploymentCommand::List { endpoint } => {
            ctx.print(admin.get(&format!("/v1/endpoints/{}/deployments", endpoint_of(&endpoint)?)).await?)
        }
        DeploymentCommand::Update { name, endpoint, file, set, no_wait } => {
            let update = || async {
                let (doc, revision) = match &file {
                    Some(f) => (Document::load(f, &set.set)?, None),
                    None => {
                        // The current spec with the `--set` words on top.
                        let (Some(name), Some(endpoint)) = (&name, &endpoint.endpoint_name) else {
                            return Err(Error::Parse("without -f, give --name and --endpoint-name".into()));
                        };
                        let (current, revision) =
                            admin.get_at(&format!("/v1/endpoints/{endpoint}/deployments/{name}")).await?;
                        (Document::from_value(spec_fields(current), &set.set)?, revision)
                    }
                };
                let doc = without_read_only(doc, Resource::Deployment)?;
                let names = Names { name: name.as_deref(), endpoint_name: endpoint.endpoint_name.as_deref() };
                let spec = deployment::validate(&doc, names)?;
                if !no_wait && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                    eprintln!("Updating deployment {}: rolling its instances to the new spec...", spec.name);
                }
                let path = format!("/v1/endpoints/{}/deployments/{}", spec.endpoint_name, spec.name);
                let body = UpdateDeployment { spec, wait: !no_wait };
                with_logs(admin.expecting(revision).send_streamed(Method::PUT, &path, &body, progress).await)
            };
            ctx.print(with_retries(update).await?)
        }
        DeploymentCommand::Delete { name, endpoint, yes, no_wait } => {
            let endpoint = endpoint_of(&endpoint)?;
            confirm(&format!("Delete deployment {name} of endpoint {endpoint}?"), yes)?;
            let query = if no_wait { "?no_wait=true" } else { "" };
            admin.delete(&format!("/v1/endpoints/{endpoint}/deployments/{name}{query}")).await.map(drop)
        }
        DeploymentCommand::GetLogs { name, endpoint, lines, instance, container_type } => {
            let mut path =
                format!("/v1/endpoints/{}/deployments/{name}/logs?lines={lines}", endpoint_of(&endpoint)?);
            if container_type.as_deref() == Some("storage-initializer") {
                if instance.is_some() {
                    return Err(Error::Parse(
                        "--instance names a scoring container; the storage-initializer log is the deployment's"
                            .into(),
                    ));
                }
                path.push_str("&container_type=storage-initializer");
            }
            if let Some(instance) = instance {
                path.push_str(&format!("&instance={instance}"));
            }
            let text = admin.get_text(&path).await?;
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(text.as_bytes())
                .and_then(|_| stdout.flush())
                .map_err(|e| Error::other("writing output", e))
        }
    }
}

/// Progress of a long command (an image pull) goes to stderr as it comes.
fn progress(line: &str) {
    eprintln!("{line}");
}

/// A create or update that ended Failed shows the last log lines of what failed (the
/// container, or the image build) on stderr.
fn with_logs(result: Result<Value, Error>) -> Result<Value, Error> {
    match result {
        Err(Error::Failed { message, logs }) => {
            if !logs.trim().is_empty() {
                let whose = if message.contains("cannot build image") { "build's" } else { "container's" };
                eprintln!("The {whose} last log lines:\n{}", logs.trim_end());
            }
            Err(Error::Failed { message, logs: String::new() })
        }
        other => other,
    }
}

/// The spec part of what `show` prints.
fn spec_fields(mut view: Value) -> Value {
    if let Value::Object(map) = &mut view {
        for observed in ["provisioning_state", "health", "instances", "egress", "warnings", "nodes"] {
            map.remove(observed);
        }
    }
    view
}
