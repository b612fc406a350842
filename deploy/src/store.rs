//! The desired state's store: a key-value map with revisions, behind the narrow interface
//! an etcd cluster could also honour (get, range, compare-and-set of several keys at once,
//! watch from a revision).
//!
//! [`FileStore`] is the embedded default: the whole map in one JSON file, rewritten
//! atomically on every commit (temp file, fsync, rename, fsync of the folder), owner-only
//! because it holds endpoint keys.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;

use crate::error::Error;
use crate::private_file;

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
}

pub trait Store: Send + Sync {
    fn get(&self, key: &str) -> Option<Versioned>;
    /// Every key that starts with `prefix`, in key order.
    fn range(&self, prefix: &str) -> Vec<(String, Versioned)>;
    /// The new revision, or `None` when a compare failed (nothing was written).
    fn commit(&self, txn: Txn) -> Result<Option<u64>, Error>;
    /// The current revision now and after every later commit.
    fn watch(&self) -> watch::Receiver<u64>;
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    revision: u64,
    entries: BTreeMap<String, Versioned>,
}

pub struct FileStore {
    path: PathBuf,
    state: Mutex<State>,
    revision: watch::Sender<u64>,
}

impl FileStore {
    pub fn open(path: &Path) -> Result<FileStore, Error> {
        let state = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| Error::Other(format!("store {} is damaged: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => {
                return Err(Error::other(&format!("reading store {}", path.display()), e));
            }
        };
        let revision = watch::channel(state.revision).0;
        Ok(FileStore { path: path.to_path_buf(), state: Mutex::new(state), revision })
    }

    fn persist(&self, state: &State) -> Result<(), Error> {
        let bytes = serde_json::to_vec_pretty(state).map_err(|e| Error::other("encoding the store", e))?;
        private_file::write(&self.path, &bytes)
    }
}

impl Store for FileStore {
    fn get(&self, key: &str) -> Option<Versioned> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).entries.get(key).cloned()
    }

    fn range(&self, prefix: &str) -> Vec<(String, Versioned)> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state
            .entries
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn commit(&self, txn: Txn) -> Result<Option<u64>, Error> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        for (key, expected) in &txn.compares {
            if state.entries.get(key).map(|v| v.mod_revision) != *expected {
                return Ok(None);
            }
        }
        let revision = state.revision + 1;
        let mut next = State { revision, entries: state.entries.clone() };
        for op in txn.ops {
            match op {
                Op::Put(key, value) => {
                    next.entries.insert(key, Versioned { value, mod_revision: revision });
                }
                Op::Delete(key) => {
                    next.entries.remove(&key);
                }
            }
        }
        // On disk first: what a caller was told is committed survives a crash.
        self.persist(&next)?;
        *state = next;
        drop(state);
        self.revision.send_replace(revision);
        Ok(Some(revision))
    }

    fn watch(&self) -> watch::Receiver<u64> {
        self.revision.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn temp_store() -> (tempdir::Dir, FileStore) {
        let dir = tempdir::Dir::new();
        let store = FileStore::open(&dir.0.join("store.json")).expect("open");
        (dir, store)
    }

    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                let p = std::env::temp_dir().join(format!(
                    "moat-store-{}-{}",
                    std::process::id(),
                    fastrand::u64(..)
                ));
                std::fs::create_dir_all(&p).expect("mkdir");
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn compare_and_set_commits_all_or_nothing() {
        let (_dir, store) = temp_store();
        let r1 = store
            .commit(Txn::default().expect("a", None).put("a", 1).put("b", 2))
            .expect("io")
            .expect("applied");
        assert_eq!(store.get("a").map(|v| v.mod_revision), Some(r1));
        // A stale compare writes nothing.
        assert_eq!(store.commit(Txn::default().expect("a", None).put("c", 3)).expect("io"), None);
        assert!(store.get("c").is_none());
        let r2 = store
            .commit(Txn::default().expect("a", Some(r1)).delete("a").put("c", 3))
            .expect("io")
            .expect("applied");
        assert_eq!(r2, r1 + 1);
        assert!(store.get("a").is_none());
        let keys: Vec<_> = store.range("").into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["b", "c"]);
    }

    #[test]
    fn state_survives_a_reopen_and_the_file_is_owner_only() {
        let (dir, store) = temp_store();
        store
            .commit(Txn::default().put("endpoints/a", "x").put("endpoints/b", "y").put("other", 0))
            .expect("io");
        drop(store);
        let reopened = FileStore::open(&dir.0.join("store.json")).expect("open");
        assert_eq!(reopened.range("endpoints/").len(), 2);
        assert_eq!(*reopened.watch().borrow(), 1);
        let mode = std::fs::metadata(dir.0.join("store.json")).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn watchers_see_each_new_revision() {
        let (_dir, store) = temp_store();
        let mut watch = store.watch();
        store.commit(Txn::default().put("k", 1)).expect("io");
        assert!(watch.has_changed().expect("open"));
        assert_eq!(*watch.borrow_and_update(), 1);
    }
}
