//! A moat home: one node's state folder (`--home`, `MOAT_HOME`, or `~/.moat`) with the store,
//! the home id, the admin socket and an optional `config.yaml`.

use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;

use crate::error::Error;
use crate::{keys, private_file};

#[derive(Debug, Clone)]
pub struct Home {
    pub dir: PathBuf,
}

impl Home {
    /// `--home` (or `MOAT_HOME`, which clap folds into the flag), else `~/.moat`.
    pub fn resolve(flag: Option<PathBuf>) -> Result<Home, Error> {
        let dir = match flag {
            Some(dir) => dir,
            None => {
                let home = std::env::var_os("HOME")
                    .ok_or_else(|| Error::Other("HOME is not set; give --home".into()))?;
                PathBuf::from(home).join(".moat")
            }
        };
        let dir = if dir.is_absolute() {
            dir
        } else {
            std::env::current_dir().map_err(|e| Error::other("reading the current folder", e))?.join(dir)
        };
        Ok(Home { dir })
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("admin.sock")
    }

    pub fn store(&self) -> PathBuf {
        self.dir.join("store.json")
    }

    pub fn config(&self) -> PathBuf {
        self.dir.join("config.yaml")
    }

    /// Creates the folder (owner-only) and the home id on first use; returns the id.
    pub fn ensure(&self) -> Result<String, Error> {
        let io = |what: &str, e: std::io::Error| Error::other(&format!("{what} {}", self.dir.display()), e);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| io("creating home", e))?;
        let id_path = self.dir.join("id");
        match std::fs::read_to_string(&id_path) {
            Ok(id) => {
                let id = id.trim().to_string();
                let ok =
                    id.len() == 8 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                if !ok {
                    return Err(Error::Other(format!(
                        "{} does not hold a home id (8 lowercase hex characters)",
                        id_path.display()
                    )));
                }
                Ok(id)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id = keys::new_home_id()?;
                private_file::write(&id_path, format!("{id}\n").as_bytes())?;
                Ok(id)
            }
            Err(e) => Err(io("reading the id of", e)),
        }
    }

    /// Holds the home's serve lock for as long as the returned file lives: a second
    /// `moat serve` on the same home fails here.
    pub fn lock(&self) -> Result<File, Error> {
        let path = self.dir.join("serve.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::other(&format!("opening {}", path.display()), e))?;
        // SAFETY: flock on a file descriptor we own; no memory is shared.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(Error::Conflict(format!(
                "moat serve is already running for home {}",
                self.dir.display()
            )));
        }
        Ok(file)
    }
}
