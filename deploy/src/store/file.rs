//! [`FileStore`]: the embedded default: the whole map in one JSON file, rewritten atomically on
//! every commit (temp file, fsync, rename, fsync of the folder), owner-only because it holds
//! endpoint keys.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{Op, Store, Txn, Versioned};
use crate::error::Error;
use crate::private_file;

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
        let state = match crate::home::read_no_follow(path) {
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

#[async_trait]
impl Store for FileStore {
    fn get(&self, key: &str) -> Option<Versioned> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).entries.get(key).cloned()
    }

    fn range(&self, prefix: &str) -> Vec<(String, Versioned)> {
        super::prefixed(&self.state.lock().unwrap_or_else(|p| p.into_inner()).entries, prefix)
    }

    async fn commit(&self, txn: Txn) -> Result<Option<u64>, Error> {
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
                Op::DeletePrefix(prefix) => next.entries.retain(|k, _| !k.starts_with(&prefix)),
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

    #[tokio::test]
    async fn compare_and_set_commits_all_or_nothing() {
        let (_dir, store) = temp_store();
        let r1 = store
            .commit(Txn::default().expect("a", None).put("a", 1).put("b", 2))
            .await
            .expect("io")
            .expect("applied");
        assert_eq!(store.get("a").map(|v| v.mod_revision), Some(r1));
        // A stale compare writes nothing.
        assert_eq!(store.commit(Txn::default().expect("a", None).put("c", 3)).await.expect("io"), None);
        assert!(store.get("c").is_none());
        let r2 = store
            .commit(Txn::default().expect("a", Some(r1)).delete("a").put("c", 3))
            .await
            .expect("io")
            .expect("applied");
        assert_eq!(r2, r1 + 1);
        assert!(store.get("a").is_none());
        let keys: Vec<_> = store.range("").into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["b", "c"]);
        store.commit(Txn::default().put("d/1", 1).put("d/2", 2).put("e", 3)).await.expect("io");
        store.commit(Txn::default().delete_prefix("d/")).await.expect("io");
        let keys: Vec<_> = store.range("").into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["b", "c", "e"]);
    }

    #[tokio::test]
    async fn state_survives_a_reopen_and_the_file_is_owner_only() {
        let (dir, store) = temp_store();
        store
            .commit(Txn::default().put("endpoints/a", "x").put("endpoints/b", "y").put("other", 0))
            .await
            .expect("io");
        drop(store);
        let reopened = FileStore::open(&dir.0.join("store.json")).expect("open");
        assert_eq!(reopened.range("endpoints/").len(), 2);
        assert_eq!(*reopened.watch().borrow(), 1);
        let mode = std::fs::metadata(dir.0.join("store.json")).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[tokio::test]
    async fn watchers_see_each_new_revision() {
        let (_dir, store) = temp_store();
        let mut watch = store.watch();
        store.commit(Txn::default().put("k", 1)).await.expect("io");
        assert!(watch.has_changed().expect("open"));
        assert_eq!(*watch.borrow_and_update(), 1);
    }
}
