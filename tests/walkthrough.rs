//! End to end with real Docker: the seed's walkthrough with `az ml` replaced by `moat`, keys,
//! a second model, a failing create, and crash-safety of every mutating command.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use moat_test_support::{
    Daemon, Reply, SCORER_IMAGE, home_containers, home_networks, http, repo_root, require_scorer_image,
};
use serde_json::{Value, json};

const MOAT: &str = env!("CARGO_BIN_EXE_moat");
const ENDPOINT: &str = "-f examples/model-1/endpoint.yml";
const BLUE: &str = "-f examples/model-1/blue-deployment.yml";
const SAMPLE: &str = "examples/model-1/sample-request.json";
/// The seed's documented predictions for the sample request.
const SEED: [f64; 2] = [11055.977245525679, 4503.079536107787];

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The predictions match to 9 significant digits.
fn assert_predictions(body: &str, want: &[f64]) {
    let got: Vec<f64> = serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(got.len(), want.len(), "{body}");
    for (g, w) in got.iter().zip(want) {
        assert!(((g - w) / w).abs() < 1e-9, "{g} vs {w}");
    }
}

fn show(d: &Daemon, line: &str) -> Value {
    parse(&d.cli(line).ok().stdout)
}

fn tsv(d: &Daemon, line: &str) -> String {
    d.cli(&format!("{line} -o tsv")).ok().stdout.trim_end_matches('\n').to_string()
}

fn create_blue(d: &Daemon, endpoint: &str, sets: &str) -> Value {
    let line = format!(
        "online-deployment create --name blue --endpoint {endpoint} {BLUE} --all-traffic --set environment.image={SCORER_IMAGE} {sets}"
    );
    show(d, &line)
}

/// POSTs the sample request to a scoring_uri as a client would.
fn score(uri: &str, key: Option<&str>) -> Reply {
    let rest = uri.strip_prefix("http://").expect("http scoring_uri");
    let (authority, path) = rest.split_once('/').expect("path");
    let addr: SocketAddr = authority.parse().expect("address");
    let body = std::fs::read_to_string(repo_root().join(SAMPLE)).expect("sample request");
    let auth = key.map(|k| format!("Bearer {k}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a));
    }
    http(addr, "POST", &format!("/{path}"), &headers, &body).expect("scoring request")
}

/// Invokes until it succeeds: a restarted daemon's adopted instance passes its first probe
/// within a probe period.
fn invoke_after_restart(d: &Daemon, endpoint: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let run = d.cli(&format!("online-endpoint invoke --name {endpoint} --request-file {SAMPLE}"));
        if run.code == 0 || Instant::now() > deadline {
            return run.ok().stdout;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_seeds_walkthrough_scores_the_sample_model_with_key_auth() {
    require_scorer_image();
    let d = Daemon::start(MOAT);
    d.cli(&format!("online-endpoint create --name walk-ep {ENDPOINT}")).ok();
    let blue = create_blue(&d, "walk-ep", "");
    assert_eq!(blue["provisioning_state"], "Succeeded");
    assert_eq!(blue["health"], "Healthy");
    assert_eq!(blue["instances"][0]["state"], "running");

    let invoked = d.cli(&format!("online-endpoint invoke --name walk-ep --request-file {SAMPLE}")).ok();
    assert_predictions(&invoked.stdout, &SEED);

    let key = tsv(&d, "online-endpoint get-credentials -n walk-ep --query primaryKey");
    let secondary = tsv(&d, "online-endpoint get-credentials -n walk-ep --query secondaryKey");
    let uri = tsv(&d, "online-endpoint show -n walk-ep --query scoring_uri");
    assert!(uri.ends_with("/endpoints/walk-ep/score"), "{uri}");
    assert_eq!(show(&d, "online-endpoint show -n walk-ep --query traffic"), json!({"blue": 100}));

    let ok = score(&uri, Some(&key));
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_predictions(&ok.body, &SEED);
    assert_eq!(ok.header("azureml-model-deployment"), Some("blue"));
    assert!(ok.header("x-request-id").is_some_and(|id| id.len() == 36));
    assert_eq!(score(&uri, Some(&secondary)).status, 200, "the secondary key works too");
    assert_eq!(score(&uri, Some("not-the-key")).status, 401);
    assert_eq!(score(&uri, None).status, 401);

    // A regenerated key replaces the old one for the very next request.
    d.cli("online-endpoint regenerate-keys -n walk-ep --key-type primary").ok();
    let new_key = tsv(&d, "online-endpoint get-credentials -n walk-ep --query primaryKey");
    assert_ne!(new_key, key);
    assert_eq!(score(&uri, Some(&key)).status, 401);
    assert_eq!(score(&uri, Some(&new_key)).status, 200);
    assert_eq!(score(&uri, Some(&secondary)).status, 200, "the other key is untouched");
    d.cli("online-endpoint regenerate-keys -n walk-ep --key-type secondary --key-value my-own-secondary-key-0001")
        .ok();
    assert_eq!(score(&uri, Some("my-own-secondary-key-0001")).status, 200);
    assert_eq!(score(&uri, Some(&secondary)).status, 401);

    // Keys never reach the log.
    let log = d.log();
    assert!(log.contains("\"status\":200"), "access log lines: {log}");
    for k in [&key, &new_key, &secondary] {
        assert!(!log.contains(k.as_str()), "a key in the log");
    }
}

/// The seed's second scenario, its command run by a shell exactly as the seed writes it.
#[test]
fn the_seeds_private_command_runs_word_for_word_and_scores_from_the_private_network() {
    require_scorer_image();
    let d = Daemon::start(MOAT);
    d.cli(&format!("online-endpoint create --name private-ep {ENDPOINT}")).ok();
    let bin_dir = std::path::Path::new(MOAT).parent().expect("bin dir").display().to_string();
    let seed = r#"moat online-deployment create --name blue --endpoint $ENDPOINT_NAME -f examples/model-1/blue-deployment.yml --all-traffic --set environment.image="$IMAGE" private_network_connection="true""#;
    let run = std::process::Command::new("bash")
        .args(["-c", seed])
        .current_dir(repo_root())
        .env("PATH", format!("{bin_dir}:{}", std::env::var("PATH").unwrap_or_default()))
        .env("MOAT_HOME", &d.home)
        .env("ENDPOINT_NAME", "private-ep")
        .env("IMAGE", SCORER_IMAGE)
        .output()
        .expect("bash");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(stderr.contains("public network access disabled"), "no warning about the workspace: {stderr}");
    let blue = parse(&String::from_utf8_lossy(&run.stdout));
    assert_eq!(blue["provisioning_state"], "Succeeded");
    assert_eq!(blue["egress_public_network_access"], "disabled");
    assert_eq!(show(&d, "workspace show --query public_network_access"), json!("disabled"));
    let network = format!("moat-{}-private-ep-blue", d.home_id());
    let internal = std::process::Command::new("docker")
        .args(["network", "inspect", "-f", "{{.Internal}}", &network])
        .output()
        .expect("docker");
    assert_eq!(String::from_utf8_lossy(&internal.stdout).trim(), "true", "{network} is not internal");
    // invoke comes from loopback, a private network.
    let invoked = d.cli(&format!("online-endpoint invoke --name private-ep --request-file {SAMPLE}")).ok();
    assert_predictions(&invoked.stdout, &SEED);

    // Public access may come back, with a warning naming the deployment it leaves unsupported.
    let enabled = d.cli("workspace update --public-network-access enabled").ok();
    assert!(enabled.stderr.contains("private-ep/blue"), "{}", enabled.stderr);
    assert!(enabled.stderr.contains("egress disabled"), "{}", enabled.stderr);
}

#[test]
fn a_second_model_file_gives_its_own_predictions_and_its_mount_is_read_only() {
    require_scorer_image();
    let d = Daemon::start(MOAT);
    // Beside the home, never in it: no container may see the home.
    let models = moat_test_support::TempDir::new("moat-models");
    let model_dir = models.path().join("model-2");
    std::fs::create_dir_all(&model_dir).expect("model dir");
    let model = r#"{"coef": [1, 0, 0, 0, 0, 0, 0, 0, 0, 1], "intercept": 0.5}"#;
    std::fs::write(model_dir.join("model-2.json"), model).expect("model");
    d.cli(&format!("online-endpoint create --name model-two {ENDPOINT}")).ok();
    let blue = create_blue(&d, "model-two", &format!("model.path={}", model_dir.display()));
    let invoked = d.cli(&format!("online-endpoint invoke --name model-two --request-file {SAMPLE}")).ok();
    assert_predictions(&invoked.stdout, &[11.5, 11.5]);

    // The image has no shell; the scorer itself tries the write.
    let container = blue["instances"][0]["container_id"].as_str().expect("container id").to_string();
    let target = "/var/azureml-app/azureml-models/blue-model/1/model-2/new-file";
    let write = std::process::Command::new("docker")
        .args(["exec", &container, "/sample-scorer", "--try-write", target])
        .output()
        .expect("docker exec");
    let stderr = String::from_utf8_lossy(&write.stderr);
    assert!(!write.status.success(), "a write to the model mount succeeded");
    assert!(stderr.contains("Read-only file system"), "{stderr}");
    assert!(!model_dir.join("new-file").exists());
}

#[test]
fn a_deployment_whose_container_exits_fails_with_its_logs_and_takes_no_traffic() {
    require_scorer_image();
    let mut d = Daemon::start(MOAT);
    let models = moat_test_support::TempDir::new("moat-models");
    let empty = models.path().join("no-model");
    std::fs::create_dir_all(&empty).expect("dir");
    d.cli(&format!("online-endpoint create --name fail-ep {ENDPOINT}")).ok();
    let run = d.cli(&format!(
        "online-deployment create -n blue -e fail-ep {BLUE} --all-traffic --set environment.image={SCORER_IMAGE} model.path={}",
        empty.display()
    ));
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("exited before it was ready"), "{}", run.stderr);
    assert!(run.stderr.contains("no *.json model file"), "the container's log lines: {}", run.stderr);
    let shown = show(&d, "online-deployment show -n blue -e fail-ep");
    assert_eq!(shown["provisioning_state"], "Failed");
    assert_eq!(shown["health"], "Unhealthy");
    assert_eq!(show(&d, "online-endpoint show -n fail-ep --query traffic"), json!({}), "no traffic moved");
    assert!(home_containers(&d.home_id()).is_empty());

    // It stays Failed across a restart, and can be deleted.
    d.restart();
    assert_eq!(show(&d, "online-deployment show -n blue -e fail-ep")["provisioning_state"], "Failed");
    assert!(home_containers(&d.home_id()).is_empty(), "a failed deployment is not retried");
    d.cli("online-deployment delete -n blue -e fail-ep --yes").ok();
}

#[test]
fn every_mutating_command_survives_a_sigkill_right_after_it() {
    require_scorer_image();
    let mut d = Daemon::start(MOAT);
    let home_id = d.home_id();
    let containers = || home_containers(&home_id);

    d.cli(&format!("online-endpoint create --name crash-ep {ENDPOINT}")).ok();
    d.restart();
    d.cli("online-endpoint show -n crash-ep").ok();

    let blue = create_blue(&d, "crash-ep", "");
    let id = blue["instances"][0]["container_id"].as_str().expect("id").to_string();
    d.restart();
    assert_predictions(&invoke_after_restart(&d, "crash-ep"), &SEED);
    let shown = show(&d, "online-deployment show -n blue -e crash-ep");
    assert_eq!(shown["instances"][0]["container_id"], id.as_str(), "adopted, not replaced");

    d.cli(
        "online-endpoint regenerate-keys -n crash-ep --key-type secondary --key-value after-crash-key-000001",
    )
    .ok();
    d.restart();
    assert_eq!(
        tsv(&d, "online-endpoint get-credentials -n crash-ep --query secondaryKey"),
        "after-crash-key-000001"
    );
    invoke_after_restart(&d, "crash-ep");
    let uri = tsv(&d, "online-endpoint show -n crash-ep --query scoring_uri");
    assert_eq!(score(&uri, Some("after-crash-key-000001")).status, 200);

    let refused = d.cli("workspace create -f examples/workspace.yml");
    assert_eq!(refused.code, 1, "a workspace with endpoints is not replaced");
    assert!(refused.stderr.contains("already has endpoints"), "{}", refused.stderr);
    d.cli("workspace update -f examples/workspace.yml").ok();
    d.restart();
    assert_eq!(show(&d, "workspace show")["name"], "mlw-demo");

    // A deployment without traffic can be deleted; the delete holds across a crash.
    d.cli(&format!("online-deployment create -n green -e crash-ep {BLUE}")).ok();
    d.restart();
    assert_eq!(containers().len(), 2);
    d.cli("online-deployment delete -n green -e crash-ep --yes").ok();
    d.restart();
    assert_eq!(d.cli("online-deployment show -n green -e crash-ep").code, 3, "gone: az's not-found code");
    assert_eq!(containers().len(), 1);
    assert_predictions(&invoke_after_restart(&d, "crash-ep"), &SEED);

    d.cli("online-endpoint delete -n crash-ep --yes").ok();
    assert!(containers().is_empty(), "delete waited for the containers to go");
    d.restart();
    assert_eq!(d.cli("online-endpoint show -n crash-ep").code, 3);
    assert!(containers().is_empty());
}

#[test]
fn a_restarted_daemon_removes_containers_of_deployments_deleted_while_it_was_down() {
    require_scorer_image();
    let mut d = Daemon::start(MOAT);
    d.cli(&format!("online-endpoint create --name gone-ep {ENDPOINT}")).ok();
    create_blue(&d, "gone-ep", "");
    d.kill9();
    // A delete that reached the store while no daemon ran: edit the store offline.
    let path = d.home.join("store.json");
    let mut store = parse(&std::fs::read_to_string(&path).expect("store"));
    let entries = store["entries"].as_object_mut().expect("entries");
    entries.retain(|k, _| !k.starts_with("deployments/") && !k.starts_with("outcomes/"));
    entries["endpoints/gone-ep"]["value"]["spec"]["traffic"] = json!({});
    std::fs::write(&path, serde_json::to_vec(&store).expect("json")).expect("write store");
    d.restart();
    let home_id = d.home_id();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !home_containers(&home_id).is_empty() {
        assert!(Instant::now() < deadline, "leftover container was not removed");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(home_networks(&home_id).is_empty());
}
