//! The admin API: JSON over HTTP on the home's Unix socket (`admin.sock`, mode 0600).
//! [`server`] is the daemon's side, [`client`] the CLI's. Errors travel as
//! `{"kind", "message", "logs"}` and become the same [`Error`] on the other side.

pub mod client;
pub mod server;

use serde::{Deserialize, Serialize};

use crate::error::Error;

#[derive(Debug, Serialize, Deserialize)]
pub struct WireError {
    pub kind: String,
    pub message: String,
    #[serde(default)]
    pub logs: String,
}

impl From<&Error> for WireError {
    fn from(e: &Error) -> Self {
        let (kind, logs) = match e {
            Error::Parse(_) => ("parse", String::new()),
            Error::Invalid(_) => ("invalid", String::new()),
            Error::NotFound(_) => ("not_found", String::new()),
            Error::Conflict(_) => ("conflict", String::new()),
            Error::Failed { logs, .. } => ("failed", logs.clone()),
            Error::DaemonDown(_) | Error::Other(_) => ("other", String::new()),
        };
        let message = match e {
            Error::Failed { message, .. } => message.clone(),
            other => other.to_string(),
        };
        WireError { kind: kind.into(), message, logs }
    }
}

impl From<WireError> for Error {
    fn from(w: WireError) -> Self {
        match w.kind.as_str() {
            "parse" => Error::Parse(w.message),
            "invalid" => Error::Invalid(w.message),
            "not_found" => Error::NotFound(w.message),
            "conflict" => Error::Conflict(w.message),
            "failed" => Error::Failed { message: w.message, logs: w.logs },
            _ => Error::Other(w.message),
        }
    }
}

/// One line of a streamed answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamLine {
    Progress(String),
    Result(serde_json::Value),
    Error(WireError),
}

/// The body of a deployment create.
#[derive(Debug, Serialize, Deserialize)]
pub struct CreateDeployment {
    pub spec: crate::spec::deployment::DeploymentSpec,
    pub all_traffic: bool,
    pub wait: bool,
}

/// The body of a deployment update.
#[derive(Debug, Serialize, Deserialize)]
pub struct UpdateDeployment {
    pub spec: crate::spec::deployment::DeploymentSpec,
    pub wait: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RegenerateKeys {
    pub key_type: crate::node::KeyType,
    pub key_value: Option<String>,
}
