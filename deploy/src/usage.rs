//! The gauges an SRE puts beside Azure ML's own online-endpoint metrics (deployment capacity,
//! CPU and memory utilization): per deployment, the instances this node is asked to run and
//! those ready; per instance, the CPU cores and memory its container uses, from Docker's
//! stats. Sampled every few seconds off the request path. A series whose deployment or
//! instance went away is set to 0 (it runs nothing, uses nothing), not left at its last value.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use moat_supervisor::Supervisor;

use crate::state::Reader;

pub const CAPACITY: &str = "moat_deployment_capacity";
pub const READY: &str = "moat_deployment_ready_instances";
pub const CPU: &str = "moat_container_cpu_cores";
pub const MEMORY: &str = "moat_container_memory_bytes";
pub const MEMORY_LIMIT: &str = "moat_container_memory_limit_bytes";

/// How often. Docker takes about a second to measure CPU; every instance is measured at once.
const EVERY: Duration = Duration::from_secs(5);

/// A gauge by name and labels.
type Series = (&'static str, Vec<(&'static str, String)>);

/// The value of every series for one sample.
pub fn sample(
    asked: &BTreeMap<(String, String), u32>,
    ready: &BTreeMap<(String, String), usize>,
    usage: &[((String, String), String, moat_supervisor::engine::Usage)],
) -> BTreeMap<Series, f64> {
    let mut values = BTreeMap::new();
    for ((endpoint, deployment), count) in asked {
        let labels = vec![("endpoint", endpoint.clone()), ("deployment", deployment.clone())];
        let ready_now = ready.get(&(endpoint.clone(), deployment.clone())).copied().unwrap_or(0);
        values.insert((CAPACITY, labels.clone()), f64::from(*count));
        values.insert((READY, labels), ready_now as f64);
    }
    for ((endpoint, deployment), instance, used) in usage {
        let labels = vec![
            ("endpoint", endpoint.clone()),
            ("deployment", deployment.clone()),
            ("instance", instance.clone()),
        ];
        values.insert((CPU, labels.clone()), used.cpu_cores);
        values.insert((MEMORY, labels.clone()), used.memory_bytes as f64);
        values.insert((MEMORY_LIMIT, labels), used.memory_limit_bytes as f64);
    }
    values
}

/// Samples until the task is dropped.
pub async fn keep(state: Arc<Reader>, supervisor: Supervisor) {
    let mut tick = tokio::time::interval(EVERY);
    let mut reported: BTreeSet<Series> = BTreeSet::new();
    loop {
        tick.tick().await;
        let desired = state.read();
        let asked = desired
            .deployments
            .iter()
            .map(|(id, at)| ((id.endpoint.clone(), id.deployment.clone()), at.record.spec.instance_count))
            .collect();
        let ready = supervisor
            .leases()
            .into_iter()
            .map(|(id, leases)| ((id.endpoint, id.deployment), leases.len()))
            .collect();
        let usage: Vec<_> = supervisor
            .usage()
            .await
            .into_iter()
            .map(|(id, instance, used)| ((id.endpoint, id.deployment), instance, used))
            .collect();
        let values = sample(&asked, &ready, &usage);
        for gone in reported.iter().filter(|s| !values.contains_key(*s)) {
            metrics::gauge!(gone.0, &gone.1).set(0.0);
        }
        for (series, value) in &values {
            metrics::gauge!(series.0, &series.1).set(*value);
        }
        reported = values.into_keys().collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moat_supervisor::engine::Usage;

    fn key(e: &str, d: &str) -> (String, String) {
        (e.to_string(), d.to_string())
    }

    #[test]
    fn each_deployment_has_its_capacity_and_ready_instances_and_each_instance_its_usage() {
        let asked = BTreeMap::from([(key("ep", "blue"), 2), (key("ep", "green"), 1)]);
        let ready = BTreeMap::from([(key("ep", "blue"), 1)]);
        let used = Usage { cpu_cores: 0.25, memory_bytes: 64 << 20, memory_limit_bytes: 1 << 30 };
        let values = sample(&asked, &ready, &[(key("ep", "blue"), "blue-1".into(), used)]);
        let at = |name: &'static str, labels: &[(&'static str, &str)]| {
            let labels = labels.iter().map(|(k, v)| (*k, v.to_string())).collect();
            values.get(&(name, labels)).copied()
        };
        assert_eq!(at(CAPACITY, &[("endpoint", "ep"), ("deployment", "blue")]), Some(2.0));
        assert_eq!(at(READY, &[("endpoint", "ep"), ("deployment", "blue")]), Some(1.0));
        assert_eq!(at(READY, &[("endpoint", "ep"), ("deployment", "green")]), Some(0.0), "none ready is 0");
        let instance = [("endpoint", "ep"), ("deployment", "blue"), ("instance", "blue-1")];
        assert_eq!(at(CPU, &instance), Some(0.25));
        assert_eq!(at(MEMORY, &instance), Some(f64::from(64u32 << 20)));
        assert_eq!(at(MEMORY_LIMIT, &instance), Some(f64::from(1u32 << 30)));
        assert_eq!(values.len(), 7);
    }
}
