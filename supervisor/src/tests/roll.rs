use std::time::Duration;

use super::*;
use crate::Adoption;
use crate::fake::Script;

#[tokio::test(start_paused = true)]
async fn a_new_spec_rolls_one_instance_at_a_time_and_never_drops_capacity() {
    let fake = Fake::new();
    fake.script(|_| Script { ready_after: Some(Duration::from_secs(2)), ..Script::default() });
    let s = supervisor(&fake).await;
    s.apply(spec(2, "v1"), Adoption::Trusted).await.expect("applied");
    let capacity = Capacity::watch(&s);
    s.apply(spec(2, "v2"), Adoption::Trusted).await.expect("rolled");
    assert_eq!(capacity.least(), 2);
    assert_eq!(
        lifecycle_calls(&fake)[2..],
        [
            format!("create {}", name(2)),
            format!("remove {}", name(1)),
            format!("create {}", name(3)),
            format!("remove {}", name(0)),
        ]
    );
    assert_eq!(fake.running(), [name(2), name(3)]);
}

#[tokio::test(start_paused = true)]
async fn a_roll_drains_an_unready_instance_before_a_ready_one() {
    let fake = Fake::new();
    let s = supervisor(&fake).await;
    s.apply(spec(2, "v1"), Adoption::Trusted).await.expect("applied");
    fake.set_ready(&name(0), Some(false));
    until(&s, "blue-0 not ready", |s| serving(s) == 1).await;
    let capacity = Capacity::watch(&s);
    s.apply(spec(2, "v2"), Adoption::Trusted).await.expect("rolled");
    assert_eq!(capacity.least(), 1, "the ready instance served throughout");
    let removed: Vec<String> =
        lifecycle_calls(&fake).into_iter().filter(|c| c.starts_with("remove")).collect();
    assert_eq!(removed, [format!("remove {}", name(0)), format!("remove {}", name(1))]);
}

#[tokio::test(start_paused = true)]
async fn a_roll_whose_new_instance_cannot_start_fails_and_removes_the_deployment() {
    let fake = Fake::new();
    fake.script(|new| {
        if new.env.iter().any(|e| e == "VERSION=broken") {
            Script { ready_after: None, exits: Some((Duration::from_millis(300), 2)), ..Script::default() }
        } else {
            Script::default()
        }
    });
    let s = supervisor(&fake).await;
    s.apply(spec(2, "v1"), Adoption::Trusted).await.expect("applied");
    let e = s.apply(spec(2, "broken"), Adoption::Trusted).await.expect_err("fails");
    assert!(e.reason.contains("instance blue-2 exited before it was ready"), "{}", e.reason);
    assert!(fake.containers().is_empty(), "a Failed deployment takes no traffic");
}
