//! `moat serve --upgrade`: the daemon is replaced under load without a failed request or a
//! restarted container; an upgrade that cannot start leaves the old daemon serving; SIGUSR2
//! (systemd's ExecReload) does the same from the binary's path and tells systemd the new pid.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use moat_test_support::{
    Daemon, Killed, Load, TempDir, home_containers, http, require_test_image, scorer_deployment, wait_until,
};

const MOAT: &str = env!("CARGO_BIN_EXE_moat");

/// `moat serve --upgrade` on the daemon's home, its metrics listener on `metrics`.
fn upgrade(d: &Daemon, metrics: &str, extra: &[&str]) -> Command {
    let mut command = d.upgrade_command(metrics);
    command.args(extra);
    command
}

fn tsv(d: &Daemon, line: &str) -> String {
    d.cli(&format!("{line} -o tsv")).ok().stdout.trim().to_string()
}

/// An endpoint with a two-instance deployment taking all traffic; its scoring URI and key.
fn endpoint(d: &Daemon, name: &str) -> (String, String) {
    d.cli(&format!("online-endpoint create -n {name} -f examples/model-1/endpoint.yml")).ok();
    let file = d.home.join("blue.yml");
    std::fs::write(&file, scorer_deployment(name, "blue", 2)).expect("spec");
    d.cli(&format!("online-deployment create -f {} --all-traffic", file.display())).ok();
    let uri = tsv(d, &format!("online-endpoint show -n {name} --query scoring_uri"));
    let key = tsv(d, &format!("online-endpoint get-credentials -n {name} --query primaryKey"));
    (uri, key)
}

/// Each container's id, start time and restart count.
fn containers(home_id: &str) -> Vec<String> {
    let mut seen: Vec<String> = home_containers(home_id)
        .iter()
        .map(|id| {
            let out = Command::new("docker")
                .args([
                    "inspect",
                    "-f",
                    "{{.Id}} {{.State.StartedAt}} {{.RestartCount}} {{.State.Running}}",
                    id,
                ])
                .output()
                .expect("docker inspect");
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        })
        .collect();
    seen.sort();
    seen
}

fn addr_and_path(uri: &str) -> (SocketAddr, String) {
    let rest = uri.strip_prefix("http://").expect("http");
    let (authority, path) = rest.split_once('/').expect("path");
    (authority.parse().expect("address"), format!("/{path}"))
}

/// What a keep-alive client saw.
#[derive(Debug, Default)]
struct KeptAlive {
    ok: u64,
    connections: u64,
    failures: Vec<String>,
}

/// Clients that keep their connection open from request to request, as pools do, and open a
/// new one only when the server says `Connection: close` (or closes it after an answer).
struct KeepAlive {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<KeptAlive>>,
}

impl KeepAlive {
    fn start(uri: &str, key: &str, clients: usize) -> KeepAlive {
        let (addr, path) = addr_and_path(uri);
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..clients)
            .map(|_| {
                let (stop, path, key) = (stop.clone(), path.clone(), key.to_string());
                std::thread::spawn(move || keep_alive_client(addr, &path, &key, &stop))
            })
            .collect();
        KeepAlive { stop, threads }
    }

    fn finish(self) -> KeptAlive {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = KeptAlive::default();
        for t in self.threads {
            let one = t.join().expect("client");
            all.ok += one.ok;
            all.connections += one.connections;
            all.failures.extend(one.failures);
        }
        all
    }
}

fn keep_alive_client(addr: SocketAddr, path: &str, key: &str, stop: &AtomicBool) -> KeptAlive {
    let mut seen = KeptAlive::default();
    let body = r#"{"delay_ms": 5}"#;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut conn: Option<BufReader<TcpStream>> = None;
    while !stop.load(Ordering::Relaxed) {
        if conn.is_none() {
            match TcpStream::connect(addr) {
                Ok(s) => {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                    seen.connections += 1;
                    conn = Some(BufReader::new(s));
                }
                Err(e) => {
                    seen.failures.push(format!("connect: {e}"));
                    continue;
                }
            }
        }
        let Some(reader) = conn.as_mut() else { continue };
        let answer = reader
            .get_mut()
            .write_all(request.as_bytes())
            .map_err(|e| e.to_string())
            .and_then(|()| read_answer(reader));
        match answer {
            Ok((status, close)) => {
                if status == 200 {
                    seen.ok += 1;
                } else {
                    seen.failures.push(format!("status {status}"));
                }
                if close {
                    conn = None;
                }
            }
            Err(e) => {
                seen.failures.push(format!("on a connection that had {} answers: {e}", seen.ok));
                conn = None;
            }
        }
    }
    seen
}

/// The status and whether the server closes the connection after this answer.
fn read_answer(reader: &mut BufReader<TcpStream>) -> Result<(u16, bool), String> {
    let mut line = String::new();
    if reader.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
        return Err("closed before an answer".into());
    }
    let status =
        line.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or(format!("status line {line:?}"))?;
    let (mut length, mut close) = (0usize, false);
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).map_err(|e| e.to_string())?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').unwrap_or((header, ""));
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().map_err(|_| format!("length {value:?}"))?,
            "connection" => close = value.trim().eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).map_err(|e| e.to_string())?;
    Ok((status, close))
}

#[test]
fn serve_upgrade_under_load_fails_no_request_and_restarts_no_container() {
    require_test_image();
    let mut d = Daemon::start(MOAT);
    let (uri, key) = endpoint(&d, "up-ep");
    let before = containers(&d.home_id());
    assert_eq!(before.len(), 2, "{before:?}");
    let old_pid = d.pid().expect("pid");

    let fresh = Load::start(&uri, &key, 2);
    let kept = KeepAlive::start(&uri, &key, 2);
    fresh.wait_for_answers(20);
    let new = Killed(upgrade(&d, "127.0.0.1:0", &[]).spawn().expect("moat serve --upgrade"));
    assert_eq!(d.wait_exit(), Some(0), "the old daemon drains and exits 0");
    // The new one answers the CLI and keeps serving the load.
    wait_until(Duration::from_secs(10), "the new daemon's admin socket", || {
        let run = d.cli("online-endpoint show -n up-ep");
        if run.code == 0 { Ok(()) } else { Err(run.stderr) }
    });
    fresh.wait_for_answers(20);
    let (fresh, kept) = (fresh.finish(), kept.finish());
    fresh.assert_no_failures();
    assert!(kept.failures.is_empty(), "keep-alive clients: {kept:?}");
    assert!(kept.ok > kept.connections, "the clients reused connections: {kept:?}");
    // The old daemon's answers marked their connections closing: the clients came back anew.
    assert!(kept.connections > 2, "the keep-alive clients moved to new connections: {kept:?}");
    eprintln!("through the upgrade: {} fresh-connection answers, keep-alive {kept:?}", fresh.ok);

    assert_eq!(containers(&d.home_id()), before, "the same containers, not restarted");
    let log = std::fs::read_to_string(d.home.join("upgrade.log")).expect("log");
    assert!(log.contains(&format!("\"from\":{old_pid}")) && log.contains("took over"), "{log}");
    assert!(std::fs::metadata(d.socket()).is_ok(), "admin.sock is the new daemon's");
    drop(new);
}

#[test]
fn an_upgrade_that_cannot_start_leaves_the_old_daemon_serving() {
    require_test_image();
    let d = Daemon::start(MOAT);
    let (uri, key) = endpoint(&d, "keep-ep");
    let (addr, path) = addr_and_path(&uri);
    let auth = format!("Bearer {key}");
    let score = || http(addr, "POST", &path, &[("Authorization", &auth)], "{}").expect("score").status;

    // A config that does not check out: refused before the running daemon is asked anything.
    let bad = d.home.join("bad.yaml");
    std::fs::write(&bad, "listen: 127.0.0.1:0\nworkers: many\n").expect("config");
    let run =
        upgrade(&d, "127.0.0.1:0", &["--config", bad.to_str().expect("utf-8")]).status().expect("upgrade");
    assert_eq!(run.code(), Some(2));
    // Listeners that are not the running daemon's: refused after it stood by, so it resumes.
    let run = upgrade(&d, "127.0.0.2:0", &[]).status().expect("upgrade");
    assert_eq!(run.code(), Some(1));
    let log = std::fs::read_to_string(d.home.join("upgrade.log")).expect("log");
    assert!(log.contains("keeps the running daemon's listeners") && log.contains("metrics_listen"), "{log}");

    assert_eq!(score(), 200, "the old daemon scores");
    // It takes commands again, and acts on them.
    d.cli("online-endpoint update -n keep-ep --traffic blue=0").ok();
    assert_eq!(score(), 404, "no traffic: the change took effect");
    d.cli("online-endpoint update -n keep-ep --traffic blue=100").ok();
    assert!(d.log().contains("serve --upgrade did not take over; serving on"), "{}", d.log());
    assert_eq!(score(), 200);
}

#[test]
fn sigusr2_upgrades_from_the_binarys_path_and_tells_systemd_the_new_pid() {
    require_test_image();
    let dir = TempDir::new("moat-test-notify");
    let path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&path).expect("notify socket");
    socket.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    let mut d = Daemon::start_with_env(MOAT, &[("NOTIFY_SOCKET", path.to_str().expect("utf-8"))]);
    let (uri, key) = endpoint(&d, "usr-ep");
    let mut buf = [0u8; 512];
    let mut recv = || {
        let n = socket.recv(&mut buf).expect("a message from moat");
        String::from_utf8_lossy(&buf[..n]).trim().to_string()
    };
    assert_eq!(recv(), "READY=1");
    let old_pid = d.pid().expect("pid");
    d.signal("USR2");
    let mainpid = recv();
    let new_pid: u32 = mainpid.strip_prefix("MAINPID=").and_then(|p| p.parse().ok()).expect(&mainpid);
    assert_ne!(new_pid, old_pid);
    assert_eq!(recv(), "READY=1");
    // The new daemon is not the test's child: it is killed by pid when the test ends.
    struct ByPid(u32);
    impl Drop for ByPid {
        fn drop(&mut self) {
            let _ = Command::new("kill").args(["-KILL", &self.0.to_string()]).status();
        }
    }
    let _new = ByPid(new_pid);
    assert_eq!(d.wait_exit(), Some(0));
    let (addr, path) = addr_and_path(&uri);
    let auth = format!("Bearer {key}");
    let reply = http(addr, "POST", &path, &[("Authorization", &auth)], "{}").expect("score");
    assert_eq!(reply.status, 200, "the new daemon scores: {}", reply.body);
    assert!(std::path::Path::new(&format!("/proc/{new_pid}")).exists());
}
