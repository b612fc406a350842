//! In-flight requests per instance. The counters outlive route tables (a table swap must not
//! reset them), so `deploy` takes each instance's counter from here when it builds a table,
//! and the supervisor asks here before it stops a drained instance.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
pub struct Load {
    counters: Mutex<HashMap<IpAddr, Arc<AtomicUsize>>>,
}

impl Load {
    /// The counter of the instance at `ip`, made on first use.
    pub fn counter(&self, ip: IpAddr) -> Arc<AtomicUsize> {
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        counters.entry(ip).or_default().clone()
    }

    pub fn in_flight(&self, ip: IpAddr) -> usize {
        let counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        counters.get(&ip).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Forgets counters that no table holds and that count nothing.
    pub fn prune(&self) {
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        counters.retain(|_, c| Arc::strong_count(c) > 1 || c.load(Ordering::Relaxed) > 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_survive_across_tables_and_idle_ones_are_pruned() {
        let load = Load::default();
        let ip = IpAddr::from([172, 18, 0, 2]);
        let first = load.counter(ip);
        first.fetch_add(1, Ordering::Relaxed);
        drop(first);
        assert_eq!(load.in_flight(ip), 1, "a new table sees the old table's request");
        load.prune();
        assert_eq!(load.in_flight(ip), 1, "a counter that counts is kept");
        load.counter(ip).fetch_sub(1, Ordering::Relaxed);
        load.prune();
        assert_eq!(load.in_flight(ip), 0);
        assert!(load.counters.lock().expect("lock").is_empty());
    }
}
