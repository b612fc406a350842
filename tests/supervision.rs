//! The supervisor seen through the CLI, with real containers of the test scorer: rolling
//! updates and scaling under load with no failed request, logs, crash loops, capacity,
//! recovery after a crash, and a failed update.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use moat_test_support::{Daemon, TEST_IMAGE, home_containers, http, require_test_image};
use serde_json::Value;

const MOAT: &str = env!("CARGO_BIN_EXE_moat");

/// A deployment of the test scorer with 1-second probes that start at once.
fn deployment_yaml(endpoint: &str, count: u32, extra_env: &str) -> String {
    format!(
        "name: blue
endpoint_name: {endpoint}
environment:
  image: {TEST_IMAGE}
  inference_config:
    liveness_route: {{port: 5001, path: /live}}
    readiness_route: {{port: 5001, path: /ready}}
    scoring_route: {{port: 5001, path: /score}}
instance_type: Standard_F1s
instance_count: {count}
request_settings:
  request_timeout_ms: 5000
  max_concurrent_requests_per_instance: 16
liveness_probe: {{initial_delay: 0, period: 1, failure_threshold: 3}}
readiness_probe: {{initial_delay: 0, period: 1, failure_threshold: 3}}
environment_variables:
  VERSION: v1
{extra_env}"
    )
}

fn setup(d: &Daemon, endpoint: &str, count: u32, extra_env: &str) -> (String, Value) {
    let file = d.home.join(format!("{endpoint}.yml"));
    std::fs::write(&file, deployment_yaml(endpoint, count, extra_env)).expect("spec");
    d.cli(&format!("online-endpoint create -n {endpoint} -f examples/model-1/endpoint.yml")).ok();
    let run = d.cli(&format!("online-deployment create -e {endpoint} -f {} --all-traffic", file.display()));
    let view = serde_json::from_str(&run.ok().stdout).expect("json");
    (file.display().to_string(), view)
}

fn tsv(d: &Daemon, line: &str) -> String {
    d.cli(&format!("{line} -o tsv")).ok().stdout.trim().to_string()
}

/// What the load clients saw.
#[derive(Default)]
struct Tally {
    ok: u64,
    failures: Vec<String>,
    versions: BTreeSet<String>,
}

/// Clients that score in a loop until stopped, counting what a user would call a failure.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<Tally>>,
}

impl Load {
    fn start(uri: &str, key: &str, clients: usize) -> Load {
        let rest = uri.strip_prefix("http://").expect("http");
        let (authority, path) = rest.split_once('/').expect("path");
        let addr: SocketAddr = authority.parse().expect("addr");
        let path = format!("/{path}");
        let auth = format!("Bearer {key}");
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..clients)
            .map(|_| {
                let (stop, path, auth) = (stop.clone(), path.clone(), auth.clone());
                std::thread::spawn(move || {
                    let mut tally = Tally::default();
                    while !stop.load(Ordering::Relaxed) {
                        let headers =
                            [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
                        match http(addr, "POST", &path, &headers, r#"{"delay_ms": 20}"#) {
                            Ok(r) if r.status == 200 => {
                                tally.ok += 1;
                                let v: Value = serde_json::from_str(&r.body).unwrap_or_default();
                                tally.versions.insert(v["version"].as_str().unwrap_or_default().to_string());
                            }
                            Ok(r) => tally.failures.push(format!("{}: {}", r.status, r.body)),
                            Err(e) => tally.failures.push(e.to_string()),
                        }
                    }
                    tally
                })
            })
            .collect();
        Load { stop, threads }
    }

    fn finish(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = Tally::default();
        for t in self.threads {
            let tally = t.join().expect("client thread");
            total.ok += tally.ok;
            total.failures.extend(tally.failures);
            total.versions.extend(tally.versions);
        }
        total
    }
}

#[test]
fn an_image_update_a_scale_up_and_a_scale_down_fail_no_request_under_load() {
    require_test_image();
    let d = Daemon::start(MOAT);
    let (file, _) = setup(&d, "roll-ep", 2, "");
    let uri = tsv(&d, "online-endpoint show -n roll-ep --query scoring_uri");
    let key = tsv(&d, "online-endpoint get-credentials -n roll-ep --query primaryKey");
    let v2 = "moat-test-scorer:rollout-v2";
    let tagged =
        std::process::Command::new("docker").args(["tag", TEST_IMAGE, v2]).status().expect("docker tag");
    assert!(tagged.success());

    let load = Load::start(&uri, &key, 4);
    std::thread::sleep(Duration::from_millis(500));
    let updated = d.cli(&format!(
        "online-deployment update -e roll-ep -f {file} --set environment.image={v2} environment_variables.VERSION=v2"
    ));
    let view: Value = serde_json::from_str(&updated.ok().stdout).expect("json");
    assert_eq!(view["provisioning_state"], "Succeeded");
    assert_eq!(view["environment"]["image"], v2);
    std::thread::sleep(Duration::from_millis(300));
    let scaled =
        tsv(&d, "online-deployment update -n blue -e roll-ep --set instance_count=3 --query instance_count");
    assert_eq!(scaled, "3");
    std::thread::sleep(Duration::from_millis(300));
    d.cli("online-deployment update -n blue -e roll-ep --set instance_count=1").ok();
    std::thread::sleep(Duration::from_millis(300));
    let Tally { ok, failures, versions } = load.finish();

    assert!(
        failures.is_empty(),
        "{} failed requests of {}: {:?}",
        failures.len(),
        ok + failures.len() as u64,
        &failures[..failures.len().min(5)]
    );
    assert!(ok > 50, "only {ok} requests");
    assert!(versions.contains("v1") && versions.contains("v2"), "{versions:?}");
    let view: Value =
        serde_json::from_str(&d.cli("online-deployment show -n blue -e roll-ep").ok().stdout).expect("json");
    let instances = view["instances"].as_array().expect("instances");
    assert_eq!(instances.len(), 1);
    assert_eq!(home_containers(&d.home_id()).len(), 1, "drained instances are removed");
    assert_eq!(view["health"], "Healthy");
}

#[test]
fn get_logs_prints_each_instance_or_the_one_named() {
    require_test_image();
    let d = Daemon::start(MOAT);
    setup(&d, "logs-ep", 2, "");
    let all = d.cli("online-deployment get-logs -n blue -e logs-ep").ok().stdout;
    assert!(all.contains("==> blue-0 <==") && all.contains("==> blue-1 <=="), "{all}");
    assert!(all.contains("test-scorer v1 starting"), "{all}");
    let one = d.cli("online-deployment get-logs -n blue -e logs-ep --instance blue-1 --lines 1").ok().stdout;
    assert_eq!(one.lines().count(), 1, "{one}");
    assert!(!one.contains("==>"));
    let missing = d.cli("online-deployment get-logs -n blue -e logs-ep --instance blue-9");
    assert_eq!(missing.code, 1);
    assert!(missing.stderr.contains("instance blue-9 not found"), "{}", missing.stderr);
}

#[test]
fn a_crash_loop_shows_in_show_with_the_last_log_lines() {
    require_test_image();
    let config = "supervisor:\n  restart_backoff_initial_ms: 100\n  restart_backoff_max_ms: 300\n";
    let d = Daemon::start_with_config(MOAT, config);
    setup(&d, "loop-ep", 1, "  EXIT_AFTER_MS: \"1500\"\n");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let view: Value =
            serde_json::from_str(&d.cli("online-deployment show -n blue -e loop-ep").ok().stdout)
                .expect("json");
        let instance = &view["instances"][0];
        if instance["restarts"].as_u64().unwrap_or(0) >= 3 {
            assert_eq!(instance["last_exit_code"], 3);
            let warnings = view["warnings"].to_string();
            assert!(
                warnings.contains("keeps crashing") && warnings.contains("crashing after 1500 ms"),
                "{warnings}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no crash loop seen: {view}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn memory_beyond_the_host_is_refused_before_any_container_starts() {
    require_test_image();
    let d = Daemon::start(MOAT);
    d.cli("online-endpoint create -n big-ep -f examples/model-1/endpoint.yml").ok();
    let file = d.home.join("big.yml");
    std::fs::write(&file, deployment_yaml("big-ep", 1, "").replace("Standard_F1s", "Standard_E8s_v3"))
        .expect("spec");
    let run = d.cli(&format!("online-deployment create -e big-ep -f {}", file.display()));
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("not enough memory"), "{}", run.stderr);
    assert!(run.stderr.contains("one surge instance"), "{}", run.stderr);
    assert!(home_containers(&d.home_id()).is_empty());
    assert_eq!(d.cli("online-deployment show -n blue -e big-ep").code, 1, "nothing was stored");
}

#[test]
fn a_restart_keeps_healthy_containers_and_recreates_a_missing_one() {
    require_test_image();
    let mut d = Daemon::start(MOAT);
    let (_, view) = setup(&d, "heal-ep", 2, "");
    let ids: Vec<String> = view["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .map(|i| i["container_id"].as_str().expect("id").to_string())
        .collect();
    d.kill9();
    let removed =
        std::process::Command::new("docker").args(["rm", "-f", &ids[1]]).output().expect("docker rm");
    assert!(removed.status.success());
    d.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let view: Value =
            serde_json::from_str(&d.cli("online-deployment show -n blue -e heal-ep").ok().stdout)
                .expect("json");
        let instances = view["instances"].as_array().cloned().unwrap_or_default();
        let now: Vec<String> =
            instances.iter().filter_map(|i| i["container_id"].as_str().map(String::from)).collect();
        if instances.len() == 2 && instances.iter().all(|i| i["ready"] == true) {
            assert!(now.contains(&ids[0]), "the healthy container was kept: {now:?} vs {ids:?}");
            assert!(!now.contains(&ids[1]));
            assert_eq!(
                instances.iter().map(|i| i["restarts"].as_u64()).collect::<Vec<_>>(),
                [Some(0), Some(0)]
            );
            break;
        }
        assert!(Instant::now() < deadline, "not healed: {view}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn an_update_whose_containers_cannot_start_fails_with_their_logs() {
    require_test_image();
    let d = Daemon::start(MOAT);
    let (file, _) = setup(&d, "bad-ep", 1, "");
    let run = d.cli(&format!(
        "online-deployment update -e bad-ep -f {file} --set environment_variables.EXIT_AT_START=7"
    ));
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("exited before it was ready"), "{}", run.stderr);
    assert!(run.stderr.contains("told to exit at start with code 7"), "{}", run.stderr);
    let view: Value =
        serde_json::from_str(&d.cli("online-deployment show -n blue -e bad-ep").ok().stdout).expect("json");
    assert_eq!(view["provisioning_state"], "Failed");
    // Updating again with a good spec brings it back.
    let fixed = d.cli(&format!("online-deployment update -e bad-ep -f {file}"));
    let view: Value = serde_json::from_str(&fixed.ok().stdout).expect("json");
    assert_eq!(view["provisioning_state"], "Succeeded");
}

/// A registry on loopback (Debian's `docker-registry`), killed with its storage when dropped.
struct Registry {
    port: u16,
    child: std::process::Child,
    dir: std::path::PathBuf,
}

impl Registry {
    fn start(dir: std::path::PathBuf) -> Registry {
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
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port")
}

fn docker(args: &[&str]) {
    let out = std::process::Command::new("docker").args(args).output().expect("docker");
    assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_missing_image_is_pulled_from_its_registry_with_progress_and_an_unreachable_one_fails_clearly() {
    require_test_image();
    let d = Daemon::start(MOAT);
    let registry = Registry::start(d.home.join("registry"));
    let image = format!("127.0.0.1:{}/moat-pull-{}:v1", registry.port, d.home_id());
    docker(&["tag", TEST_IMAGE, &image]);
    docker(&["push", &image]);
    docker(&["rmi", &image]);

    d.cli("online-endpoint create -n pull-ep -f examples/model-1/endpoint.yml").ok();
    let file = d.home.join("pull.yml");
    std::fs::write(&file, deployment_yaml("pull-ep", 1, "")).expect("spec");
    let run = d.cli(&format!(
        "online-deployment create -e pull-ep -f {} --set environment.image={image}",
        file.display()
    ));
    docker(&["rmi", &image]);
    let run = run.ok();
    assert!(run.stderr.contains(&format!("pulling image {image}")), "progress on stderr: {}", run.stderr);
    assert!(run.stderr.contains("Downloaded newer image"), "{}", run.stderr);
    let view: Value = serde_json::from_str(&run.stdout).expect("json");
    assert_eq!(view["provisioning_state"], "Succeeded");

    let nowhere = format!("127.0.0.1:{}/moat-nowhere:v1", free_port());
    let run = d.cli(&format!(
        "online-deployment create -n green -e pull-ep -f {} --set environment.image={nowhere}",
        file.display()
    ));
    assert_eq!(run.code, 1);
    let last = run.stderr.trim_end().lines().last().unwrap_or_default().to_string();
    assert!(last.contains(&format!("cannot pull image {nowhere}")), "{}", run.stderr);
    assert_eq!(home_containers(&d.home_id()).len(), 1, "the failed create left no container");
}
