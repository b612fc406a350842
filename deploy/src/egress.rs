//! The egress guard as deploy drives it: a private deployment's network and its workspace's
//! private endpoints become the guard's input, and the kernel's drop counters its metrics.

use std::sync::Arc;
use std::time::Duration;

use moat_egress_guard::{Endpoint, Guard, Network, names};
use moat_supervisor::NetworkInfo;

use crate::state::DeploymentId;

use crate::spec::workspace::WorkspaceSpec;

/// What the guard serves for one private deployment: every private endpoint of the
/// workspace (one set per deployment, as in the seed's preview).
pub fn network(id: &DeploymentId, info: &NetworkInfo, workspace: &WorkspaceSpec) -> Network {
    Network {
        id: id.clone(),
        bridge: info.bridge.clone(),
        gateway: info.gateway,
        subnet: info.subnet,
        prefix: info.prefix,
        endpoints: endpoints(workspace),
    }
}

/// The workspace's private endpoints with their names in canonical form.
pub fn endpoints(workspace: &WorkspaceSpec) -> Vec<Endpoint> {
    let canonical = |n: &str| names::canonical(n).unwrap_or_else(|| n.to_ascii_lowercase());
    workspace
        .private_endpoints
        .iter()
        .map(|pe| Endpoint {
            name: pe.name.clone(),
            fqdn: canonical(&pe.fqdn),
            aliases: pe.aliases.iter().map(|a| canonical(a)).collect(),
            ips: pe.ips.clone(),
            ports: pe.ports.clone(),
            tls_ports: pe.tls_ports.clone(),
        })
        .collect()
}

/// Exports the kernel's drop counters as `moat_egress_decisions_total{decision="deny",
/// reason="kernel"}`, every few seconds.
pub async fn report_kernel_drops(guard: Arc<Guard>) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tick.tick().await;
        let guard = guard.clone();
        let Ok(drops) = tokio::task::spawn_blocking(move || guard.kernel_drops()).await else { continue };
        for (id, packets) in drops {
            let labels = [
                ("endpoint", id.endpoint),
                ("deployment", id.deployment),
                ("decision", "deny".to_string()),
                ("reason", "kernel".to_string()),
            ];
            metrics::counter!(moat_egress_guard::decision_log::DECISIONS, &labels).absolute(packets);
        }
    }
}

/// Every few seconds, the home's nftables table as the guard left it; when something outside
/// moat flushed or changed it, it is restored, and the log and `moat_kernel_rules_restored_total`
/// say so.
/// Not while another daemon takes over (`standing_by`): it puts the same rules in anew, and
/// the two must not take each other's changes for tampering.
pub async fn keep_kernel_rules(guard: Arc<Guard>, standing_by: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(3));
    loop {
        tick.tick().await;
        if *standing_by.borrow() {
            continue;
        }
        let guard = guard.clone();
        match tokio::task::spawn_blocking(move || guard.keep_rules()).await {
            Ok(Ok(true)) => tracing::error!(
                "the kernel rules in moat's nftables table were flushed or changed from outside moat; restored"
            ),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "the kernel rules were changed from outside moat and cannot be restored")
            }
            Err(_) => {}
        }
    }
}
