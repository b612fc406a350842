//! A real etcd cluster for the fleet tests: Debian's `etcd-server` started as members on
//! loopback, on ports picked free, with data folders in a temp folder, pre-vote on and a
//! short election timeout; killed and removed when dropped, also when the test fails. A port
//! picked free can be taken by another test before its member binds it: a cluster whose
//! members do not all come up is started again on other ports. And a [`Relay`] between a
//! node and a member that the test can cut, as a network would.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::files::CaSigned;
use crate::{TempDir, free_port, unique_id, wait_until};

struct Member {
    name: String,
    client: u16,
    peer: u16,
    child: Option<Child>,
}

pub struct EtcdCluster {
    members: Vec<Member>,
    token: String,
    /// Set: clients speak TLS and must show a certificate of this CA.
    tls: Option<CaSigned>,
    dir: TempDir,
}

impl EtcdCluster {
    /// `size` members, each up and the cluster answering before this returns.
    pub fn start(size: usize) -> EtcdCluster {
        EtcdCluster::start_with(size, None)
    }

    /// One member whose clients speak TLS and must show a client certificate of `tls.ca`.
    pub fn start_tls(tls: CaSigned) -> EtcdCluster {
        EtcdCluster::start_with(1, Some(tls))
    }

    fn start_with(size: usize, mut tls: Option<CaSigned>) -> EtcdCluster {
        const ATTEMPTS: usize = 3;
        for attempt in 1..=ATTEMPTS {
            let dir = TempDir::new("moat-etcd");
            let members = (0..size)
                .map(|i| Member {
                    name: format!("m{i}"),
                    client: free_port(),
                    peer: free_port(),
                    child: None,
                })
                .collect();
            let mut cluster =
                EtcdCluster { members, token: format!("moat-test-{}", unique_id()), tls: tls.take(), dir };
            for i in 0..size {
                cluster.spawn(i);
            }
            match cluster.wait_every_member(Duration::from_secs(20)) {
                Ok(()) => return cluster,
                Err(why) if attempt < ATTEMPTS => {
                    eprintln!("etcd test cluster: {why}; starting it again on other ports");
                    tls = cluster.tls.take();
                }
                Err(why) => panic!("etcd test cluster: {why}, {ATTEMPTS} times"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Waits until every member answers as healthy on its own; fails at once, with the end
    /// of its log, when a member's process has ended (a port taken, say).
    fn wait_every_member(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let mut waiting = None;
            for i in 0..self.members.len() {
                let Some(child) = self.members[i].child.as_mut() else { continue };
                if let Ok(Some(status)) = child.try_wait() {
                    let log = self.dir.path().join(format!("{}.log", self.members[i].name));
                    let log = std::fs::read_to_string(log).unwrap_or_default();
                    let mut tail: Vec<&str> = log.lines().rev().take(3).collect();
                    tail.reverse();
                    return Err(format!("member {i} ended ({status}): {}", tail.join(" | ")));
                }
                let endpoint = &self.endpoints()[i];
                let out = self.etcdctl_at(endpoint, &["endpoint", "health"]);
                if !out.status.success() {
                    waiting = Some(format!("member {i}: {}", String::from_utf8_lossy(&out.stderr).trim()));
                }
            }
            match waiting {
                None => return Ok(()),
                Some(why) if std::time::Instant::now() >= deadline => {
                    return Err(format!("not healthy in {timeout:?}: {why}"));
                }
                Some(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&mut self, i: usize) {
        let initial = self.initial_cluster();
        let data = self.dir.path().join(&self.members[i].name);
        let log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.dir.path().join(format!("{}.log", self.members[i].name)))
            .expect("log");
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut tls_args: Vec<std::ffi::OsString> = Vec::new();
        if let Some(tls) = &self.tls {
            for (flag, path) in [
                ("--cert-file", &tls.server_cert),
                ("--key-file", &tls.server_key),
                ("--trusted-ca-file", &tls.ca),
            ] {
                tls_args.push(flag.into());
                tls_args.push(path.into());
            }
            tls_args.push("--client-cert-auth".into());
        }
        let m = &mut self.members[i];
        let child = Command::new("etcd")
            .args(tls_args)
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &format!("{scheme}://127.0.0.1:{}", m.client)])
            .args(["--advertise-client-urls", &format!("{scheme}://127.0.0.1:{}", m.client)])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{}", m.peer)])
            .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{}", m.peer)])
            .args(["--initial-cluster", &initial, "--initial-cluster-token", &self.token])
            .args([
                "--initial-cluster-state",
                "new",
                "--heartbeat-interval",
                "100",
                "--election-timeout",
                "1000",
            ])
            .arg("--pre-vote")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd (Debian's etcd-server package; .ci/run installs it)");
        m.child = Some(child);
    }

    /// The members' client URLs.
    pub fn endpoints(&self) -> Vec<String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        self.members.iter().map(|m| format!("{scheme}://127.0.0.1:{}", m.client)).collect()
    }

    pub fn client_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.members[i].client))
    }

    /// Runs etcdctl against the members that are up.
    pub fn etcdctl(&self, args: &[&str]) -> std::process::Output {
        let up: Vec<String> = self
            .endpoints()
            .into_iter()
            .zip(&self.members)
            .filter(|(_, m)| m.child.is_some())
            .map(|(e, _)| e)
            .collect();
        self.etcdctl_at(&up.join(","), args)
    }

    /// Runs etcdctl against `endpoints` (comma-separated client URLs).
    fn etcdctl_at(&self, endpoints: &str, args: &[&str]) -> std::process::Output {
        let mut command = Command::new("etcdctl");
        command.env("ETCDCTL_API", "3").args(["--endpoints", endpoints, "--command-timeout", "3s"]);
        if let Some(tls) = &self.tls {
            command
                .arg("--cacert")
                .arg(&tls.ca)
                .arg("--cert")
                .arg(&tls.client_cert)
                .arg("--key")
                .arg(&tls.client_key);
        }
        command.args(args).output().expect("etcdctl")
    }

    /// Waits until a write goes through (a leader is elected and a quorum answers).
    pub fn wait_healthy(&self) {
        wait_until(Duration::from_secs(20), "etcd to take a write", || {
            let out = self.etcdctl(&["put", "/moat-test/health", "1"]);
            if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).into_owned()) }
        });
    }

    /// The index of the current leader.
    pub fn leader(&self) -> usize {
        wait_until(Duration::from_secs(10), "a leader", || {
            for (i, m) in self.members.iter().enumerate().filter(|(_, m)| m.child.is_some()) {
                let out = Command::new("etcdctl")
                    .env("ETCDCTL_API", "3")
                    .args([
                        "--endpoints",
                        &format!("http://127.0.0.1:{}", m.client),
                        "endpoint",
                        "status",
                        "-w",
                        "json",
                    ])
                    .output()
                    .map_err(|e| e.to_string())?;
                let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
                let s = &status[0]["Status"];
                if s["leader"].is_u64() && s["leader"] == s["header"]["member_id"] {
                    return Ok(i);
                }
            }
            Err("no member says it leads".into())
        })
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a killed member again with its data (etcd ignores the initial-cluster flags
    /// once its data folder exists).
    pub fn restart(&mut self, i: usize) {
        self.spawn(i);
    }

    /// Every member's data folder, to look for what must not be there.
    pub fn data_dirs(&self) -> Vec<std::path::PathBuf> {
        self.members.iter().map(|m| self.dir.path().join(&m.name)).collect()
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// A TCP relay to one address that the test can cut: while cut, the bytes of every
/// connection stop flowing both ways (as if the network dropped them) and new connections
/// hang; healed, the connections of the cut are closed and new ones flow again.
pub struct Relay {
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    /// Bumps at every heal: connections from before it close.
    generation: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Relay {
    pub fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("relay listener");
        let addr = listener.local_addr().expect("relay address");
        listener.set_nonblocking(true).expect("nonblocking");
        let (cut, generation, stop) =
            (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let shared = (cut.clone(), generation.clone(), stop.clone());
        std::thread::spawn(move || {
            let (cut, generation, stop) = shared;
            while !stop.load(Ordering::Relaxed) {
                let client = match listener.accept() {
                    Ok((client, _)) => client,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                let Ok(upstream) = TcpStream::connect(target) else { continue };
                let born = generation.load(Ordering::Relaxed);
                for (from, to) in
                    [(client.try_clone(), upstream.try_clone()), (upstream.try_clone(), client.try_clone())]
                {
                    let (Ok(from), Ok(to)) = (from, to) else { continue };
                    let (cut, generation, stop) = (cut.clone(), generation.clone(), stop.clone());
                    std::thread::spawn(move || pump(from, to, born, &cut, &generation, &stop));
                }
            }
        });
        Relay { addr, cut, generation, stop }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }

    pub fn heal(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.cut.store(false, Ordering::SeqCst);
    }
}

fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    born: u64,
    cut: &AtomicBool,
    generation: &AtomicU64,
    stop: &AtomicBool,
) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = [0u8; 16 * 1024];
    loop {
        if stop.load(Ordering::Relaxed) || generation.load(Ordering::Relaxed) != born {
            break;
        }
        if cut.load(Ordering::Relaxed) {
            // Nothing flows: not read, not written, as a dead network.
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            // Bytes read as the cut came are lost with it; the connection then never
            // carries anything again (the heal closes it).
            Ok(_) if cut.load(Ordering::Relaxed) => {
                while generation.load(Ordering::Relaxed) == born && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                break;
            }
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(std::net::Shutdown::Both);
    let _ = to.shutdown(std::net::Shutdown::Both);
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
