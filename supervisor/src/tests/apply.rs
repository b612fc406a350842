use std::time::Duration;

use super::*;
use crate::Adoption;
use crate::fake::Script;
use crate::lifecycle::InstanceState;

#[tokio::test(start_paused = true)]
async fn a_new_deployment_is_up_once_every_instance_passes_readiness() {
    let fake = Fake::new();
    fake.script(|_| Script { ready_after: Some(Duration::from_secs(3)), ..Script::default() });
    let s = supervisor(&fake).await;
    let started = tokio::time::Instant::now();
    s.apply(spec(2, "v1"), Adoption::Trusted).await.expect("applied");
    assert!(started.elapsed() >= Duration::from_secs(3), "it waited for readiness");
    assert_eq!(serving(&s), 2);
    assert_eq!(fake.running(), [name(0), name(1)]);
    let states: Vec<_> = instances(&s).iter().map(|i| (i.name.clone(), i.life.state)).collect();
    assert_eq!(
        states,
        [("blue-0".into(), InstanceState::Running), ("blue-1".into(), InstanceState::Running)]
    );
}

#[tokio::test(start_paused = true)]
async fn an_instance_that_exits_before_it_is_ready_fails_the_apply_with_its_logs_and_leaves_nothing() {
    let fake = Fake::new();
    fake.script(|_| Script {
        ready_after: None,
        exits: Some((Duration::from_millis(500), 7)),
        log: "loading model\nno model file found\n".into(),
        ..Script::default()
    });
    let s = supervisor(&fake).await;
    let e = s.apply(spec(2, "v1"), Adoption::Trusted).await.expect_err("fails");
    assert!(e.reason.contains("instance blue-0 exited before it was ready"), "{}", e.reason);
    assert!(e.reason.contains("exited with code 7"), "{}", e.reason);
    assert!(e.logs.contains("no model file found"), "{}", e.logs);
    assert!(fake.containers().is_empty(), "a failed apply removes its containers");
    assert!(instances(&s).is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_instance_never_ready_fails_the_apply_at_the_readiness_deadline() {
    let fake = Fake::new();
    fake.script(|_| Script { ready_after: None, ..Script::default() });
    let s = supervisor(&fake).await;
    let started = tokio::time::Instant::now();
    let e = s.apply(spec(1, "v1"), Adoption::Trusted).await.expect_err("fails");
    assert!(e.reason.contains("was not ready within 4s"), "{}", e.reason);
    assert!(e.reason.contains("status 503"), "the last probe's answer is the reason: {}", e.reason);
    assert_eq!(started.elapsed().as_secs(), spec(1, "v1").readiness_deadline().as_secs());
}

#[tokio::test(start_paused = true)]
async fn a_missing_image_is_pulled_with_progress_first() {
    let fake = Fake::new();
    fake.missing_image("scorer:v1");
    let s = supervisor(&fake).await;
    let mut progress = s.progress();
    s.apply(spec(1, "v1"), Adoption::Trusted).await.expect("applied");
    let first = progress.try_recv().expect("progress");
    assert_eq!((first.id, first.message.as_str()), (id(), "pulling image scorer:v1"));
    assert!(progress.try_recv().expect("a pull line").message.contains("Downloaded newer image"));
}

#[tokio::test(start_paused = true)]
async fn scaling_keeps_the_instances_it_has() {
    let fake = Fake::new();
    let s = supervisor(&fake).await;
    s.apply(spec(2, "v1"), Adoption::Trusted).await.expect("applied");
    s.apply(spec(3, "v1"), Adoption::Trusted).await.expect("scaled up");
    s.apply(spec(1, "v1"), Adoption::Trusted).await.expect("scaled down");
    assert_eq!(
        lifecycle_calls(&fake),
        [
            format!("create {}", name(0)),
            format!("create {}", name(1)),
            format!("create {}", name(2)),
            format!("remove {}", name(2)),
            format!("remove {}", name(1)),
        ]
    );
    assert_eq!(fake.running(), [name(0)]);
}

#[tokio::test(start_paused = true)]
async fn new_probe_settings_alone_keep_the_containers() {
    let fake = Fake::new();
    let s = supervisor(&fake).await;
    s.apply(spec(2, "v1"), Adoption::Trusted).await.expect("applied");
    let mut slower = spec(2, "v1");
    slower.readiness_probe.period = Duration::from_secs(5);
    s.apply(slower, Adoption::Trusted).await.expect("applied");
    assert_eq!(lifecycle_calls(&fake).len(), 2, "{:?}", fake.calls());
    assert_eq!(serving(&s), 2);
}

#[tokio::test(start_paused = true)]
async fn a_mount_that_became_a_symlink_elsewhere_is_refused_before_any_container_is_made() {
    let dir = moat_test_support::TempDir::new("moat-mount-swap");
    let model = dir.path().join("model");
    std::fs::create_dir_all(&model).expect("mkdir");
    let model = model.canonicalize().expect("real");
    let fake = Fake::new();
    let s = supervisor(&fake).await;
    let mut with_model = spec(1, "v1");
    with_model.mounts = vec![crate::Mount {
        host_path: model.clone(),
        container_path: "/var/azureml-app/model".into(),
        read_only: true,
    }];
    s.apply(with_model.clone(), Adoption::Trusted).await.expect("a plain folder mounts");
    // Between the check of the spec and the next container, the folder becomes a link to /etc.
    std::fs::remove_dir(&model).expect("rmdir");
    std::os::unix::fs::symlink("/etc", &model).expect("symlink");
    with_model.env.push(("NEXT".into(), "1".into()));
    let e = s.apply(with_model, Adoption::Trusted).await.expect_err("refused");
    assert!(e.reason.contains("/etc"), "{}", e.reason);
    assert_eq!(
        lifecycle_calls(&fake).iter().filter(|c| c.starts_with("create")).count(),
        1,
        "no second container"
    );
}
