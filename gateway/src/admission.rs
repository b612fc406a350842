//! Admission: how many requests a deployment takes at once, and in what order the rest wait.
//!
//! Each ready instance takes at most `max_concurrent_requests_per_instance` requests; a
//! request claims a slot on the least loaded instance that has one. When none has, it waits
//! in the deployment's FIFO queue up to `max_queue_wait_ms`; when running plus queued
//! requests already reach `2 * max_concurrent_requests_per_instance * instance_count`, it is
//! refused at once. A finished request hands its freed capacity to the head of the queue, so
//! newcomers never overtake waiters.
//!
//! An [`Admission`] outlives route tables (`deploy` takes it from [`Admissions`] when it builds
//! one), so queues and counts carry over when instances come and go.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use moat_id::DeploymentId;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::metrics::AdmissionGauges;
use crate::table::Upstream;

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No ready instance at all: 503.
    NoInstance,
    /// Running plus queued requests are at the limit: 429 at once.
    Overflow,
    /// It waited `max_queue_wait_ms` (this long) without a free slot: 429.
    QueueTimeout(Duration),
}

impl Refusal {
    /// How long the request waited in the queue before it was refused.
    pub fn waited(&self) -> Duration {
        match self {
            Refusal::QueueTimeout(waited) => *waited,
            Refusal::NoInstance | Refusal::Overflow => Duration::ZERO,
        }
    }
}

/// The limits of one deployment, from its `request_settings` and `instance_count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_per_instance: usize,
    pub max_queue_wait: Duration,
    pub instance_count: usize,
}

#[derive(Debug)]
pub struct Admission {
    gauges: AdmissionGauges,
    instances: ArcSwap<Vec<Upstream>>,
    limits: ArcSwap<Limits>,
    queue: Mutex<VecDeque<Waiter>>,
    running: AtomicUsize,
    next_waiter: AtomicU64,
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    hand_off: oneshot::Sender<Slot>,
}

/// A claimed place on one instance; freeing it (on drop) lets the next waiter in.
#[derive(Debug)]
pub struct Slot {
    admission: Arc<Admission>,
    upstream: Upstream,
    held: bool,
    /// How long the request waited in the queue for it.
    waited: Duration,
}

impl Slot {
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// How long the request waited in the queue for this place: zero when one was free at
    /// once, which most requests find, and which then costs no reading of the clock.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// Moves to another instance with a free place (for the one retry after a connect
    /// failure); false when there is none.
    pub fn switch(&mut self) -> bool {
        let Some(other) = self.admission.place_now(Some(self.upstream.addr)) else { return false };
        self.upstream.load.fetch_sub(1, Ordering::Relaxed);
        self.upstream = other;
        true
    }

    /// Gives the place back without waking anyone (the caller hands it on itself).
    fn forget(mut self) {
        self.held = false;
        self.upstream.load.fetch_sub(1, Ordering::Relaxed);
        self.admission.running.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.held {
            self.upstream.load.fetch_sub(1, Ordering::Relaxed);
            self.admission.running.fetch_sub(1, Ordering::Relaxed);
            self.admission.hand_on();
        }
    }
}

impl Admission {
    fn new(limits: Limits, gauges: AdmissionGauges) -> Admission {
        Admission {
            gauges,
            instances: ArcSwap::from_pointee(Vec::new()),
            limits: ArcSwap::from_pointee(limits),
            queue: Mutex::new(VecDeque::new()),
            running: AtomicUsize::new(0),
            next_waiter: AtomicU64::new(0),
        }
    }

    fn queue(&self) -> MutexGuard<'_, VecDeque<Waiter>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// New ready instances or limits, from a new route table; waiters that now fit go in.
    pub fn configure(self: &Arc<Self>, instances: Vec<Upstream>, limits: Limits) {
        self.instances.store(Arc::new(instances));
        self.limits.store(Arc::new(limits));
        self.hand_on();
    }

    pub fn instances(&self) -> Arc<Vec<Upstream>> {
        self.instances.load_full()
    }

    /// Requests running (holding a slot) and waiting.
    pub fn in_flight(&self) -> (usize, usize) {
        (self.running.load(Ordering::Relaxed), self.queue().len())
    }

    /// A slot now if one is free and nobody waits (for mirror copies, which never queue).
    pub fn try_admit(self: &Arc<Self>) -> Option<Slot> {
        let queue = self.queue();
        let slot = if queue.is_empty() { self.claim_now() } else { None };
        drop(queue);
        self.report();
        slot
    }

    fn report(&self) {
        let (running, queued) = self.in_flight();
        self.gauges.in_flight.set((running + queued) as f64);
        self.gauges.queue_depth.set(queued as f64);
    }

    /// A slot now, or after waiting in line.
    pub async fn admit(self: &Arc<Self>) -> Result<Slot, Refusal> {
        let admitted = self.admit_inner().await;
        self.report();
        admitted
    }

    async fn admit_inner(self: &Arc<Self>) -> Result<Slot, Refusal> {
        let limits = **self.limits.load();
        let (id, mut handed) = {
            // Read once for the request: each read of a swappable value costs about 65
            // instructions.
            let instances = self.instances.load();
            if instances.is_empty() {
                return Err(Refusal::NoInstance);
            }
            let mut queue = self.queue();
            if queue.is_empty()
                && let Some(upstream) = place(&instances, limits.max_per_instance, None)
            {
                return Ok(self.claim(upstream));
            }
            let ceiling = 2 * limits.max_per_instance * limits.instance_count.max(1);
            if self.running.load(Ordering::Relaxed) + queue.len() >= ceiling {
                return Err(Refusal::Overflow);
            }
            let id = self.next_waiter.fetch_add(1, Ordering::Relaxed);
            let (hand_off, handed) = oneshot::channel();
            queue.push_back(Waiter { id, hand_off });
            self.gauges.queue_depth.set(queue.len() as f64);
            (id, handed)
        };
        let since = Instant::now();
        let mut slot = match tokio::time::timeout(limits.max_queue_wait, &mut handed).await {
            Ok(Ok(slot)) => slot,
            _ => {
                let mut queue = self.queue();
                queue.retain(|w| w.id != id);
                drop(queue);
                // A slot may have been handed over just as the wait ended.
                handed.try_recv().map_err(|_| Refusal::QueueTimeout(limits.max_queue_wait))?
            }
        };
        slot.waited = since.elapsed();
        Ok(slot)
    }

    /// The slot of a place taken on `upstream`.
    fn claim(self: &Arc<Self>, upstream: Upstream) -> Slot {
        self.running.fetch_add(1, Ordering::Relaxed);
        Slot { admission: self.clone(), upstream, held: true, waited: Duration::ZERO }
    }

    /// A slot on the instances and limits of now.
    fn claim_now(self: &Arc<Self>) -> Option<Slot> {
        self.place_now(None).map(|upstream| self.claim(upstream))
    }

    /// A place on the instances and limits of now (other than `not`).
    fn place_now(&self, not: Option<SocketAddr>) -> Option<Upstream> {
        place(&self.instances.load(), self.limits.load().max_per_instance, not)
    }

    /// Hands free places to the waiters at the head of the queue, in order.
    fn hand_on(self: &Arc<Self>) {
        let mut queue = self.queue();
        let running = self.running.load(Ordering::Relaxed);
        self.gauges.in_flight.set((running + queue.len()) as f64);
        while !queue.is_empty() {
            let Some(mut slot) = self.claim_now() else { return };
            loop {
                let Some(waiter) = queue.pop_front() else {
                    slot.forget();
                    return;
                };
                match waiter.hand_off.send(slot) {
                    Ok(()) => break,
                    // That waiter gave up: the next one gets the place.
                    Err(back) => slot = back,
                }
            }
        }
    }
}

/// Takes a place on the least loaded of `instances` below `max` requests (other than `not`).
fn place(instances: &[Upstream], max: usize, not: Option<SocketAddr>) -> Option<Upstream> {
    for _ in 0..64 {
        let best = instances
            .iter()
            .filter(|u| Some(u.addr) != not)
            .map(|u| (u.load.load(Ordering::Relaxed), u))
            .filter(|(load, _)| *load < max)
            .min_by_key(|(load, _)| *load)?;
        let (load, upstream) = best;
        if upstream.load.compare_exchange(load, load + 1, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            return Some(upstream.clone());
        }
    }
    None
}

/// Every deployment's admission, kept across route tables.
#[derive(Debug, Default)]
pub struct Admissions {
    by_deployment: Mutex<HashMap<DeploymentId, Arc<Admission>>>,
}

impl Admissions {
    pub fn get(&self, id: &DeploymentId, limits: Limits) -> Arc<Admission> {
        let mut map = self.by_deployment.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(id.clone())
            .or_insert_with(|| {
                Arc::new(Admission::new(limits, AdmissionGauges::new(&id.endpoint, &id.deployment)))
            })
            .clone()
    }

    /// Forgets deployments no table holds and nothing runs on.
    pub fn prune(&self) {
        let mut map = self.by_deployment.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, a| Arc::strong_count(a) > 1 || a.running.load(Ordering::Relaxed) > 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(port: u16) -> Upstream {
        Upstream::new(format!("i{port}"), SocketAddr::from(([10, 0, 0, 1], port)), Default::default())
    }

    fn admission(instances: usize, max: usize, wait_ms: u64) -> Arc<Admission> {
        let limits = Limits {
            max_per_instance: max,
            max_queue_wait: Duration::from_millis(wait_ms),
            instance_count: instances,
        };
        let a = Arc::new(Admission::new(limits, AdmissionGauges::new("ep", "d")));
        a.configure((0..instances).map(|i| upstream(i as u16)).collect(), limits);
        a
    }

    fn loads(a: &Admission) -> Vec<usize> {
        a.instances().iter().map(|u| u.load.load(Ordering::Relaxed)).collect()
    }

    #[tokio::test]
    async fn slots_fill_the_least_loaded_instance_and_never_exceed_the_limit() {
        let a = admission(2, 2, 10);
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(a.admit().await.expect("a free slot"));
        }
        assert_eq!(loads(&a), [2, 2]);
        drop(held.pop());
        assert_eq!(loads(&a).iter().sum::<usize>(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_are_served_first_come_first_served() {
        let a = admission(1, 1, 10_000);
        // Room for two waiters: as if a second instance were counted but not yet ready.
        let limits = Limits { instance_count: 2, ..**a.limits.load() };
        a.configure((*a.instances()).clone(), limits);
        let first = a.admit().await.expect("slot");
        assert_eq!(first.waited(), Duration::ZERO, "a free place is taken at once");
        let (tx, mut order) = tokio::sync::mpsc::unbounded_channel();
        for n in 0..2 {
            let (a, tx) = (a.clone(), tx.clone());
            tokio::spawn(async move {
                let slot = a.admit().await.expect("slot after waiting");
                tx.send((n, slot.waited())).expect("send");
                tokio::time::sleep(Duration::from_millis(5)).await;
                drop(slot);
            });
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(a.in_flight(), (1, 2));
        drop(first);
        // The first waiter queued at 0 ms and got the place at 2 ms; the second queued at
        // 1 ms and got it when the first let go, 5 ms later.
        assert_eq!(order.recv().await, Some((0, Duration::from_millis(2))));
        assert_eq!(order.recv().await, Some((1, Duration::from_millis(6))));
    }

    #[tokio::test(start_paused = true)]
    async fn the_queue_wait_ends_in_a_refusal_and_overflow_is_refused_at_once() {
        let a = admission(1, 1, 500);
        let _busy = a.admit().await.expect("slot");
        let waited = tokio::spawn({
            let a = a.clone();
            async move { a.admit().await.map(drop) }
        });
        tokio::time::sleep(Duration::from_millis(1)).await;
        // 2 * 1 * 1 = 2 in flight (one running, one queued): the third is refused at once.
        assert_eq!(a.admit().await.map(drop), Err(Refusal::Overflow));
        assert_eq!(waited.await.expect("join"), Err(Refusal::QueueTimeout(Duration::from_millis(500))));
        assert_eq!(a.in_flight(), (1, 0), "the one who gave up left the queue");
    }

    #[tokio::test]
    async fn no_ready_instance_is_its_own_refusal_and_new_instances_let_waiters_in() {
        let a = admission(0, 1, 10_000);
        assert_eq!(a.admit().await.map(drop), Err(Refusal::NoInstance));
        let a = admission(1, 1, 10_000);
        let busy = a.admit().await.expect("slot");
        let waiter = tokio::spawn({
            let a = a.clone();
            async move { a.admit().await.map(|s| s.upstream().addr.port()) }
        });
        tokio::task::yield_now().await;
        let limits = **a.limits.load();
        let mut more = (*a.instances()).clone();
        more.push(upstream(7));
        a.configure(more, limits);
        assert_eq!(waiter.await.expect("join"), Ok(7));
        drop(busy);
    }

    #[tokio::test]
    async fn a_switch_moves_the_slot_to_another_instance_with_room() {
        let a = admission(2, 1, 10);
        let mut slot = a.admit().await.expect("slot");
        let before = slot.upstream().addr;
        assert!(slot.switch());
        assert_ne!(slot.upstream().addr, before);
        assert_eq!(loads(&a).iter().sum::<usize>(), 1);
        let _other = a.admit().await.expect("the first instance is free again");
        assert!(!slot.switch(), "no other instance has room");
    }
}
