//! The supervisor against the real Docker engine, with the sample scorer image.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use moat_supervisor::{
    Adoption, Config, DeploymentId, DeploymentSpec, InstanceState, Mount, ProbeSettings, Route, Supervisor,
};
use moat_test_support::{DockerCleanup, SCORER_IMAGE, http, repo_root, require_scorer_image, unique_id};

fn probe() -> ProbeSettings {
    ProbeSettings {
        initial_delay: Duration::from_millis(200),
        period: Duration::from_millis(300),
        timeout: Duration::from_secs(1),
        success_threshold: 1,
        failure_threshold: 10,
    }
}

fn scorer(endpoint: &str, deployment: &str, count: u32, with_model: bool) -> DeploymentSpec {
    let model_dir = "/var/azureml-app/azureml-models/model-1/1";
    let mounts = if with_model {
        vec![Mount {
            host_path: repo_root().join("examples/model-1/model").canonicalize().expect("model dir"),
            container_path: format!("{model_dir}/model"),
            read_only: true,
        }]
    } else {
        Vec::new()
    };
    let route = |path: &str| Route { port: 5001, path: path.to_string() };
    DeploymentSpec {
        id: DeploymentId::new(endpoint, deployment),
        image: SCORER_IMAGE.into(),
        build: None,
        instance_count: count,
        env: vec![("AZUREML_MODEL_DIR".into(), model_dir.into())],
        mounts,
        liveness_route: route("/"),
        readiness_route: route("/"),
        scoring_route: route("/score"),
        liveness_probe: probe(),
        readiness_probe: probe(),
        memory_bytes: 512 << 20,
        cpus: 1,
        drain_grace: Duration::from_secs(1),
        private: false,
        dns: Vec::new(),
    }
}

async fn supervisor(home: &str) -> Supervisor {
    Supervisor::connect(Config { stop_timeout: Duration::from_secs(5), ..Config::new(home) })
        .await
        .expect("Docker is running")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_become_ready_serve_and_are_adopted_after_a_restart() {
    require_scorer_image();
    let home = unique_id();
    let cleanup = DockerCleanup::new(&home);
    let blue = DeploymentId::new("ep", "blue");
    let first = supervisor(&home).await;
    first.apply(scorer("ep", "blue", 2, true), Adoption::Trusted).await.expect("deployment comes up");

    let instances = first.instances(&blue);
    assert_eq!(instances.len(), 2);
    assert!(instances.iter().all(|i| i.life.ready && i.life.state == InstanceState::Running));
    let names = cleanup.containers().len();
    assert_eq!(names, 2, "two containers with the home label");
    let leases = first.leases().remove(&blue).expect("leases");
    let body =
        std::fs::read_to_string(repo_root().join("examples/model-1/sample-request.json")).expect("sample");
    for lease in &leases {
        let reply = tokio::task::spawn_blocking({
            let body = body.clone();
            let addr = SocketAddr::new(lease.address, 5001);
            move || http(addr, "POST", "/score", &[("Content-Type", "application/json")], &body)
        })
        .await
        .expect("join")
        .expect("scoring request");
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert!(reply.body.starts_with("[11055.97724552"), "{}", reply.body);
    }

    // Each container as the engine holds it: no privileges to gain, a bind mount read-only,
    // and a log that rotates.
    let ids: HashSet<_> = instances.iter().filter_map(|i| i.container_id.clone()).collect();
    for id in &ids {
        let format = "{{json .HostConfig.LogConfig}} {{json .HostConfig.SecurityOpt}} {{json .HostConfig.CapDrop}} {{json .Mounts}}";
        let out = std::process::Command::new("docker")
            .args(["inspect", "-f", format, id])
            .output()
            .expect("docker");
        let text = String::from_utf8_lossy(&out.stdout);
        for needle in [
            r#"{"Type":"json-file","Config":{"max-file":"3","max-size":"10m"}}"#,
            r#"["no-new-privileges"]"#,
            r#"["ALL"]"#,
            r#""RW":false"#,
        ] {
            assert!(text.contains(needle), "{id}: no {needle} in {text}");
        }
    }

    // A daemon that starts again adopts the running containers instead of replacing them.
    drop(first);
    let second = supervisor(&home).await;
    second.apply(scorer("ep", "blue", 2, true), Adoption::Trusted).await.expect("adopted");
    let adopted: HashSet<_> = second.instances(&blue).into_iter().filter_map(|i| i.container_id).collect();
    assert_eq!(ids, adopted);

    second.remove(&blue).await.expect("removed");
    assert!(cleanup.containers().is_empty());
    assert!(cleanup.networks().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_exits_before_ready_fails_the_apply_with_its_logs() {
    require_scorer_image();
    let home = unique_id();
    let cleanup = DockerCleanup::new(&home);
    let sup = supervisor(&home).await;
    let err =
        sup.apply(scorer("ep", "broken", 1, false), Adoption::Trusted).await.expect_err("no model, no start");
    assert!(err.reason.contains("exited before it was ready"), "{}", err.reason);
    assert!(err.logs.contains("cannot read model directory"), "{}", err.logs);
    assert!(cleanup.containers().is_empty(), "a failed deployment leaves no container");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftovers_of_deleted_deployments_are_removed_and_kept_ones_stay() {
    require_scorer_image();
    let home = unique_id();
    let cleanup = DockerCleanup::new(&home);
    let sup = supervisor(&home).await;
    sup.apply(scorer("ep", "keep", 1, true), Adoption::Trusted).await.expect("keep");
    sup.apply(scorer("ep", "drop", 1, true), Adoption::Trusted).await.expect("drop");
    let restarted = supervisor(&home).await;
    let keep = HashSet::from([DeploymentId::new("ep", "keep")]);
    restarted.remove_others(&keep).await.expect("clean-up");
    assert_eq!(cleanup.containers().len(), 1);
    assert_eq!(cleanup.networks().len(), 1);
}
