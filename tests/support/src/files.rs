//! Temp folders, the repository root and test certificates.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::unique_id;

/// A fresh directory under the system's temp folder, named `<prefix>-<unique id>`, removed
/// with all it holds when dropped: also when the test fails.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("{prefix}-{}", unique_id()));
        std::fs::create_dir_all(&path).expect("creating a temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The repository's root folder.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A self-signed P-256 server certificate for `names` (`DNS:...`/`IP:...` entries), written
/// by openssl to `<dir>/<file>.cert.pem` and `<dir>/<file>.key.pem`; returns their paths.
pub fn self_signed_certificate(dir: &std::path::Path, file: &str, names: &str) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).expect("certificate folder");
    let (cert, key) = (dir.join(format!("{file}.cert.pem")), dir.join(format!("{file}.key.pem")));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
        ])
        .args(["-subj", &format!("/CN={file}"), "-addext", &format!("subjectAltName={names}")])
        .args(["-addext", "basicConstraints=critical,CA:FALSE", "-addext", "extendedKeyUsage=serverAuth"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
    (cert, key)
}
