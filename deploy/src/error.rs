//! deploy's errors: each knows its exit code (2: the command line or a file could not be
//! parsed; 3: the named resource does not exist, as az exits for it; 1: everything else) and
//! its admin API status.

use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A flag, a `--set` word or a file that could not be parsed.
    #[error("{0}")]
    Parse(String),
    /// A rule refused it (bad name, out of range, not supported yet, unsupported pair).
    #[error("{0}")]
    Invalid(String),
    /// The resource the command names does not exist (exit 3, so "show, else create" scripts
    /// written for az work unchanged).
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A create or update that ended Failed; `logs` are the container's last lines.
    #[error("{message}")]
    Failed { message: String, logs: String },
    #[error("moat serve is not running (admin socket {})", .0.display())]
    DaemonDown(PathBuf),
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Parse(_) => 2,
            Error::NotFound(_) => 3,
            _ => 1,
        }
    }

    pub fn other(context: &str, e: impl std::fmt::Display) -> Error {
        Error::Other(format!("{context}: {e}"))
    }
}
