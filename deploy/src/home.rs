//! A moat home: one node's state folder (`--home`, `MOAT_HOME`, or `~/.moat`) with the store,
//! the home id, the admin socket and an optional `config.yaml`.
//!
//! Run as the systemd service, the home is the unit's state directory (`/var/lib/moat`,
//! given as `STATE_DIRECTORY`) and the config `/etc/moat/config.yaml` (its
//! `CONFIGURATION_DIRECTORY`); an operator's `moat` on that machine finds the service's home
//! when it has none of its own. `--home`, `MOAT_HOME` and `--config` still win.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;

use crate::error::Error;
use crate::{keys, private_file};

/// A file's bytes; a symbolic link in its place is an error, never followed.
pub fn read_no_follow(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    let mut file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The packaged service's home (its unit's `StateDirectory=moat`).
pub const SERVICE_HOME: &str = "/var/lib/moat";

/// A directory systemd gives the service in an environment variable (the first, when the
/// unit lists several).
fn systemd_directory(variable: &str) -> Option<PathBuf> {
    let value = std::env::var_os(variable)?;
    let first = value.to_str()?.split(':').next().filter(|d| !d.is_empty())?;
    Some(PathBuf::from(first))
}

#[derive(Debug, Clone)]
pub struct Home {
    pub dir: PathBuf,
}

impl Home {
    /// `--home` (or `MOAT_HOME`, which clap folds into the flag); under systemd the unit's
    /// state directory; else `~/.moat`, unless there is none and the service's home exists.
    pub fn resolve(flag: Option<PathBuf>) -> Result<Home, Error> {
        let dir = match flag.or_else(|| systemd_directory("STATE_DIRECTORY")) {
            Some(dir) => dir,
            None => {
                let home = std::env::var_os("HOME")
                    .ok_or_else(|| Error::Other("HOME is not set; give --home".into()))?;
                let own = PathBuf::from(home).join(".moat");
                let service = PathBuf::from(SERVICE_HOME);
                if !own.exists() && service.join("id").exists() { service } else { own }
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

    /// Where the running daemon hands its sockets to `serve --upgrade`.
    pub fn handover_socket(&self) -> PathBuf {
        self.dir.join("handover.sock")
    }

    pub fn store(&self) -> PathBuf {
        self.dir.join("store.json")
    }

    /// The config `serve` reads unless `--config` names one: the unit's configuration
    /// directory's under systemd, else the home's.
    pub fn config(&self) -> PathBuf {
        let dir = systemd_directory("CONFIGURATION_DIRECTORY").unwrap_or_else(|| self.dir.clone());
        dir.join("config.yaml")
    }

    /// Creates the folder (owner-only) and the home id on first use; returns the id.
    pub fn ensure(&self) -> Result<String, Error> {
        let io = |what: &str, e: std::io::Error| Error::other(&format!("{what} {}", self.dir.display()), e);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| io("creating home", e))?;
        self.check_owner()?;
        let id_path = self.dir.join("id");
        match read_no_follow(&id_path).map(|bytes| String::from_utf8_lossy(&bytes).into_owned()) {
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

    /// The home holds every key: it must be this user's, and no one else may write in it (or
    /// they could put a link where moat writes a key).
    fn check_owner(&self) -> Result<(), Error> {
        let meta = std::fs::metadata(&self.dir)
            .map_err(|e| Error::other(&format!("reading home {}", self.dir.display()), e))?;
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        if !meta.is_dir() {
            return Err(Error::Other(format!("home {} is not a folder", self.dir.display())));
        }
        if meta.uid() != me {
            return Err(Error::Other(format!(
                "home {} belongs to uid {}, not to this user (uid {me}); run moat as its owner or give another --home",
                self.dir.display(),
                meta.uid()
            )));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(Error::Other(format!(
                "home {} may be written by others (mode {:o}); make it owner-only: chmod 700 {}",
                self.dir.display(),
                meta.mode() & 0o777,
                self.dir.display()
            )));
        }
        Ok(())
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
            .custom_flags(libc::O_NOFOLLOW)
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
