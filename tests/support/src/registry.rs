//! A container registry on loopback (Debian's `docker-registry`), for the image-pull tests.

use std::time::Duration;

use crate::wait_until;

/// A registry on a free loopback port, killed with its storage when dropped.
pub struct Registry {
    pub port: u16,
    child: std::process::Child,
    dir: std::path::PathBuf,
}

impl Registry {
    pub fn start(dir: std::path::PathBuf) -> Registry {
        let port = free_port();
        std::fs::create_dir_all(&dir).expect("registry dir");
        let config = format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("data").display()
        );
        std::fs::write(dir.join("config.yml"), config).expect("registry config");
        let child = std::process::Command::new("docker-registry")
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("docker-registry (Debian's docker-registry package; .ci/run installs it)");
        let registry = Registry { port, child, dir };
        wait_until(Duration::from_secs(10), "the registry to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).map(drop).map_err(|e| e.to_string())
        });
        registry
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port")
}
