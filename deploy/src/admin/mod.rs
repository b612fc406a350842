//! The admin API: JSON over HTTP on the home's Unix socket (`admin.sock`, mode 0600).
//! [`server`] is the daemon's side, [`client`] the CLI's; this module holds what travels
//! between them. Errors travel as `{"kind", "message", "logs"}` and become the same
//! [`Error`] on the other side.

pub mod client;
pub mod server;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Seconds since the answering node last heard from etcd, when its copy may be stale.
pub const STALE_HEADER: &str = "x-moat-stale-s";
/// The store revision of the record `show` answered with.
pub const REVISION_HEADER: &str = "x-moat-revision";
/// On an update: the revision of the record the change was made to; refused if it moved.
pub const EXPECT_REVISION_HEADER: &str = "x-moat-expect-revision";
/// What a refused update's message says when the record moved since it was read (the CLI
/// then reads it again and re-applies its change).
pub const MOVED: &str = "was changed by another command since this update read it";
/// What a commit's message says when its compare-and-set lost to another command: nothing
/// was written, so the same change can be tried again.
pub const RACED: &str = "another command changed the same resources at the same time";

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
    pub key_type: KeyType,
    pub key_value: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    Primary,
    Secondary,
}

/// A workspace change and what the operator should know about it.
#[derive(Debug, Serialize, Deserialize)]
pub struct WorkspaceUpdate {
    pub workspace: crate::spec::workspace::WorkspaceSpec,
    pub warnings: Vec<String>,
}

/// What `get-credentials` prints: the keys, or an aml token with its times (epoch seconds).
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Credentials {
    Keys {
        #[serde(rename = "primaryKey")]
        primary_key: String,
        #[serde(rename = "secondaryKey")]
        secondary_key: String,
    },
    Token {
        #[serde(rename = "accessToken")]
        access_token: String,
        #[serde(rename = "expiryTimeUtc")]
        expiry_time_utc: u64,
        #[serde(rename = "refreshAfterTimeUtc")]
        refresh_after_time_utc: u64,
        #[serde(rename = "tokenType")]
        token_type: String,
    },
}
