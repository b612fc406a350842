use std::collections::HashSet;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use super::*;
use crate::Adoption;

#[tokio::test(start_paused = true)]
async fn a_drained_instance_leaves_routing_then_stops_once_its_requests_are_done() {
    let fake = Fake::new();
    let busy = Arc::new(AtomicBool::new(true));
    let in_flight: InFlight = {
        let busy = busy.clone();
        Arc::new(move |_| usize::from(busy.load(Ordering::SeqCst)))
    };
    let s = supervisor_with(&fake, in_flight).await;
    s.apply(spec(1, "v1"), Adoption::Trusted).await.expect("applied");
    let remove = tokio::spawn({
        let s = s.clone();
        async move { s.remove(&id()).await }
    });
    until(&s, "out of routing", |s| serving(s) == 0).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(fake.running(), [name(0)], "a request still in flight keeps it running");
    busy.store(false, Ordering::SeqCst);
    remove.await.expect("task").expect("removed");
    assert!(fake.containers().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_drain_gives_up_on_requests_after_the_grace_period() {
    let fake = Fake::new();
    let s = supervisor_with(&fake, Arc::new(|_| 1)).await;
    s.apply(spec(1, "v1"), Adoption::Trusted).await.expect("applied");
    let started = tokio::time::Instant::now();
    s.remove(&id()).await.expect("removed");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(5) && waited < Duration::from_secs(6), "{waited:?}");
}

#[tokio::test(start_paused = true)]
async fn removing_others_keeps_only_the_deployments_asked_for_with_their_networks() {
    let fake = Fake::new();
    let s = supervisor(&fake).await;
    let mut green = spec(1, "v1");
    green.id = moat_id::DeploymentId::new("ep", "green");
    s.apply(spec(1, "v1"), Adoption::Trusted).await.expect("blue");
    s.apply(green, Adoption::Trusted).await.expect("green");
    s.remove_others(&HashSet::from([id()])).await.expect("removed");
    assert_eq!(fake.containers(), [name(0)]);
    let networks = crate::Engine::networks(&fake, &[]).await.expect("networks");
    assert_eq!(networks.len(), 1, "{networks:?}");
    assert!(s.instances(&moat_id::DeploymentId::new("ep", "green")).is_empty());
}
