//! Helpers shared by moat's tests that use real Docker: unique home ids so tests run in
//! parallel, the sample scorer image, and guards that remove what a test made even when it
//! fails.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The image `examples/sample-scorer/build-image.sh` builds.
pub const SCORER_IMAGE: &str = "moat-sample-scorer:latest";
/// The image `tests/test-scorer/build-image.sh` builds: a scorer tests control by requests.
pub const TEST_IMAGE: &str = "moat-test-scorer:latest";

/// A random 8-hex-digit id, the shape of a moat home id.
pub fn unique_id() -> String {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    format!("{:08x}", hasher.finish() as u32)
}

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

/// Fails the test with the command to run when the sample scorer image is missing.
pub fn require_scorer_image() {
    require_image(SCORER_IMAGE, "examples/sample-scorer/build-image.sh");
}

/// Fails the test with the command to run when the test scorer image is missing.
pub fn require_test_image() {
    require_image(TEST_IMAGE, "tests/test-scorer/build-image.sh");
}

fn require_image(image: &str, script: &str) {
    let present = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", image])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(present, "image {image} is missing: run {script} (tests/run.sh does)");
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

/// Removes every container and network labelled with a home id when dropped.
pub struct DockerCleanup {
    pub home_id: String,
}

impl DockerCleanup {
    pub fn new(home_id: &str) -> Self {
        DockerCleanup { home_id: home_id.to_string() }
    }

    /// Ids of this home's containers, running or not.
    pub fn containers(&self) -> Vec<String> {
        home_containers(&self.home_id)
    }

    pub fn networks(&self) -> Vec<String> {
        home_networks(&self.home_id)
    }
}

/// Ids of a home's containers, running or not.
pub fn home_containers(home_id: &str) -> Vec<String> {
    docker_ids(&["ps", "-aq", "--filter", &format!("label=moat.home={home_id}")])
}

/// Ids of a home's networks.
pub fn home_networks(home_id: &str) -> Vec<String> {
    docker_ids(&["network", "ls", "-q", "--filter", &format!("label=moat.home={home_id}")])
}

fn docker_ids(args: &[&str]) -> Vec<String> {
    Command::new("docker")
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().map(String::from).collect())
        .unwrap_or_default()
}

impl Drop for DockerCleanup {
    fn drop(&mut self) {
        // The home's kernel rules go too (they stay while a daemon is down, by design).
        let _ =
            Command::new("nft").args(["delete", "table", "inet", &format!("moat_{}", self.home_id)]).output();
        // A daemon killed mid-call can leave Docker finishing a create after the first
        // sweep has looked: sweep until a look a little later finds nothing.
        for _ in 0..5 {
            let containers = self.containers();
            if !containers.is_empty() {
                let _ = Command::new("docker").args(["rm", "-f"]).args(&containers).output();
            }
            let networks = self.networks();
            if !networks.is_empty() {
                let _ = Command::new("docker").args(["network", "rm"]).args(&networks).output();
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
            if self.containers().is_empty() && self.networks().is_empty() {
                break;
            }
        }
    }
}

/// A response read by [`http`].
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`), the way any client would
/// send it; blocking, so tests need no HTTP client of their own.
pub fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<Reply> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5))?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {head:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked =
        headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked { dechunk(rest) } else { rest.to_string() };
    Ok(Reply { status, headers, body })
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

/// What a `moat` command printed and how it exited.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panics with the command's output unless it exited 0.
    pub fn ok(self) -> Run {
        assert_eq!(self.code, 0, "command failed\nstdout: {}\nstderr: {}", self.stdout, self.stderr);
        self
    }
}

/// Runs `moat --home <home> ARGS...` from the repository's root, without a terminal.
pub fn run_moat(bin: &std::path::Path, home: &std::path::Path, args: &[&str]) -> Run {
    let output = Command::new(bin)
        .arg("--home")
        .arg(home)
        .args(args)
        .current_dir(repo_root())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("moat runs");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A `moat serve` in a home of its own, on port 0; killed and cleaned up (containers,
/// networks, the home folder) when dropped.
pub struct Daemon {
    pub bin: PathBuf,
    pub home: PathBuf,
    listen: String,
    env: Vec<(String, String)>,
    child: Option<std::process::Child>,
    cleanup: Option<DockerCleanup>,
}

impl Daemon {
    pub fn start(bin: &str) -> Daemon {
        Daemon::start_with_config(bin, "")
    }

    /// Starts with this `config.yaml` in the home.
    pub fn start_with_config(bin: &str, config: &str) -> Daemon {
        Daemon::start_listening(bin, config, "127.0.0.1:0")
    }

    /// Starts with this `config.yaml`, its scoring listener on `listen`.
    pub fn start_listening(bin: &str, config: &str, listen: &str) -> Daemon {
        Daemon::start_in(bin, config, listen, &[])
    }

    /// Starts with these environment variables set for `moat serve` (PATH, for one).
    pub fn start_with_env(bin: &str, env: &[(&str, &str)]) -> Daemon {
        Daemon::start_in(bin, "", "127.0.0.1:0", env)
    }

    fn start_in(bin: &str, config: &str, listen: &str, env: &[(&str, &str)]) -> Daemon {
        let home = std::env::temp_dir().join(format!("moat-test-{}", unique_id()));
        std::fs::create_dir_all(&home).expect("home");
        if !config.is_empty() {
            std::fs::write(home.join("config.yaml"), config).expect("config.yaml");
        }
        let mut daemon = Daemon {
            bin: PathBuf::from(bin),
            home,
            listen: listen.to_string(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            child: None,
            cleanup: None,
        };
        daemon.spawn();
        daemon
    }

    pub fn socket(&self) -> PathBuf {
        self.home.join("admin.sock")
    }

    pub fn home_id(&self) -> String {
        std::fs::read_to_string(self.home.join("id")).map(|s| s.trim().to_string()).unwrap_or_default()
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.home.join("serve.log"))
            .expect("log file");
        let child = Command::new(&self.bin)
            .args(["serve", "--home"])
            .arg(&self.home)
            .args(["--listen", &self.listen, "--metrics-listen", "127.0.0.1:0"])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("moat serve starts");
        self.child = Some(child);
        self.wait_ready();
        if self.cleanup.is_none() {
            self.cleanup = Some(DockerCleanup::new(&self.home_id()));
        }
    }

    /// Waits for `admin.sock`, which appears only once the daemon is serving.
    fn wait_ready(&mut self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if std::os::unix::net::UnixStream::connect(self.socket()).is_ok() {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("moat serve exited with {status}: {}", self.log());
            }
            assert!(std::time::Instant::now() < deadline, "moat serve did not become ready: {}", self.log());
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Where the daemon serves `/metrics`, from its ready line in the log.
    pub fn metrics_addr(&self) -> std::net::SocketAddr {
        let log = self.log();
        let line = log.lines().rev().find(|l| l.contains("moat serve is ready")).expect("ready line");
        let url =
            line.split("\"metrics\":\"http://").nth(1).and_then(|r| r.split('/').next()).expect("metrics");
        url.parse().expect("metrics address")
    }

    /// The daemon's log so far. Access and decision lines reach it in batches every 10 ms;
    /// the wait lets the last batch land.
    pub fn log(&self) -> String {
        std::thread::sleep(std::time::Duration::from_millis(50));
        std::fs::read_to_string(self.home.join("serve.log")).unwrap_or_default()
    }

    /// SIGKILL, the way a crash ends it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        child.wait().ok().and_then(|s| s.code())
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Runs `moat --home <home> ARGS...`.
    pub fn moat(&self, args: &[&str]) -> Run {
        run_moat(&self.bin, &self.home, args)
    }

    /// Runs a command written as one line; words are split at whitespace.
    pub fn cli(&self, line: &str) -> Run {
        let words: Vec<&str> = line.split_whitespace().collect();
        self.moat(&words)
    }

    /// The store's bytes, to show that a refused command changed nothing.
    pub fn store_bytes(&self) -> Vec<u8> {
        std::fs::read(self.home.join("store.json")).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // A failing test shows what the daemon said, the clearest clue there is.
        if std::thread::panicking() {
            eprintln!("--- moat serve log ({}) ---\n{}", self.home.display(), self.log());
        }
        self.kill9();
        drop(self.cleanup.take());
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

/// A network namespace joined to the host by a veth pair: a test host of its own, with an
/// address on a /30 whose other end is the host. Removed (with its links) when dropped.
pub struct TestHost {
    pub name: String,
    pub host_if: String,
    pub host_addr: std::net::Ipv4Addr,
    pub addr: std::net::Ipv4Addr,
}

fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip {args:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("ip {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

impl TestHost {
    /// `tag` (a few letters) and `id` make the names unique; `host_addr`/`addr` share a /30.
    pub fn new(tag: &str, id: &str, host_addr: std::net::Ipv4Addr, addr: std::net::Ipv4Addr) -> TestHost {
        TestHost::with_addresses(tag, id, host_addr, &[addr], 30)
    }

    /// A test host with several addresses (the first is `addr`) on a `/prefix` it shares
    /// with the host's end.
    pub fn with_addresses(
        tag: &str,
        id: &str,
        host_addr: std::net::Ipv4Addr,
        addrs: &[std::net::Ipv4Addr],
        prefix: u8,
    ) -> TestHost {
        let name = format!("moat-{id}-{tag}");
        let host_if = format!("m{id}{tag}");
        let peer_if = format!("n{id}{tag}");
        let host = TestHost { name: name.clone(), host_if: host_if.clone(), host_addr, addr: addrs[0] };
        let setup = || -> Result<(), String> {
            ip(&["netns", "add", &name])?;
            ip(&["link", "add", &host_if, "type", "veth", "peer", "name", &peer_if])?;
            ip(&["link", "set", &peer_if, "netns", &name])?;
            ip(&["addr", "add", &format!("{host_addr}/{prefix}"), "dev", &host_if])?;
            ip(&["link", "set", &host_if, "up"])?;
            for addr in addrs {
                ip(&[
                    "netns",
                    "exec",
                    &name,
                    "ip",
                    "addr",
                    "add",
                    &format!("{addr}/{prefix}"),
                    "dev",
                    &peer_if,
                ])?;
            }
            ip(&["netns", "exec", &name, "ip", "link", "set", &peer_if, "up"])?;
            ip(&["netns", "exec", &name, "ip", "link", "set", "lo", "up"])?;
            ip(&["netns", "exec", &name, "ip", "route", "add", "default", "via", &host_addr.to_string()])?;
            Ok(())
        };
        if let Err(e) = setup() {
            drop(host);
            panic!("setting up test host {name}: {e}");
        }
        host
    }

    /// Stops the test unless the host's route to this address leads into this host's link:
    /// no packet may go anywhere but to the test's own hosts.
    pub fn assert_route_is_ours(&self) {
        self.assert_route_to(self.addr);
    }

    /// The same check for another of this host's addresses.
    pub fn assert_route_to(&self, addr: std::net::Ipv4Addr) {
        let route = ip(&["route", "get", &addr.to_string()]).expect("ip route get");
        assert!(
            route
                .split_whitespace()
                .collect::<Vec<_>>()
                .windows(2)
                .any(|w| w == ["dev", self.host_if.as_str()]),
            "the route to {addr} does not lead into test host {}: {route}",
            self.name
        );
    }

    /// Runs `f` on a thread inside this host's network namespace (its sockets are the host's).
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn(f).join().expect("test host thread")
    }

    /// Starts `f` on a thread inside this host's network namespace (a server, say).
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            let ns = std::fs::File::open(&path).expect("namespace file");
            // SAFETY: setns on a file descriptor we own, for this thread only.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns into {path}: {}", std::io::Error::last_os_error());
            f()
        })
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
        let _ = ip(&["link", "del", &self.host_if]);
    }
}
