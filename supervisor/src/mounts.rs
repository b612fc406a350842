//! Which host folders a container may see (CONTRACT.md "Isolation limits"), as one rule that
//! the daemon applies to every spec it is given and the supervisor applies again to every
//! container it makes: a model is code (a pickle runs), so what it can read is what it can
//! exfiltrate.
//!
//! A mount source is resolved (its symlinks followed, once) and the resolved path is what is
//! checked and mounted. It may not be, nor hold, `/`, a system folder, the Docker socket or
//! the moat home, nor lie inside the pseudo file systems or the moat home; with `model_roots`
//! set, it must lie inside one of them.

use std::path::{Path, PathBuf};

/// Folders no container may see whole (nor any folder that holds them).
pub const SYSTEM_FOLDERS: [&str; 10] =
    ["/", "/etc", "/proc", "/sys", "/dev", "/run", "/var/run", "/var/lib/docker", "/boot", "/root"];
/// Folders no container may see any part of.
const NOTHING_INSIDE: [&str; 4] = ["/proc", "/sys", "/dev", "/var/lib/docker"];
/// Whoever holds the engine's socket holds the host.
const DOCKER_SOCKETS: [&str; 2] = ["/var/run/docker.sock", "/run/docker.sock"];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountPolicy {
    /// `supervisor.model_roots`, resolved; empty: anywhere the other rules allow.
    pub roots: Vec<PathBuf>,
    /// The moat home, resolved: it holds the store and every key.
    pub home: Option<PathBuf>,
}

fn resolved(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_path_buf())
}

impl MountPolicy {
    pub fn new(roots: &[PathBuf], home: Option<&Path>) -> MountPolicy {
        MountPolicy { roots: roots.iter().map(|r| resolved(r)).collect(), home: home.map(resolved) }
    }

    /// Checked again when a checked path is used (a container made, a context built): it
    /// may have become a link since, and what is used must be what was checked.
    pub fn check_unchanged(&self, path: &Path) -> Result<(), String> {
        match self.check(path)? {
            real if real == path => Ok(()),
            real => {
                Err(format!("{} now leads to {}; deploy again to use that", path.display(), real.display()))
            }
        }
    }

    /// The path to mount for `path`, or why it may not be mounted.
    pub fn check(&self, path: &Path) -> Result<PathBuf, String> {
        let real = path.canonicalize().map_err(|e| format!("{}: {e}", path.display()))?;
        let shown = if real == path {
            real.display().to_string()
        } else {
            format!("{} (really {})", path.display(), real.display())
        };
        for folder in SYSTEM_FOLDERS {
            let folder = resolved(Path::new(folder));
            if folder.starts_with(&real) {
                return Err(format!(
                    "{shown} is or holds the system folder {}, which no container may see",
                    folder.display()
                ));
            }
        }
        for folder in NOTHING_INSIDE {
            let folder = resolved(Path::new(folder));
            if real.starts_with(&folder) {
                return Err(format!("{shown} is inside {}, which no container may see", folder.display()));
            }
        }
        for socket in DOCKER_SOCKETS {
            let socket = Path::new(socket);
            if socket.starts_with(&real) || resolved(socket).starts_with(&real) {
                return Err(format!("{shown} is or holds the Docker socket, which no container may see"));
            }
        }
        if let Some(home) = &self.home
            && (home.starts_with(&real) || real.starts_with(home))
        {
            return Err(format!(
                "{shown} is, holds or is inside the moat home {}, which holds every key",
                home.display()
            ));
        }
        if !self.roots.is_empty() && !self.roots.iter().any(|root| real.starts_with(root)) {
            let roots: Vec<String> = self.roots.iter().map(|r| r.display().to_string()).collect();
            return Err(format!("{shown} is outside supervisor.model_roots ({})", roots.join(", ")));
        }
        Ok(real)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> (moat_test_support::TempDir, PathBuf) {
        let d = moat_test_support::TempDir::new(&format!("moat-mounts-{name}"));
        let real = d.path().canonicalize().expect("real");
        (d, real)
    }

    #[test]
    fn system_folders_and_what_holds_them_are_refused_and_their_neighbours_pass() {
        let policy = MountPolicy::default();
        for refused in [
            "/",
            "/etc",
            "/root",
            "/proc",
            "/proc/self",
            "/sys/kernel",
            "/dev",
            "/boot",
            "/var",
            "/run",
            "/var/run",
        ] {
            if Path::new(refused).exists() {
                assert!(policy.check(Path::new(refused)).is_err(), "{refused} was allowed");
            }
        }
        let (_d, models) = dir("models");
        assert_eq!(policy.check(&models), Ok(models.clone()));
        let e = policy.check(Path::new("/var/run/docker.sock")).expect_err("the engine");
        assert!(e.contains("Docker socket"), "{e}");
        assert!(policy.check(Path::new("/usr/share")).is_ok(), "an ordinary folder is a folder");
    }

    #[test]
    fn the_moat_home_is_refused_whole_held_or_in_part() {
        let (_d, home) = dir("home");
        let inside = home.join("keys");
        std::fs::create_dir_all(&inside).expect("mkdir");
        let policy = MountPolicy::new(&[], Some(&home));
        let e = policy.check(&home).expect_err("the home");
        assert!(e.contains("moat home"), "{e}");
        assert!(policy.check(&inside).is_err(), "inside the home");
        assert!(policy.check(home.parent().expect("parent")).is_err(), "a folder that holds the home");
    }

    #[test]
    fn with_model_roots_only_what_lies_inside_them_passes_and_a_symlink_counts_as_where_it_leads() {
        let (_r, root) = dir("root");
        let model = root.join("model-1");
        std::fs::create_dir_all(&model).expect("mkdir");
        let (_o, outside) = dir("outside");
        let policy = MountPolicy::new(std::slice::from_ref(&root), None);
        assert!(policy.check(&model).is_ok());
        let e = policy.check(&outside).expect_err("outside the roots");
        assert!(e.contains("outside supervisor.model_roots"), "{e}");
        let link = root.join("to-outside");
        std::os::unix::fs::symlink(&outside, &link).expect("symlink");
        let e = policy.check(&link).expect_err("a symlink out of the roots");
        assert!(e.contains("really"), "{e}");
        let to_etc = root.join("to-etc");
        std::os::unix::fs::symlink("/etc", &to_etc).expect("symlink");
        assert!(MountPolicy::default().check(&to_etc).expect_err("a symlink to /etc").contains("/etc"));
    }
}
