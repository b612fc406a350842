use std::time::Duration;

use super::*;
use crate::Adoption;
use crate::fake::Script;
use crate::lifecycle::InstanceState;

/// Every time the instance enters Restarting: (seconds since the start, its reason).
async fn restarts_seen(s: &Supervisor, count: usize) -> Vec<(u64, String)> {
    let started = tokio::time::Instant::now();
    let mut seen = Vec::new();
    let mut changes = s.subscribe();
    let mut was_restarting = false;
    while seen.len() < count {
        changes.changed().await.expect("supervisor");
        let Some(i) = instances(s).into_iter().next() else { continue };
        let restarting = i.life.state == InstanceState::Restarting;
        if restarting && !was_restarting {
            seen.push((started.elapsed().as_secs(), i.life.reason.unwrap_or_default()));
        }
        was_restarting = restarting;
    }
    seen
}

#[tokio::test(start_paused = true)]
async fn an_instance_that_exits_after_it_served_is_restarted_with_a_growing_backoff() {
    let fake = Fake::new();
    fake.script(|_| Script { exits: Some((Duration::from_secs(2), 3)), ..Script::default() });
    let s = supervisor(&fake).await;
    s.apply(spec(1, "v1"), Adoption::Trusted).await.expect("applied");
    let seen = restarts_seen(&s, 4).await;
    // Exits 2 s after each start; waits 1, 2, 4, then 4 s (the cap) before the next.
    let times: Vec<u64> = seen.iter().map(|(t, _)| *t).collect();
    assert_eq!(times, [2, 5, 9, 15]);
    assert!(seen[0].1.contains("exited with code 3; restarting in 1000 ms"), "{}", seen[0].1);
    assert!(seen[3].1.ends_with("restarting in 4000 ms"), "{}", seen[3].1);
    let i = &instances(&s)[0];
    assert_eq!((i.life.restarts, i.life.last_exit_code), (4, Some(3)));
    assert!(i.last_logs.contains("starting"), "the exit's logs are kept for show");
    let starts = fake.calls().iter().filter(|c| c.starts_with("start")).count();
    assert_eq!(starts, 3, "the same container is started again: {:?}", fake.calls());
}

#[tokio::test(start_paused = true)]
async fn a_failing_liveness_probe_stops_and_restarts_the_same_container() {
    let fake = Fake::new();
    let s = supervisor(&fake).await;
    s.apply(spec(1, "v1"), Adoption::Trusted).await.expect("applied");
    fake.set_live(&name(0), false);
    let seen = restarts_seen(&s, 1).await;
    assert!(seen[0].1.starts_with("liveness probe failed 3 times in a row"), "{}", seen[0].1);
    fake.set_live(&name(0), true);
    until(&s, "serving again", |s| serving(s) == 1).await;
    let calls: Vec<String> = fake.calls().into_iter().skip(1).collect();
    assert_eq!(calls, [format!("stop {}", name(0)), format!("start {}", name(0))]);
    assert_eq!(instances(&s)[0].life.restarts, 1);
}

#[tokio::test(start_paused = true)]
async fn an_instance_that_fails_readiness_leaves_routing_and_comes_back_when_it_passes() {
    let fake = Fake::new();
    let s = supervisor(&fake).await;
    s.apply(spec(2, "v1"), Adoption::Trusted).await.expect("applied");
    fake.set_ready(&name(1), Some(false));
    until(&s, "blue-1 out of routing", |s| serving(s) == 1).await;
    let i = &instances(&s)[1];
    assert_eq!(i.life.state, InstanceState::Running, "it is not restarted for failing readiness");
    assert!(i.life.reason.as_deref().is_some_and(|r| r.contains("status 503")));
    fake.set_ready(&name(1), None);
    until(&s, "blue-1 back", |s| serving(s) == 2).await;
}
