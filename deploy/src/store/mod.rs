//! The desired state's store: a key-value map with revisions, behind the narrow interface
//! both the embedded file and an etcd cluster honour: reads of a local copy (get, range), a
//! compare-and-set of several keys at once, and a watch of the revision.
//!
//! - [`file`]: the embedded default, one JSON file in the home.
//! - [`etcd`]: a fleet's, in etcd; [`mirror`] is its local copy (pure), [`seal`] keeps
//!   secrets out of etcd in plaintext.
//!
//! Reads never wait on the network: they answer from what this node has (for etcd, a mirror
//! kept current by a watch). A commit goes to the store's authority and returns once the
//! local copy has its revision, so a command sees its own write.

pub mod etcd;
pub mod file;
pub mod mirror;
pub mod seal;

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;

use crate::error::Error;

pub use file::FileStore;

/// A value and the revision of the commit that last wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Versioned {
    pub value: Value,
    pub mod_revision: u64,
}

/// All-or-nothing: every compare must hold, then every op is applied under one new revision.
#[derive(Debug, Default)]
pub struct Txn {
    /// (key, expected `mod_revision`; `None`: the key must be absent).
    pub compares: Vec<(String, Option<u64>)>,
    pub ops: Vec<Op>,
}

#[derive(Debug)]
pub enum Op {
    Put(String, Value),
    Delete(String),
    /// Every key that starts with this.
    DeletePrefix(String),
}

impl Txn {
    pub fn expect(mut self, key: &str, revision: Option<u64>) -> Txn {
        self.compares.push((key.to_string(), revision));
        self
    }

    pub fn put(mut self, key: &str, value: impl Serialize) -> Txn {
        self.ops.push(Op::Put(key.to_string(), serde_json::to_value(value).unwrap_or(Value::Null)));
        self
    }

    pub fn delete(mut self, key: &str) -> Txn {
        self.ops.push(Op::Delete(key.to_string()));
        self
    }

    pub fn delete_prefix(mut self, prefix: &str) -> Txn {
        self.ops.push(Op::DeletePrefix(prefix.to_string()));
        self
    }
}

/// How current this node's copy of the desired state is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// Since this node last heard from the store's authority (zero for the embedded file).
    pub stale: Duration,
    /// The copy reflects the store: loaded once, and not cut off beyond the staleness bound.
    pub current: bool,
}

/// The entries of a map whose keys start with `prefix`, in key order.
pub fn prefixed(
    entries: &std::collections::BTreeMap<String, Versioned>,
    prefix: &str,
) -> Vec<(String, Versioned)> {
    entries
        .range(prefix.to_string()..)
        .take_while(|(k, _)| k.starts_with(prefix))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[async_trait]
pub trait Store: Send + Sync {
    fn get(&self, key: &str) -> Option<Versioned>;
    /// Every key that starts with `prefix`, in key order.
    fn range(&self, prefix: &str) -> Vec<(String, Versioned)>;
    /// The new revision, or `None` when a compare failed (nothing was written).
    async fn commit(&self, txn: Txn) -> Result<Option<u64>, Error>;
    /// The current revision now and after every change the local copy takes.
    fn watch(&self) -> watch::Receiver<u64>;
    fn freshness(&self) -> Freshness {
        Freshness { stale: Duration::ZERO, current: true }
    }
}
