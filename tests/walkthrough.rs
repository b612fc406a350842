//! End to end with real Docker: the seed's walkthrough with `az ml` replaced by `moat`, keys,
//! a second model, a failing create, and crash-safety of every mutating command.

use std::net::SocketAddr;

use moat_test_support::{Daemon, Reply, SCORER_IMAGE, http, repo_root, require_scorer_image};
use serde_json::Value;

const MOAT: &str = env!("CARGO_BIN_EXE_moat");
const ENDPOINT_YML: &str = "examples/model-1/endpoint.yml";
const BLUE_YML: &str = "examples/model-1/blue-deployment.yml";
const SAMPLE: &str = "examples/model-1/sample-request.json";

fn sample() -> String {
    std::fs::read_to_string(repo_root().join(SAMPLE)).expect("sample request")
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The predictions match the seed's documented ones to 9 significant digits.
fn assert_predictions(body: &str, want: &[f64]) {
    let got: Vec<f64> = serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(got.len(), want.len(), "{body}");
    for (g, w) in got.iter().zip(want) {
        assert!(((g - w) / w).abs() < 1e-9, "{g} vs {w}");
    }
}

const SEED: [f64; 2] = [11055.977245525679, 4503.079536107787];

fn create_endpoint(d: &Daemon, name: &str) {
    d.moat(&[
        "online-endpoint",
        "create",
        "--name",
        name,
        "-f",
        ENDPOINT_YML,
    ])
    .ok();
}

fn create_blue(d: &Daemon, endpoint: &str, extra: &[&str]) -> Value {
    let image = format!("environment.image={SCORER_IMAGE}");
    let mut args = vec![
        "online-deployment",
        "create",
        "--name",
        "blue",
        "--endpoint",
        endpoint,
        "-f",
        BLUE_YML,
        "--all-traffic",
        "--set",
        &image,
    ];
    args.extend_from_slice(extra);
    json(&d.moat(&args).ok().stdout)
}

fn tsv(d: &Daemon, args: &[&str]) -> String {
    let mut all = args.to_vec();
    all.extend_from_slice(&["-o", "tsv"]);
    d.moat(&all).ok().stdout.trim_end_matches('\n').to_string()
}

fn scoring_addr(uri: &str) -> (SocketAddr, String) {
    let rest = uri.strip_prefix("http://").expect("http scoring_uri");
    let (authority, path) = rest.split_once('/').expect("path");
    (authority.parse().expect("address"), format!("/{path}"))
}

fn score(uri: &str, key: Option<&str>) -> Reply {
    let (addr, path) = scoring_addr(uri);
    let auth = key.map(|k| format!("Bearer {k}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a));
    }
    http(addr, "POST", &path, &headers, &sample()).expect("scoring request")
}

#[test]
fn the_seeds_walkthrough_scores_the_sample_model_with_key_auth() {
    require_scorer_image();
    let d = Daemon::start(MOAT);
    create_endpoint(&d, "walk-ep");
    let blue = create_blue(&d, "walk-ep", &[]);
    assert_eq!(blue["provisioning_state"], "Succeeded");
    assert_eq!(blue["health"], "Healthy");
    assert_eq!(blue["instances"][0]["state"], "running");

    let invoked = d
        .moat(&[
            "online-endpoint",
            "invoke",
            "--name",
            "walk-ep",
            "--request-file",
            SAMPLE,
        ])
        .ok();
    assert_predictions(&invoked.stdout, &SEED);

    let key = tsv(
        &d,
        &[
            "online-endpoint",
            "get-credentials",
            "-n",
            "walk-ep",
            "--query",
            "primaryKey",
        ],
    );
    let secondary = tsv(
        &d,
        &[
            "online-endpoint",
            "get-credentials",
            "-n",
            "walk-ep",
            "--query",
            "secondaryKey",
        ],
    );
    let uri = tsv(
        &d,
        &[
            "online-endpoint",
            "show",
            "-n",
            "walk-ep",
            "--query",
            "scoring_uri",
        ],
    );
    assert!(uri.ends_with("/endpoints/walk-ep/score"), "{uri}");
    let traffic = json(
        &d.moat(&[
            "online-endpoint",
            "show",
            "-n",
            "walk-ep",
            "--query",
            "traffic",
        ])
        .ok()
        .stdout,
    );
    assert_eq!(traffic, serde_json::json!({"blue": 100}));

    let ok = score(&uri, Some(&key));
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_predictions(&ok.body, &SEED);
    assert_eq!(ok.header("azureml-model-deployment"), Some("blue"));
    assert!(ok.header("x-request-id").is_some_and(|id| id.len() == 36));
    assert_eq!(
        score(&uri, Some(&secondary)).status,
        200,
        "the secondary key works too"
    );
    assert_eq!(score(&uri, Some("not-the-key")).status, 401);
    assert_eq!(score(&uri, None).status, 401);

    // A regenerated key replaces the old one for the very next request.
    d.moat(&[
        "online-endpoint",
        "regenerate-keys",
        "-n",
        "walk-ep",
        "--key-type",
        "primary",
    ])
    .ok();
    let new_key = tsv(
        &d,
        &[
            "online-endpoint",
            "get-credentials",
            "-n",
            "walk-ep",
            "--query",
            "primaryKey",
        ],
    );
    assert_ne!(new_key, key);
    assert_eq!(score(&uri, Some(&key)).status, 401);
    assert_eq!(score(&uri, Some(&new_key)).status, 200);
    assert_eq!(
        score(&uri, Some(&secondary)).status,
        200,
        "the other key is untouched"
    );
    d.moat(&[
        "online-endpoint",
        "regenerate-keys",
        "-n",
        "walk-ep",
        "--key-type",
        "secondary",
        "--key-value",
        "my-own-secondary-key-0001",
    ])
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

#[test]
fn a_second_model_file_gives_its_own_predictions_and_its_mount_is_read_only() {
    require_scorer_image();
    let d = Daemon::start(MOAT);
    let model_dir = d.home.join("model-2");
    std::fs::create_dir_all(&model_dir).expect("model dir");
    std::fs::write(
        model_dir.join("model-2.json"),
        r#"{"coef": [1, 0, 0, 0, 0, 0, 0, 0, 0, 1], "intercept": 0.5}"#,
    )
    .expect("model");
    create_endpoint(&d, "model-two");
    let path = format!("model.path={}", model_dir.display());
    let blue = create_blue(&d, "model-two", &[&path]);
    let invoked = d
        .moat(&[
            "online-endpoint",
            "invoke",
            "--name",
            "model-two",
            "--request-file",
            SAMPLE,
        ])
        .ok();
    assert_predictions(&invoked.stdout, &[11.5, 11.5]);

    let container = blue["instances"][0]["container_id"]
        .as_str()
        .expect("container id")
        .to_string();
    let target = "/var/azureml-app/azureml-models/blue-model/1/model-2/new-file";
    let write = std::process::Command::new("docker")
        .args(["exec", &container, "/sample-scorer", "--try-write", target])
        .output()
        .expect("docker exec");
    let stderr = String::from_utf8_lossy(&write.stderr);
    assert!(
        !write.status.success(),
        "a write to the model mount succeeded"
    );
    assert!(stderr.contains("Read-only file system"), "{stderr}");
    assert!(!model_dir.join("new-file").exists());
}

#[test]
fn a_deployment_whose_container_exits_fails_with_its_logs_and_takes_no_traffic() {
    require_scorer_image();
    let d = Daemon::start(MOAT);
    let empty = d.home.join("no-model");
    std::fs::create_dir_all(&empty).expect("dir");
    create_endpoint(&d, "fail-ep");
    let image = format!("environment.image={SCORER_IMAGE}");
    let path = format!("model.path={}", empty.display());
    let run = d.moat(&[
        "online-deployment",
        "create",
        "-n",
        "blue",
        "-e",
        "fail-ep",
        "-f",
        BLUE_YML,
        "--all-traffic",
        "--set",
        &image,
        &path,
    ]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("exited before it was ready"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("no *.json model file"),
        "the container's log lines: {}",
        run.stderr
    );
    let shown = json(
        &d.moat(&["online-deployment", "show", "-n", "blue", "-e", "fail-ep"])
            .ok()
            .stdout,
    );
    assert_eq!(shown["provisioning_state"], "Failed");
    assert_eq!(shown["health"], "Unhealthy");
    let traffic = json(
        &d.moat(&[
            "online-endpoint",
            "show",
            "-n",
            "fail-ep",
            "--query",
            "traffic",
        ])
        .ok()
        .stdout,
    );
    assert_eq!(
        traffic,
        serde_json::json!({}),
        "a failed deployment takes no traffic"
    );
    assert!(moat_test_support::home_containers(&d.home_id()).is_empty());
    // It stays Failed across a restart, and can be deleted.
    let mut d = d;
    d.restart();
    let shown = json(
        &d.moat(&["online-deployment", "show", "-n", "blue", "-e", "fail-ep"])
            .ok()
            .stdout,
    );
    assert_eq!(shown["provisioning_state"], "Failed");
    d.moat(&[
        "online-deployment",
        "delete",
        "-n",
        "blue",
        "-e",
        "fail-ep",
        "--yes",
    ])
    .ok();
}

#[test]
fn every_mutating_command_survives_a_sigkill_right_after_it() {
    require_scorer_image();
    let mut d = Daemon::start(MOAT);
    let home_id = d.home_id();
    let containers = || moat_test_support::home_containers(&home_id);

    create_endpoint(&d, "crash-ep");
    d.restart();
    d.moat(&["online-endpoint", "show", "-n", "crash-ep"]).ok();

    let blue = create_blue(&d, "crash-ep", &[]);
    let id = blue["instances"][0]["container_id"]
        .as_str()
        .expect("id")
        .to_string();
    d.restart();
    let invoked = d.moat(&[
        "online-endpoint",
        "invoke",
        "--name",
        "crash-ep",
        "--request-file",
        SAMPLE,
    ]);
    // The adopted instance may need one probe period before it takes requests again.
    let invoked = if invoked.code == 0 {
        invoked
    } else {
        std::thread::sleep(std::time::Duration::from_secs(3));
        d.moat(&[
            "online-endpoint",
            "invoke",
            "--name",
            "crash-ep",
            "--request-file",
            SAMPLE,
        ])
    };
    assert_predictions(&invoked.ok().stdout, &SEED);
    let shown = json(
        &d.moat(&["online-deployment", "show", "-n", "blue", "-e", "crash-ep"])
            .ok()
            .stdout,
    );
    assert_eq!(
        shown["instances"][0]["container_id"],
        id.as_str(),
        "the running container was adopted, not replaced"
    );

    d.moat(&[
        "online-endpoint",
        "regenerate-keys",
        "-n",
        "crash-ep",
        "--key-type",
        "secondary",
        "--key-value",
        "after-crash-key-000001",
    ])
    .ok();
    d.restart();
    let secondary = tsv(
        &d,
        &[
            "online-endpoint",
            "get-credentials",
            "-n",
            "crash-ep",
            "--query",
            "secondaryKey",
        ],
    );
    assert_eq!(secondary, "after-crash-key-000001");

    let refused = d.moat(&["workspace", "create", "-f", "examples/workspace.yml"]);
    assert_eq!(
        refused.code, 1,
        "a workspace with endpoints is not replaced"
    );
    assert!(
        refused.stderr.contains("already has endpoints"),
        "{}",
        refused.stderr
    );
    d.moat(&["workspace", "update", "-f", "examples/workspace.yml"])
        .ok();
    d.restart();
    assert_eq!(
        json(&d.moat(&["workspace", "show"]).ok().stdout)["name"],
        "mlw-demo"
    );

    // A deployment without traffic can be deleted; the delete holds across a crash.
    let image = format!("environment.image={SCORER_IMAGE}");
    d.moat(&[
        "online-deployment",
        "create",
        "-n",
        "green",
        "-e",
        "crash-ep",
        "-f",
        BLUE_YML,
        "--set",
        &image,
    ])
    .ok();
    d.restart();
    assert_eq!(containers().len(), 2);
    d.moat(&[
        "online-deployment",
        "delete",
        "-n",
        "green",
        "-e",
        "crash-ep",
        "--yes",
    ])
    .ok();
    d.restart();
    assert_eq!(
        d.moat(&["online-deployment", "show", "-n", "green", "-e", "crash-ep"])
            .code,
        1
    );
    assert_eq!(containers().len(), 1, "{}", d.log());

    d.moat(&["online-endpoint", "delete", "-n", "crash-ep", "--yes"])
        .ok();
    assert!(
        containers().is_empty(),
        "delete waited for the containers to go"
    );
    d.restart();
    assert_eq!(
        d.moat(&["online-endpoint", "show", "-n", "crash-ep"]).code,
        1
    );
    assert!(containers().is_empty());
}

#[test]
fn a_restarted_daemon_removes_containers_of_deployments_deleted_while_it_was_down() {
    require_scorer_image();
    let mut d = Daemon::start(MOAT);
    create_endpoint(&d, "gone-ep");
    create_blue(&d, "gone-ep", &[]);
    d.kill9();
    // Simulate a delete that reached the store while no daemon ran: edit the store offline.
    let path = d.home.join("store.json");
    let mut store: Value = json(&std::fs::read_to_string(&path).expect("store"));
    let entries = store["entries"].as_object_mut().expect("entries");
    entries.retain(|k, _| !k.starts_with("deployments/") && !k.starts_with("outcomes/"));
    entries["endpoints/gone-ep"]["value"]["spec"]["traffic"] = serde_json::json!({});
    std::fs::write(&path, serde_json::to_vec(&store).expect("json")).expect("write store");
    d.restart();
    let home_id = d.home_id();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !moat_test_support::home_containers(&home_id).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "leftover container was not removed"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(moat_test_support::home_networks(&home_id).is_empty());
}
