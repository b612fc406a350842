use std::time::Duration;

use super::*;
use tokio::task::JoinHandle;

use crate::fake::Script;
use crate::{Adoption, ApplyError};

/// A deployment of two instances made by a supervisor that then went away (a daemon killed),
/// leaving its containers running on the fake engine.
async fn left_running(fake: &Fake, version: &str) {
    let first = supervisor(fake).await;
    first.apply(spec(2, version), Adoption::Trusted).await.expect("applied");
}

#[tokio::test(start_paused = true)]
async fn a_restarted_daemon_adopts_the_running_containers_instead_of_making_new_ones() {
    let fake = Fake::new();
    left_running(&fake, "v1").await;
    let s = supervisor(&fake).await;
    s.apply(spec(2, "v1"), Adoption::Trusted).await.expect("adopted");
    until(&s, "both adopted instances serving", |s| serving(s) == 2).await;
    assert_eq!(lifecycle_calls(&fake).len(), 2, "no container made or removed: {:?}", fake.calls());
    assert!(instances(&s).iter().all(|i| i.life.restarts == 0));
}

#[tokio::test(start_paused = true)]
async fn an_unready_adopted_instance_holds_up_neither_the_adoption_nor_the_next_rollout() {
    // The outage users hit: a restart adopted an unready instance, the adoption waited for it
    // until the readiness deadline, failed, and took the ready one down with it.
    let fake = Fake::new();
    left_running(&fake, "v1").await;
    fake.set_ready(&name(1), Some(false));
    let s = supervisor(&fake).await;
    let started = tokio::time::Instant::now();
    s.apply(spec(2, "v1"), Adoption::Trusted).await.expect("adopted");
    assert!(started.elapsed() < Duration::from_secs(1), "adoption does not wait for readiness");
    until(&s, "the ready instance serving", |s| serving(s) == 1).await;
    let capacity = Capacity::watch(&s);
    s.apply(spec(2, "v2"), Adoption::Trusted).await.expect("rolled");
    assert_eq!(capacity.least(), 1, "never without a ready instance");
    assert_eq!(serving(&s), 2);
}

/// Two instances left running, the second not ready, adopted by a new supervisor; then a
/// rollout to v2 starts in the background, its new instances two seconds slow to start so
/// that things can happen during its first step. Returns once the rollout is half a second in.
async fn rolling_after_adopting_an_unready_instance(
    fake: &Fake,
) -> (Capacity, JoinHandle<Result<(), ApplyError>>) {
    fake.script(|_| Script { ready_after: Some(Duration::from_secs(2)), ..Script::default() });
    left_running(fake, "v1").await;
    fake.set_ready(&name(1), Some(false));
    let s = supervisor(fake).await;
    s.apply(spec(2, "v1"), Adoption::Trusted).await.expect("adopted");
    until(&s, "one serving", |s| serving(s) == 1).await;
    let capacity = Capacity::watch(&s);
    let roll = tokio::spawn(async move { s.apply(spec(2, "v2"), Adoption::Trusted).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    (capacity, roll)
}

#[tokio::test(start_paused = true)]
async fn an_adopted_instance_still_starting_costs_the_rollout_no_capacity() {
    let fake = Fake::new();
    let (capacity, roll) = rolling_after_adopting_an_unready_instance(&fake).await;
    // It finishes starting while the first new instance still starts.
    fake.set_ready(&name(1), None);
    roll.await.expect("task").expect("rolled");
    assert!(capacity.least() >= 1);
    assert_eq!(fake.running(), [name(2), name(3)]);
}

#[tokio::test(start_paused = true)]
async fn an_adopted_instance_that_exits_during_the_rollout_fails_nothing() {
    let fake = Fake::new();
    let (capacity, roll) = rolling_after_adopting_an_unready_instance(&fake).await;
    fake.exit(&name(1), 5);
    roll.await.expect("task").expect("rolled");
    assert_eq!(capacity.least(), 1);
    assert_eq!(fake.running(), [name(2), name(3)]);
}

#[tokio::test(start_paused = true)]
async fn an_adopted_container_on_probation_that_exits_fails_the_apply() {
    let fake = Fake::new();
    left_running(&fake, "v1").await;
    fake.set_ready(&name(0), Some(false));
    let s = supervisor(&fake).await;
    let exit = tokio::spawn({
        let fake = fake.clone();
        async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            fake.exit(&name(0), 9);
        }
    });
    let e = s.apply(spec(2, "v1"), Adoption::Probation).await.expect_err("fails");
    exit.await.expect("task");
    assert!(e.reason.contains("instance blue-0 exited before it was ready"), "{}", e.reason);
}

#[tokio::test(start_paused = true)]
async fn containers_of_an_older_spec_serve_until_the_rollout_replaces_them() {
    // A daemon killed mid-rollout leaves the old spec's containers; the next one finishes
    // the rollout rather than removing them first.
    let fake = Fake::new();
    left_running(&fake, "v1").await;
    let s = supervisor(&fake).await;
    let capacity = Capacity::watch(&s);
    let apply = tokio::spawn({
        let s = s.clone();
        async move { s.apply(spec(2, "v2"), Adoption::Probation).await }
    });
    until(&s, "the old instances serving", |s| serving(s) == 2).await;
    let capacity_from_here = Capacity::watch(&s);
    apply.await.expect("task").expect("rolled");
    drop(capacity);
    assert_eq!(capacity_from_here.least(), 2);
    assert_eq!(fake.running(), [name(2), name(3)]);
}

#[tokio::test(start_paused = true)]
async fn stopped_and_unlabelled_leftovers_are_removed_on_adoption() {
    let fake = Fake::new();
    left_running(&fake, "v1").await;
    fake.exit(&name(1), 137);
    let s = supervisor(&fake).await;
    s.apply(spec(2, "v1"), Adoption::Trusted).await.expect("adopted");
    let calls = lifecycle_calls(&fake);
    assert_eq!(calls[2..], [format!("remove {}", name(1)), format!("create {}", name(1))]);
}
