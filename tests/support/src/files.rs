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

/// A test CA and, signed by it, a server certificate for 127.0.0.1 and a client certificate:
/// what a TLS service with client-certificate auth (etcd, say) needs.
pub struct CaSigned {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// Writes a CA and a server and a client certificate signed by it into `dir`, with openssl.
pub fn ca_signed_certificates(dir: &Path) -> CaSigned {
    std::fs::create_dir_all(dir).expect("certificate folder");
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    openssl(
        &[
            &["req", "-x509"],
            &ec[..],
            &["-days", "1", "-subj", "/CN=moat-test-ca", "-keyout", "ca.key", "-out", "ca.pem"],
        ]
        .concat(),
    );
    for (name, usage) in [("server", "serverAuth"), ("client", "clientAuth")] {
        let (key, csr, cert, ext) =
            (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"), format!("{name}.ext"));
        std::fs::write(
            dir.join(&ext),
            format!("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage={usage}\n"),
        )
        .expect("extensions");
        openssl(
            &[&["req"], &ec[..], &["-subj", &format!("/CN=moat-test-{name}"), "-keyout", &key, "-out", &csr]]
                .concat(),
        );
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-out",
            &cert,
            "-extfile",
            &ext,
        ]);
    }
    CaSigned {
        ca: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
    }
}
