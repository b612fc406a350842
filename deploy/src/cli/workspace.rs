//! `moat workspace create|show|update`.

use std::path::PathBuf;

use clap::Subcommand;
use hyper::Method;

use super::{Context, SetArgs, document, with_retries};
use crate::error::Error;
use crate::spec::workspace::{self, WorkspaceSpec};
use crate::spec::{Access, Document};

#[derive(Debug, Subcommand)]
pub enum WorkspaceCommand {
    /// Replace the default workspace (only while it has no endpoints)
    Create {
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
        #[command(flatten)]
        set: SetArgs,
    },
    /// Show the workspace and its private endpoints
    Show,
    /// Replace or change the workspace spec
    Update {
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: Option<PathBuf>,
        #[command(flatten)]
        set: SetArgs,
        #[arg(long = "public-network-access", value_enum)]
        public_network_access: Option<AccessArg>,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum AccessArg {
    Enabled,
    Disabled,
}

pub async fn run(ctx: &Context, command: WorkspaceCommand) -> Result<(), Error> {
    let admin = ctx.admin();
    match command {
        WorkspaceCommand::Show => ctx.print(admin.get("/v1/workspace").await?),
        WorkspaceCommand::Create { file, set } => {
            let spec = workspace::validate(&document(Some(&file), &set)?)?;
            print_update(ctx, admin.send(Method::PUT, "/v1/workspace?create=true", &spec).await?)
        }
        WorkspaceCommand::Update { file, set, public_network_access } => {
            let update = || async {
                let (mut doc, revision) = match &file {
                    Some(f) => (Document::load(f, &set.set)?, None),
                    None => {
                        // Changes apply on top of the current spec.
                        let (current, revision) = admin.get_at("/v1/workspace").await?;
                        let current: WorkspaceSpec = serde_json::from_value(current)
                            .map_err(|e| Error::other("decoding the workspace", e))?;
                        let mut doc = Document::from_sets(&[])?;
                        doc.value =
                            serde_json::to_value(&current).map_err(|e| Error::other("encoding", e))?;
                        let mut with_sets = Document::from_sets(&set.set)?;
                        merge(&mut doc.value, std::mem::take(&mut with_sets.value));
                        with_sets.value = doc.value;
                        (with_sets, revision)
                    }
                };
                if let Some(access) = public_network_access {
                    let value = match access {
                        AccessArg::Enabled => Access::Enabled,
                        AccessArg::Disabled => Access::Disabled,
                    };
                    doc.value["public_network_access"] = serde_json::json!(value);
                }
                let spec = workspace::validate(&doc)?;
                admin.expecting(revision).send(Method::PUT, "/v1/workspace", &spec).await
            };
            print_update(ctx, with_retries(update).await?)
        }
    }
}

/// The workspace on stdout, what the operator should know on stderr.
fn print_update(ctx: &Context, update: serde_json::Value) -> Result<(), Error> {
    for warning in update["warnings"].as_array().into_iter().flatten() {
        eprintln!("warning: {}", warning.as_str().unwrap_or_default());
    }
    ctx.print(update["workspace"].clone())
}

/// Overlays `top` on `base`, mapping by mapping.
pub fn merge(base: &mut serde_json::Value, top: serde_json::Value) {
    match (base, top) {
        (serde_json::Value::Object(b), serde_json::Value::Object(t)) => {
            for (k, v) in t {
                merge(b.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (b, t) => *b = t,
    }
}
