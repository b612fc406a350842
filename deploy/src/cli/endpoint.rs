//! `moat online-endpoint ...`

use std::path::PathBuf;

use clap::Subcommand;
use hyper::Method;
use serde_json::Value;

use super::{Context, SetArgs, confirm, document, with_retries, without_read_only};
use crate::admin::KeyType;
use crate::admin::RegenerateKeys;
use crate::error::Error;
use crate::spec::read_only::Resource;
use crate::spec::{Document, endpoint};

#[derive(Debug, Subcommand)]
pub enum EndpointCommand {
    /// Create an endpoint (new primary and secondary keys)
    Create {
        #[arg(short = 'n', long)]
        name: Option<String>,
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: Option<PathBuf>,
        #[command(flatten)]
        set: SetArgs,
        /// How clients authenticate (the file's auth_mode, replaced)
        #[arg(long = "auth-mode", value_name = "MODE", value_parser = ["key", "aml_token", "aad_token"])]
        auth_mode: Option<String>,
        #[arg(long = "no-wait")]
        no_wait: bool,
    },
    /// Show an endpoint with its scoring_uri and traffic
    Show {
        #[arg(short = 'n', long)]
        name: String,
    },
    /// List the endpoints
    List,
    /// Change an endpoint: traffic, mirror traffic, access, description, tags
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
        /// Allow a principal to score an aad_token endpoint: object_id=ID, app_id=ID or role=NAME
        #[arg(long = "add-principal", value_name = "KIND=ID")]
        add_principal: Vec<String>,
        /// Take a principal's permission away again
        #[arg(long = "remove-principal", value_name = "KIND=ID")]
        remove_principal: Vec<String>,
        #[arg(long = "no-wait")]
        no_wait: bool,
    },
    /// Delete an endpoint and its deployments
    Delete {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'y', long)]
        yes: bool,
        #[arg(long = "no-wait")]
        no_wait: bool,
    },
    /// Print the keys (key auth) or a token (aml_token auth)
    GetCredentials {
        #[arg(short = 'n', long)]
        name: String,
    },
    /// Replace the primary or the secondary key
    RegenerateKeys {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(long = "key-type", value_enum, default_value = "primary")]
        key_type: KeyTypeArg,
        #[arg(long = "key-value")]
        key_value: Option<String>,
        /// Accepted as az's: the new key takes effect before the command returns anyway
        #[arg(long = "no-wait")]
        no_wait: bool,
    },
    /// Score as any client would: POST the request file to scoring_uri
    Invoke {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'r', long = "request-file", value_name = "FILE")]
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
        EndpointCommand::Create { name, file, mut set, auth_mode, no_wait: _ } => {
            set.set.extend(auth_mode.map(|mode| format!("auth_mode={mode}")));
            let doc = without_read_only(document(file.as_deref(), &set)?, Resource::Endpoint)?;
            let spec = endpoint::validate(&doc, name.as_deref())?;
            ctx.print(admin.send(Method::POST, "/v1/endpoints", &spec).await?)
        }
        EndpointCommand::Show { name } => ctx.print(admin.get(&format!("/v1/endpoints/{name}")).await?),
        EndpointCommand::List => ctx.print(admin.get("/v1/endpoints").await?),
        EndpointCommand::Update {
            name,
            file,
            set,
            traffic,
            mirror_traffic,
            add_principal,
            remove_principal,
            no_wait: _,
        } => {
            let update = || async {
                let (mut doc, revision) = match &file {
                    Some(f) => (Document::load(f, &set.set)?, None),
                    None => {
                        // The current spec with the changes on top.
                        let Some(name) = &name else {
                            return Err(Error::Parse("without -f, give --name".into()));
                        };
                        let (current, revision) = admin.get_at(&format!("/v1/endpoints/{name}")).await?;
                        (Document::from_value(spec_fields(current), &set.set)?, revision)
                    }
                };
                if let Some(words) = &traffic {
                    doc.value["traffic"] = shares("--traffic", words)?;
                }
                if let Some(words) = &mirror_traffic {
                    doc.value["mirror_traffic"] = shares("--mirror-traffic", words)?;
                }
                for (flag, words, add) in [
                    ("--add-principal", &add_principal, true),
                    ("--remove-principal", &remove_principal, false),
                ] {
                    for word in words {
                        change_principal(&mut doc.value, flag, word, add)?;
                    }
                }
                let doc = without_read_only(doc, Resource::Endpoint)?;
                let spec = endpoint::validate(&doc, name.as_deref())?;
                admin
                    .expecting(revision)
                    .send(Method::PUT, &format!("/v1/endpoints/{}", spec.name), &spec)
                    .await
            };
            ctx.print(with_retries(update).await?)
        }
        EndpointCommand::Delete { name, yes, no_wait } => {
            confirm(&format!("Delete endpoint {name} and all its deployments?"), yes)?;
            let query = if no_wait { "?no_wait=true" } else { "" };
            admin.delete(&format!("/v1/endpoints/{name}{query}")).await.map(drop)
        }
        EndpointCommand::GetCredentials { name } => {
            ctx.print(admin.get(&format!("/v1/endpoints/{name}/credentials")).await?)
        }
        EndpointCommand::RegenerateKeys { name, key_type, key_value, no_wait: _ } => {
            let key_type = match key_type {
                KeyTypeArg::Primary => KeyType::Primary,
                KeyTypeArg::Secondary => KeyType::Secondary,
            };
            let body = RegenerateKeys { key_type, key_value };
            let path = format!("/v1/endpoints/{name}/regenerate-keys");
            // Nothing is written when it loses a race: trying again is safe.
            with_retries(|| admin.send(Method::POST, &path, &body)).await.map(drop)
        }
        EndpointCommand::Invoke { name, request_file, deployment_name } => {
            super::invoke::invoke(ctx, &name, &request_file, deployment_name.as_deref()).await
        }
    }
}

/// `"blue=90 green=10"` (spaces or commas between words) as a map of percentages.
fn shares(flag: &str, words: &str) -> Result<Value, Error> {
    let mut map = serde_json::Map::new();
    for word in words.split([' ', ',']).filter(|w| !w.is_empty()) {
        let parsed = word.split_once('=').and_then(|(name, p)| Some((name, p.trim().parse::<u32>().ok()?)));
        let Some((name, percent)) = parsed else {
            return Err(Error::Parse(format!("{flag} {word}: expected DEPLOYMENT=PERCENT, e.g. blue=90")));
        };
        map.insert(name.to_string(), Value::from(percent));
    }
    Ok(Value::Object(map))
}

/// Adds `kind=id` to the endpoint's allowed principals, or takes it out.
fn change_principal(spec: &mut Value, flag: &str, word: &str, add: bool) -> Result<(), Error> {
    let parsed =
        word.split_once('=').and_then(|(kind, id)| Some((endpoint::AllowedPrincipals::field(kind)?, id)));
    let Some((field, id)) = parsed.filter(|(_, id)| !id.is_empty()) else {
        return Err(Error::Parse(format!("{flag} {word}: expected object_id=ID, app_id=ID or role=NAME")));
    };
    if !spec["allowed_principals"].is_object() {
        spec["allowed_principals"] = Value::Object(serde_json::Map::new());
    }
    let list = &mut spec["allowed_principals"][field];
    let mut ids: Vec<Value> = list.as_array().cloned().unwrap_or_default();
    let same = |v: &Value| {
        v.as_str().is_some_and(|v| if field == "roles" { v == id } else { v.eq_ignore_ascii_case(id) })
    };
    let present = ids.iter().any(same);
    if add && !present {
        ids.push(Value::from(id));
    } else if !add {
        ids.retain(|v| !same(v));
    }
    *list = Value::Array(ids);
    Ok(())
}

/// The spec part of what `show` prints.
fn spec_fields(mut view: Value) -> Value {
    if let Value::Object(map) = &mut view {
        for observed in ["scoring_uri", "swagger_uri", "openapi_uri", "provisioning_state"] {
            map.remove(observed);
        }
    }
    view
}
