//! The supervisor seen through the CLI, with real containers of the test scorer: rolling
//! updates and scaling under load with no failed request, logs, crash loops, capacity,
//! recovery after a crash, and a failed update.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use moat_test_support::{
    Daemon, Load, Registry, TEST_IMAGE, Tally, free_port, home_containers, http, require_test_image,
    scorer_deployment, wait_until,
};
use serde_json::Value;

const MOAT: &str = env!("CARGO_BIN_EXE_moat");

/// A deployment `blue` of the test scorer with 1-second probes, answering as version v1,
/// with more environment variables (`  NAME: value` lines).
fn deployment_yaml(endpoint: &str, count: u32, extra_env: &str) -> String {
    scorer_deployment(endpoint, "blue", count).replace("VERSION: blue", "VERSION: v1") + extra_env
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
    load.wait_for_answers(20);
    let updated = d.cli(&format!(
        "online-deployment update -e roll-ep -f {file} --set environment.image={v2} environment_variables.VERSION=v2"
    ));
    let view: Value = serde_json::from_str(&updated.ok().stdout).expect("json");
    assert_eq!(view["provisioning_state"], "Succeeded");
    assert_eq!(view["environment"]["image"], v2);
    load.wait_for_answers(10);
    let scaled =
        tsv(&d, "online-deployment update -n blue -e roll-ep --set instance_count=3 --query instance_count");
    assert_eq!(scaled, "3");
    load.wait_for_answers(10);
    d.cli("online-deployment update -n blue -e roll-ep --set instance_count=1").ok();
    load.wait_for_answers(10);
    let tally = load.finish();
    tally.assert_no_failures();
    let Tally { ok, versions, .. } = tally;
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
    assert_eq!(missing.code, 3, "the named instance does not exist");
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
    assert_eq!(d.cli("online-deployment show -n blue -e big-ep").code, 3, "nothing was stored");
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

/// Tells one instance's container (at its address on the deployment's network) what to do.
fn control(view: &Value, instance: &str, body: &str) {
    let address = view["instances"]
        .as_array()
        .and_then(|all| all.iter().find(|i| i["name"] == instance))
        .and_then(|i| i["address"].as_str())
        .unwrap_or_else(|| panic!("no address for {instance}: {view}"));
    let addr = SocketAddr::new(address.parse().expect("ip"), 5001);
    let reply =
        http(addr, "POST", "/control", &[("Content-Type", "application/json")], body).expect("control");
    assert_eq!(reply.status, 200, "{}", reply.body);
}

fn show(d: &Daemon, endpoint: &str) -> Value {
    serde_json::from_str(&d.cli(&format!("online-deployment show -n blue -e {endpoint}")).ok().stdout)
        .expect("json")
}

/// Waits until `show` lists these instances as ready and the rest as not.
fn wait_readiness(d: &Daemon, endpoint: &str, ready: &[bool]) -> Value {
    wait_until(Duration::from_secs(30), &format!("readiness {ready:?}"), || {
        let view = show(d, endpoint);
        let seen: Vec<bool> = view["instances"]
            .as_array()
            .map(|all| all.iter().map(|i| i["ready"] == true).collect())
            .unwrap_or_default();
        if seen == ready { Ok(view) } else { Err(view.to_string()) }
    })
}

/// Two instances, the second told `what` (not to be ready, say); the daemon is SIGKILLed and
/// started again, so that it adopts both; `during` runs once an update is under way.
/// Returns what a light load (one request at a time) saw over the whole update.
fn update_after_adoption(endpoint: &str, what: &str, during: impl FnOnce(&Daemon, &Value)) -> (Tally, Value) {
    require_test_image();
    let mut d = Daemon::start(MOAT);
    let (file, view) = setup(&d, endpoint, 2, "");
    control(&view, "blue-1", what);
    wait_readiness(&d, endpoint, &[true, false]);
    d.kill9();
    d.restart();
    let adopted = wait_readiness(&d, endpoint, &[true, false]);
    let uri = tsv(&d, &format!("online-endpoint show -n {endpoint} --query scoring_uri"));
    let key = tsv(&d, &format!("online-endpoint get-credentials -n {endpoint} --query primaryKey"));
    let load = Load::start(&uri, &key, 1);
    let update = {
        let (bin, home) = (d.bin.clone(), d.home.clone());
        let args =
            format!("online-deployment update -e {endpoint} -f {file} --set environment_variables.X=y");
        std::thread::spawn(move || {
            let words: Vec<&str> = args.split_whitespace().collect();
            moat_test_support::run_moat(&bin, &home, &words)
        })
    };
    during(&d, &adopted);
    let updated = update.join().expect("update thread").ok();
    let tally = load.finish();
    (tally, serde_json::from_str(&updated.stdout).expect("json"))
}

fn assert_rolled(tally: &Tally, view: &Value) {
    tally.assert_no_failures();
    assert!(tally.ok > 10, "only {} requests", tally.ok);
    assert_eq!(view["provisioning_state"], "Succeeded", "{view}");
    assert_eq!(view["environment_variables"]["X"], "y");
    assert_eq!(view["instances"].as_array().map(Vec::len), Some(2), "{view}");
}

#[test]
fn a_rolling_update_after_adopting_an_unready_instance_fails_no_request() {
    let (tally, view) = update_after_adoption("adopt-ep", r#"{"ready": false}"#, |_, _| {});
    assert_rolled(&tally, &view);
}

#[test]
fn a_rolling_update_after_adopting_an_instance_still_starting_fails_no_request() {
    // Ready again a few seconds after the restart: it is adopted while it still starts.
    let (tally, view) =
        update_after_adoption("start-ep", r#"{"ready": false, "ready_in_ms": 6000}"#, |_, _| {});
    assert_rolled(&tally, &view);
}

#[test]
fn a_rolling_update_fails_no_request_when_an_adopted_instance_exits_during_it() {
    let (tally, view) = update_after_adoption("exit-ep", r#"{"ready": false}"#, |_, adopted| {
        control(adopted, "blue-1", r#"{"exit": 5}"#);
    });
    assert_rolled(&tally, &view);
}
