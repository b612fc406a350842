//! `moat online-endpoint ...`

use std::path::PathBuf;

use clap::Subcommand;
use hyper::Method;

use super::{Context, SetArgs, confirm, document};
use crate::admin::RegenerateKeys;
use crate::error::Error;
use crate::node::KeyType;
use crate::spec::endpoint;

#[derive(Debug, Subcommand)]
pub enum EndpointCommand {
    Create {
        #[arg(short = 'n', long)]
        name: Option<String>,
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: Option<PathBuf>,
        #[command(flatten)]
        set: SetArgs,
        #[arg(long = "no-wait")]
        no_wait: bool,
    },
    Show {
        #[arg(short = 'n', long)]
        name: String,
    },
    List,
    Update {
        #[arg(short = 'n', long)]
        name: Option<String>,
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: Option<PathBuf>,
        #[command(flatten)]
        set: SetArgs,
        #[arg(long)]
        traffic: Option<String>,
        #[arg(long = "mirror-traffic")]
        mirror_traffic: Option<String>,
        #[arg(long = "no-wait")]
        no_wait: bool,
    },
    Delete {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'y', long)]
        yes: bool,
        #[arg(long = "no-wait")]
        no_wait: bool,
    },
    GetCredentials {
        #[arg(short = 'n', long)]
        name: String,
    },
    RegenerateKeys {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(long = "key-type", value_enum, default_value = "primary")]
        key_type: KeyTypeArg,
        #[arg(long = "key-value")]
        key_value: Option<String>,
    },
    /// Score as any client would: POST the request file to scoring_uri
    Invoke {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(long = "request-file", value_name = "FILE")]
        request_file: PathBuf,
        #[arg(long = "deployment-name", short = 'd')]
        deployment_name: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum KeyTypeArg {
    Primary,
    Secondary,
}

pub async fn run(ctx: &Context, command: EndpointCommand) -> Result<(), Error> {
    let admin = ctx.admin();
    match command {
        EndpointCommand::Create { name, file, set, no_wait: _ } => {
            let spec = endpoint::validate(&document(file.as_deref(), &set)?, name.as_deref())?;
            ctx.print(admin.send(Method::POST, "/v1/endpoints", &spec).await?)
        }
        EndpointCommand::Show { name } => ctx.print(admin.get(&format!("/v1/endpoints/{name}")).await?),
        EndpointCommand::List => ctx.print(admin.get("/v1/endpoints").await?),
        EndpointCommand::Update { .. } => {
            Err(Error::Invalid("online-endpoint update is not supported yet".into()))
        }
        EndpointCommand::Delete { name, yes, no_wait } => {
            confirm(&format!("Delete endpoint {name} and all its deployments?"), yes)?;
            let query = if no_wait { "?no_wait=true" } else { "" };
            admin.delete(&format!("/v1/endpoints/{name}{query}")).await.map(drop)
        }
        EndpointCommand::GetCredentials { name } => {
            ctx.print(admin.get(&format!("/v1/endpoints/{name}/credentials")).await?)
        }
        EndpointCommand::RegenerateKeys { name, key_type, key_value } => {
            let key_type = match key_type {
                KeyTypeArg::Primary => KeyType::Primary,
                KeyTypeArg::Secondary => KeyType::Secondary,
            };
            let body = RegenerateKeys { key_type, key_value };
            admin.send(Method::POST, &format!("/v1/endpoints/{name}/regenerate-keys"), &body).await.map(drop)
        }
        EndpointCommand::Invoke { name, request_file, deployment_name } => {
            super::invoke::invoke(ctx, &name, &request_file, deployment_name.as_deref()).await
        }
    }
}
