//! `moat serve` in a home of its own, and the CLI run against it.

use std::path::PathBuf;
use std::process::Command;

use crate::{DockerCleanup, repo_root, unique_id};

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

/// A process a test started, killed (and reaped) when the test ends however it ends.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
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
    /// How many times the daemon was started: its log has a ready line for each.
    starts: usize,
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
            starts: 0,
        };
        daemon.spawn();
        daemon
    }

    /// The running daemon's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
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
        self.starts += 1;
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
        self.ready_line_addr("metrics")
    }

    /// Where the daemon's plaintext scoring listener is, from its ready line in the log.
    pub fn scoring_addr(&self) -> std::net::SocketAddr {
        self.ready_line_addr("scoring")
    }

    /// From the ready line of the latest start (written just after the socket appears).
    fn ready_line_addr(&self, field: &str) -> std::net::SocketAddr {
        let line = crate::wait_until(std::time::Duration::from_secs(10), "the ready line", || {
            let log = self.log();
            let ready: Vec<&str> = log.lines().filter(|l| l.contains("moat serve is ready")).collect();
            match ready.len() >= self.starts {
                true => Ok(ready.last().map(|l| l.to_string()).unwrap_or_default()),
                false => Err(format!("{} ready lines for {} starts", ready.len(), self.starts)),
            }
        });
        let url = line
            .split(&format!("\"{field}\":\"http://"))
            .nth(1)
            .and_then(|r| r.split('/').next())
            .unwrap_or_else(|| panic!("no {field} address in {line}"));
        url.parse().expect("an address")
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

    /// SIGTERM, and a second one once the daemon drains, so that it does not wait out
    /// `shutdown_delay_s`; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let drains = self.log().matches("draining: /readyz answers 503").count();
        self.signal("TERM");
        crate::wait_until(std::time::Duration::from_secs(10), "the drain to begin", || {
            let now = self.log().matches("draining: /readyz answers 503").count();
            if now > drains { Ok(()) } else { Err(self.log()) }
        });
        self.signal("TERM");
        self.wait_exit()
    }

    /// Sends a signal (`TERM`, `INT`, `HUP`) to the running daemon, and does not wait.
    pub fn signal(&self, name: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill").args([&format!("-{name}"), &child.id().to_string()]).status();
        }
    }

    /// Waits for the daemon to exit; its exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        child.wait().ok().and_then(|s| s.code())
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// `moat serve --upgrade` on this home, with the flags the daemon was started with (its
    /// metrics listener on `metrics_listen`); it logs to `upgrade.log` in the home.
    pub fn upgrade_command(&self, metrics_listen: &str) -> Command {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.home.join("upgrade.log"))
            .expect("log file");
        let mut command = Command::new(&self.bin);
        command
            .args(["serve", "--upgrade", "--home"])
            .arg(&self.home)
            .args(["--listen", &self.listen, "--metrics-listen", metrics_listen])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log);
        command
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
