//! Probes, restarts, hardening and logs, with real containers of the test scorer, whose
//! health each test flips through requests to it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use moat_supervisor::{
    Adoption, BackoffSettings, Config, DeploymentId, DeploymentSpec, InstanceState, InstanceStatus,
    ProbeSettings, Route, Supervisor,
};
use moat_test_support::{DockerCleanup, TEST_IMAGE, http, require_test_image, unique_id};

fn probe(failure_threshold: u32, success_threshold: u32) -> ProbeSettings {
    ProbeSettings {
        initial_delay: Duration::ZERO,
        period: Duration::from_millis(200),
        timeout: Duration::from_secs(1),
        success_threshold,
        failure_threshold,
    }
}

fn spec(deployment: &str, env: &[(&str, &str)]) -> DeploymentSpec {
    let route = |path: &str| Route { port: 5001, path: path.to_string() };
    DeploymentSpec {
        id: DeploymentId::new("ep", deployment),
        image: TEST_IMAGE.into(),
        build: None,
        instance_count: 1,
        env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        mounts: Vec::new(),
        liveness_route: route("/live"),
        readiness_route: route("/ready"),
        scoring_route: route("/score"),
        liveness_probe: probe(2, 1),
        readiness_probe: probe(3, 2),
        memory_bytes: 2 << 30,
        cpus: 1,
        drain_grace: Duration::from_secs(1),
        private: false,
        dns: Vec::new(),
    }
}

async fn supervisor(home: &str) -> Supervisor {
    let backoff = BackoffSettings {
        initial: Duration::from_millis(100),
        max: Duration::from_millis(400),
        reset_after: Duration::from_secs(60),
    };
    Supervisor::connect(Config { stop_timeout: Duration::from_secs(2), backoff, ..Config::new(home) })
        .await
        .expect("Docker is running")
}

fn only(sup: &Supervisor, deployment: &str) -> InstanceStatus {
    let mut instances = sup.instances(&DeploymentId::new("ep", deployment));
    assert_eq!(instances.len(), 1, "{instances:?}");
    instances.remove(0)
}

/// Waits (up to 20 s) until the one instance satisfies `done`.
async fn until(
    sup: &Supervisor,
    deployment: &str,
    what: &str,
    done: impl Fn(&InstanceStatus) -> bool,
) -> InstanceStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = only(sup, deployment);
        if done(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "never {what}: {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn request(
    status: &InstanceStatus,
    method: &'static str,
    path: &'static str,
    body: &'static str,
) -> String {
    let addr = SocketAddr::new(status.address.expect("address"), 5001);
    let reply = tokio::task::spawn_blocking(move || http(addr, method, path, &[], body))
        .await
        .expect("join")
        .expect("request to the container");
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body
}

fn leased(sup: &Supervisor, deployment: &str) -> bool {
    sup.leases().get(&DeploymentId::new("ep", deployment)).is_some_and(|l| !l.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_failures_take_an_instance_out_of_routing_and_successes_bring_it_back() {
    require_test_image();
    let home = unique_id();
    let _cleanup = DockerCleanup::new(&home);
    let sup = supervisor(&home).await;
    sup.apply(spec("ready", &[]), Adoption::Trusted).await.expect("up");
    let first = only(&sup, "ready");
    assert!(leased(&sup, "ready"));

    request(&first, "POST", "/control", r#"{"ready": false}"#).await;
    let out = until(&sup, "ready", "out of routing", |s| !s.life.ready).await;
    assert!(!leased(&sup, "ready"));
    assert_eq!(
        (out.life.state, out.life.restarts),
        (InstanceState::Running, 0),
        "not ready is not a restart"
    );
    assert!(out.life.reason.as_deref().is_some_and(|r| r.contains("readiness probe failed")), "{out:?}");

    request(&first, "POST", "/control", r#"{"ready": true}"#).await;
    until(&sup, "ready", "back in routing", |s| s.life.ready).await;
    assert!(leased(&sup, "ready"));
    assert_eq!(only(&sup, "ready").container_id, first.container_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_failures_restart_the_same_container() {
    require_test_image();
    let home = unique_id();
    let _cleanup = DockerCleanup::new(&home);
    let sup = supervisor(&home).await;
    sup.apply(spec("live", &[]), Adoption::Trusted).await.expect("up");
    let first = only(&sup, "live");

    request(&first, "POST", "/control", r#"{"live": false}"#).await;
    let restarted =
        until(&sup, "live", "restarted and ready", |s| s.life.restarts == 1 && s.life.ready).await;
    assert_eq!(restarted.container_id, first.container_id, "restarted, not replaced");
    assert_eq!(restarted.life.state, InstanceState::Running);
    // A fresh process is live again: no second restart follows within four liveness periods
    // (what cannot happen has no condition to poll for).
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(only(&sup, "live").life.restarts, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_that_exits_after_it_was_ready_is_restarted_again_and_again() {
    require_test_image();
    let home = unique_id();
    let _cleanup = DockerCleanup::new(&home);
    let sup = supervisor(&home).await;
    sup.apply(spec("crash", &[("EXIT_AFTER_MS", "700")]), Adoption::Trusted)
        .await
        .expect("ready before its first crash");
    let crashing = until(&sup, "crash", "restarted three times", |s| s.life.restarts >= 3).await;
    assert_eq!(crashing.life.last_exit_code, Some(3));
    assert!(crashing.last_logs.contains("crashing after 700 ms"), "{:?}", crashing.last_logs);
    assert!(
        crashing.life.reason.as_deref().is_some_and(|r| r.contains("exited with code 3")),
        "{crashing:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_are_hardened_and_limited_by_their_sku() {
    require_test_image();
    let home = unique_id();
    let _cleanup = DockerCleanup::new(&home);
    let sup = supervisor(&home).await;
    let mut big = spec("hard", &[]);
    big.cpus = 64;
    sup.apply(big, Adoption::Trusted).await.expect("up");
    let status = only(&sup, "hard");
    assert!(status.docker_warnings.is_empty(), "Docker discarded a limit: {:?}", status.docker_warnings);
    let seen: serde_json::Value =
        serde_json::from_str(&request(&status, "GET", "/inspect", "").await).expect("json");

    let proc_status = seen["proc_status"].as_str().expect("/proc/1/status");
    let field = |name: &str| {
        proc_status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim).unwrap_or_default().to_string()
    };
    // CHOWN, DAC_OVERRIDE, FOWNER, SETGID, SETUID: bits 0, 1, 3, 6, 7.
    assert_eq!(field("CapBnd:"), "00000000000000cb", "{proc_status}");
    assert_eq!(field("NoNewPrivs:"), "1");
    let cgroup = &seen["cgroup"];
    let read = |v1: &str, v2: &str| {
        cgroup[format!("/sys/fs/cgroup/{v1}")]
            .as_str()
            .or(cgroup[format!("/sys/fs/cgroup/{v2}")].as_str())
            .map(String::from)
    };
    let memory = read("memory/memory.limit_in_bytes", "memory.max").expect("memory limit");
    assert_eq!(memory, (2u64 << 30).to_string());
    assert_eq!(read("pids/pids.max", "pids.max").as_deref(), Some("2048"));
    let host_cpus = sup.host().cpus as i64;
    let quota: i64 = match read("cpu/cpu.cfs_quota_us", "cpu.max") {
        Some(q) => q.split_whitespace().next().and_then(|q| q.parse().ok()).expect("quota"),
        None => panic!("no cpu limit in {cgroup}"),
    };
    let period: i64 = read("cpu/cpu.cfs_period_us", "cpu.max")
        .and_then(|p| p.split_whitespace().last().and_then(|p| p.parse().ok()))
        .expect("period");
    assert_eq!(quota / period, host_cpus, "64 vCPUs are capped at the host's {host_cpus}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_come_from_each_instance() {
    require_test_image();
    let home = unique_id();
    let _cleanup = DockerCleanup::new(&home);
    let sup = supervisor(&home).await;
    let mut two = spec("logs", &[("VERSION", "v7")]);
    two.instance_count = 2;
    sup.apply(two, Adoption::Trusted).await.expect("up");
    let all = sup.logs(&DeploymentId::new("ep", "logs"), None, 5000).await.expect("logs");
    assert_eq!(all.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>(), ["logs-0", "logs-1"]);
    assert!(all.iter().all(|(_, text)| text.contains("test-scorer v7 starting")), "{all:?}");
    let one = sup.logs(&DeploymentId::new("ep", "logs"), Some("logs-1"), 1).await.expect("logs");
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].1.lines().count(), 1, "--lines 1");
}
