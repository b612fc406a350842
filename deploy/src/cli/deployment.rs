//! `moat online-deployment ...`

use std::path::PathBuf;

use clap::Subcommand;
use hyper::Method;

use super::{Context, SetArgs, confirm, document};
use crate::admin::CreateDeployment;
use crate::error::Error;
use crate::spec::deployment::{self, Names};

#[derive(Debug, Clone, clap::Args)]
pub struct EndpointArg {
    /// The endpoint the deployment belongs to
    #[arg(short = 'e', long = "endpoint-name", visible_alias = "endpoint")]
    pub endpoint_name: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum DeploymentCommand {
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
    Show {
        #[arg(short = 'n', long)]
        name: String,
        #[command(flatten)]
        endpoint: EndpointArg,
    },
    List {
        #[command(flatten)]
        endpoint: EndpointArg,
    },
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
    GetLogs {
        #[arg(short = 'n', long)]
        name: String,
        #[command(flatten)]
        endpoint: EndpointArg,
        #[arg(long, default_value_t = 5000)]
        lines: usize,
        #[arg(long)]
        instance: Option<String>,
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
            let doc = document(file.as_deref(), &set)?;
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
            match admin.send(Method::POST, &path, &body).await {
                Ok(view) => ctx.print(view),
                Err(Error::Failed { message, logs }) => {
                    if !logs.trim().is_empty() {
                        eprintln!("The container's last log lines:\n{}", logs.trim_end());
                    }
                    Err(Error::Failed { message, logs: String::new() })
                }
                Err(e) => Err(e),
            }
        }
        DeploymentCommand::Show { name, endpoint } => ctx.print(
            admin.get(&format!("/v1/endpoints/{}/deployments/{name}", endpoint_of(&endpoint)?)).await?,
        ),
        DeploymentCommand::List { endpoint } => {
            ctx.print(admin.get(&format!("/v1/endpoints/{}/deployments", endpoint_of(&endpoint)?)).await?)
        }
        DeploymentCommand::Update { .. } => {
            Err(Error::Invalid("online-deployment update is not supported yet".into()))
        }
        DeploymentCommand::Delete { name, endpoint, yes, no_wait } => {
            let endpoint = endpoint_of(&endpoint)?;
            confirm(&format!("Delete deployment {name} of endpoint {endpoint}?"), yes)?;
            let query = if no_wait { "?no_wait=true" } else { "" };
            admin.delete(&format!("/v1/endpoints/{endpoint}/deployments/{name}{query}")).await.map(drop)
        }
        DeploymentCommand::GetLogs { .. } => {
            Err(Error::Invalid("online-deployment get-logs is not supported yet".into()))
        }
    }
}
