//! A build context: the folder Azure ML's `environment.build.path` names, as the tar archive
//! Docker's build takes, and a digest that names what is built from it. The archive is
//! reproducible (entries in name order, owned by root, every time zero), so the same files
//! give the same digest on every node and after every restart, and an unchanged context
//! reuses its image. Symbolic links go in as links, never followed: a context carries nothing
//! from outside itself. Anything else (a socket, a device) is refused by name.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use ring::digest;

/// The most file bytes a context may hold: Docker copies all of it before the first step.
pub const MAX_CONTEXT_BYTES: u64 = 512 << 20;

/// The context folder as an uncompressed tar archive.
pub fn archive(folder: &Path) -> Result<Vec<u8>, String> {
    let mut packer = Packer { tar: tar::Builder::new(Vec::new()), bytes: 0, limit: MAX_CONTEXT_BYTES };
    packer.folder(folder, Path::new(""))?;
    packer.tar.into_inner().map_err(|e| format!("writing the context's archive: {e}"))
}

/// A short hex digest (SHA-256, 16 hex digits) of everything that shapes a build.
pub fn digest(parts: &[&[u8]]) -> String {
    let mut context = digest::Context::new(&digest::SHA256);
    for part in parts {
        // Each part's length first: ("ab", "c") and ("a", "bc") differ.
        context.update(&(part.len() as u64).to_be_bytes());
        context.update(part);
    }
    context.finish().as_ref().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

struct Packer {
    tar: tar::Builder<Vec<u8>>,
    bytes: u64,
    limit: u64,
}

impl Packer {
    fn folder(&mut self, root: &Path, inside: &Path) -> Result<(), String> {
        let here = root.join(inside);
        let failed = |e: io::Error| format!("{}: {e}", here.display());
        let mut names: Vec<_> = fs::read_dir(&here)
            .map_err(failed)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(failed)?;
        names.sort();
        for name in names {
            let path = inside.join(&name);
            let full = root.join(&path);
            let failed = |e: io::Error| format!("{}: {e}", full.display());
            let meta = fs::symlink_metadata(&full).map_err(failed)?;
            let mut header = tar::Header::new_gnu();
            header.set_mtime(0);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mode(meta.permissions().mode() & 0o7777);
            let kind = meta.file_type();
            if kind.is_symlink() {
                let target = fs::read_link(&full).map_err(failed)?;
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                self.tar.append_link(&mut header, &path, &target).map_err(failed)?;
            } else if kind.is_dir() {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                self.tar.append_data(&mut header, &path, io::empty()).map_err(failed)?;
                self.folder(root, &path)?;
            } else if kind.is_file() {
                self.bytes += meta.len();
                if self.bytes > self.limit {
                    return Err(format!(
                        "{} holds more than {} MiB; a build context must be smaller",
                        root.display(),
                        self.limit >> 20
                    ));
                }
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(meta.len());
                let file = File::open(&full).map_err(failed)?;
                // Read no more than was measured: a file growing meanwhile cannot overrun the
                // header's size.
                self.tar.append_data(&mut header, &path, io::Read::take(file, meta.len())).map_err(failed)?;
            } else {
                return Err(format!(
                    "{}: neither a file, a folder nor a symbolic link; a build context holds only those",
                    full.display()
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn scratch(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("moat-context-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("app/deep")).expect("mkdir");
        fs::write(dir.join("Dockerfile"), "FROM scratch\nCOPY app /app\n").expect("write");
        fs::write(dir.join("app/score.py"), "print(1)\n").expect("write");
        fs::write(dir.join("app/deep/z.txt"), "z").expect("write");
        std::os::unix::fs::symlink("/etc/passwd", dir.join("app/link")).expect("symlink");
        dir
    }

    fn entries(archive: &[u8]) -> Vec<(String, tar::EntryType, String)> {
        let mut tar = tar::Archive::new(archive);
        let mut out = Vec::new();
        for entry in tar.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            let path = entry.path().expect("path").display().to_string();
            let kind = entry.header().entry_type();
            let mut text = String::new();
            if kind == tar::EntryType::Symlink {
                text = entry.link_name().expect("link").expect("target").display().to_string();
            } else {
                entry.read_to_string(&mut text).expect("read");
            }
            assert_eq!(entry.header().mtime().expect("mtime"), 0);
            out.push((path, kind, text));
        }
        out
    }

    #[test]
    fn a_context_is_archived_in_name_order_with_links_kept_as_links() {
        let dir = scratch("order");
        let archive = archive(&dir).expect("archived");
        let found = entries(&archive);
        let names: Vec<&str> = found.iter().map(|(p, _, _)| p.as_str()).collect();
        assert_eq!(names, ["Dockerfile", "app", "app/deep", "app/deep/z.txt", "app/link", "app/score.py"]);
        assert_eq!(found[4], ("app/link".into(), tar::EntryType::Symlink, "/etc/passwd".into()));
        assert_eq!(found[5].2, "print(1)\n");
        fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn the_same_files_give_the_same_digest_and_any_change_another() {
        let dir = scratch("digest");
        let first = digest(&[&archive(&dir).expect("archived")]);
        // Touching a file (a new mtime) is no change; its content and its mode are.
        fs::write(dir.join("app/score.py"), "print(1)\n").expect("rewrite");
        assert_eq!(digest(&[&archive(&dir).expect("archived")]), first);
        fs::write(dir.join("app/score.py"), "print(2)\n").expect("edit");
        let edited = digest(&[&archive(&dir).expect("archived")]);
        assert_ne!(edited, first);
        fs::set_permissions(dir.join("app/score.py"), fs::Permissions::from_mode(0o755)).expect("chmod");
        assert_ne!(digest(&[&archive(&dir).expect("archived")]), edited);
        assert_eq!(first.len(), 16);
        assert_ne!(digest(&[b"ab", b"c"]), digest(&[b"a", b"bc"]));
        fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn special_files_and_oversized_contexts_are_refused_by_name() {
        let dir = scratch("special");
        let socket = dir.join("app/control.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
        let e = archive(&dir).expect_err("a socket");
        assert!(e.contains("control.sock") && e.contains("neither a file"), "{e}");
        fs::remove_file(&socket).expect("rm socket");

        let mut packer = Packer { tar: tar::Builder::new(Vec::new()), bytes: 0, limit: 5 };
        let e = packer.folder(&dir, Path::new("")).expect_err("over the limit");
        assert!(e.contains("more than 0 MiB"), "{e}");
        assert!(archive(&dir.join("missing")).expect_err("no folder").contains("missing"));
        fs::remove_dir_all(&dir).expect("clean up");
    }
}
