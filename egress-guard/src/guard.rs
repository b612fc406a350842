//! The guard's life for each private deployment: attach (addresses on its bridge, DNS, the
//! proxy, one listener per private endpoint, kernel rules) and detach (all of it gone).
//! Listeners die with the daemon; the kernel rules stay, so a private deployment fails
//! closed while no guard runs.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use ipnet::IpNet;
use moat_id::DeploymentId;
use tokio::task::JoinHandle;

use crate::acl::{Endpoint, Reason};
use crate::decision_log::{DecisionSink, Kind};
use crate::dns::{self, Answer, Zone};
use crate::nft::{self, Fence, Rules};
use crate::scope::{Limits, Scope};
use crate::{Error, forward, host, proxy, sockets};

/// The port of the explicit proxy on the gateway address.
pub const PROXY_PORT: u16 = 3128;
/// Threads of the guard's runtime: one is enough to relay at line rate in the guard bench,
/// and leaves the other cores to the gateway.
const GUARD_THREADS: usize = 1;

/// A private deployment's network, as the supervisor made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    pub id: DeploymentId,
    /// The Linux bridge of the Docker network (`br-<id>`).
    pub bridge: String,
    pub gateway: Ipv4Addr,
    pub subnet: Ipv4Addr,
    pub prefix: u8,
    pub endpoints: Vec<Endpoint>,
}

/// What the deployment's containers need: their DNS server and their environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub dns: IpAddr,
    pub env: Vec<(String, String)>,
    /// The guard's address for each private endpoint, by endpoint name.
    pub addresses: Vec<(String, Ipv4Addr)>,
}

struct Attached {
    scope: Arc<Scope>,
    bridge: String,
    addresses: Vec<Ipv4Addr>,
    tasks: Vec<JoinHandle<()>>,
    /// What it was brought up for: an attachment asked for again with the same network is
    /// kept as it is.
    network: Network,
}

/// What the deployment's containers are given: the same for every attachment of the network.
/// The private endpoints' names are not in NO_PROXY (the proxy reaches them under the same
/// allowlist), so a changed workspace does not change the containers' environment, and a
/// restarted daemon adopts them instead of replacing them.
fn attachment(net: &Network, addresses: &[Ipv4Addr]) -> Attachment {
    let proxy_url = format!("http://{}:{PROXY_PORT}", net.gateway);
    let mut env = Vec::new();
    for name in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
        env.push((name.to_string(), proxy_url.clone()));
    }
    for name in ["NO_PROXY", "no_proxy"] {
        env.push((name.to_string(), "localhost,127.0.0.1,::1".to_string()));
    }
    Attachment {
        dns: IpAddr::V4(net.gateway),
        env,
        addresses: net.endpoints.iter().map(|e| e.name.clone()).zip(addresses.iter().copied()).collect(),
    }
}

impl Attached {
    /// Every listener still runs.
    fn serving(&self) -> bool {
        self.tasks.iter().all(|task| !task.is_finished())
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The rules this guard has put in the home's table, by owner, and the table as the kernel
/// listed it after the last change.
#[derive(Default)]
struct Kernel {
    rules: HashMap<String, Rules>,
    expected: Option<String>,
}

/// Tables restored after a change from outside moat.
pub const RULES_RESTORED: &str = "moat_kernel_rules_restored_total";

pub struct Guard {
    home_id: String,
    kernel: Mutex<Kernel>,
    sink: DecisionSink,
    limits: Limits,
    /// The guard's own threads: no container's traffic can slow the gateway's accept loops
    /// or the probes. Taken at drop, which may happen inside another runtime.
    runtime: Option<tokio::runtime::Runtime>,
    attached: Mutex<HashMap<DeploymentId, Attached>>,
    /// Every moat network of the home: the guard never dials into one.
    moat_networks: Arc<ArcSwap<Vec<IpNet>>>,
}

impl Guard {
    pub fn new(home_id: &str, sink: DecisionSink) -> Result<Guard, Error> {
        Guard::with_limits(home_id, sink, Limits::default())
    }

    pub fn with_limits(home_id: &str, sink: DecisionSink, limits: Limits) -> Result<Guard, Error> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(GUARD_THREADS)
            .thread_name("moat-egress-guard")
            .enable_all()
            .build()
            .map_err(|e| Error::Setup(format!("cannot start the guard's threads: {e}")))?;
        Ok(Guard {
            home_id: home_id.to_string(),
            kernel: Mutex::new(Kernel::default()),
            sink,
            limits,
            runtime: Some(runtime),
            attached: Mutex::new(HashMap::new()),
            moat_networks: Arc::new(ArcSwap::from_pointee(Vec::new())),
        })
    }

    fn runtime(&self) -> &tokio::runtime::Handle {
        match &self.runtime {
            Some(runtime) => runtime.handle(),
            None => unreachable!("the runtime goes only when the guard does"),
        }
    }

    /// The home's moat networks now (`deploy` keeps them current).
    pub fn set_moat_networks(&self, networks: Vec<IpNet>) {
        self.moat_networks.store(Arc::new(networks));
    }

    fn attached(&self) -> MutexGuard<'_, HashMap<DeploymentId, Attached>> {
        self.attached.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the deployment up. Again with the same network (a new revision of the
    /// deployment), the attachment stays as it is, its listeners serving throughout; with
    /// another (the workspace's private endpoints changed, the network was made again), it
    /// replaces the first.
    pub async fn attach(&self, net: Network) -> Result<Attachment, Error> {
        let key = net.id.clone();
        if let Some(same) = self.attached().get(&key).filter(|a| a.network == net && a.serving()) {
            return Ok(attachment(&same.network, &same.addresses));
        }
        // The listeners of a first attachment go; so do its addresses, which a changed
        // list of private endpoints may not take again.
        let earlier = self.attached().remove(&key);
        if let Some(mut earlier) = earlier {
            for addr in &earlier.addresses {
                host::remove(&earlier.bridge, *addr);
            }
            // An aborted task lets go of its socket only when it is dropped: wait for that,
            // or binding the same addresses again races it.
            for task in std::mem::take(&mut earlier.tasks) {
                task.abort();
                let _ = task.await;
            }
        }
        let result = self.bring_up(&net);
        if result.is_err() {
            self.lock_down(&net);
        }
        let (attached, attachment) = result?;
        self.attached().insert(key, attached);
        Ok(attachment)
    }

    fn bring_up(&self, net: &Network) -> Result<(Attached, Attachment), Error> {
        // Sockets belong to the runtime they are made in: the guard's.
        let _guard_runtime = self.runtime().enter();
        let addresses = host::top_addresses(net.subnet, net.prefix, net.endpoints.len());
        if addresses.len() < net.endpoints.len() {
            return Err(Error::Setup(format!(
                "the subnet of {} has no room for the guard's addresses",
                net.bridge
            )));
        }
        let scope = Arc::new(Scope::new(
            &net.id.endpoint,
            &net.id.deployment,
            net.endpoints.clone(),
            self.sink.clone(),
            self.moat_networks.clone(),
            self.limits,
        ));
        let mut attached = Attached {
            scope: scope.clone(),
            bridge: net.bridge.clone(),
            addresses: Vec::new(),
            tasks: Vec::new(),
            network: net.clone(),
        };
        for addr in &addresses {
            host::add(&net.bridge, *addr).map_err(Error::Setup)?;
            attached.addresses.push(*addr);
        }
        let gateway = SocketAddr::from((net.gateway, 53));
        let bind = |what: &str, e: std::io::Error| Error::Setup(format!("cannot listen for {what}: {e}"));
        let udp = sockets::udp_socket(gateway).map_err(|e| bind(&format!("DNS on {gateway}/udp"), e))?;
        let tcp = sockets::tcp_listener(gateway).map_err(|e| bind(&format!("DNS on {gateway}/tcp"), e))?;
        let proxy_at = SocketAddr::from((net.gateway, PROXY_PORT));
        let proxy =
            sockets::tcp_listener(proxy_at).map_err(|e| bind(&format!("the proxy on {proxy_at}"), e))?;
        let zone = Arc::new(Zone {
            entries: net
                .endpoints
                .iter()
                .zip(&addresses)
                .flat_map(|(e, a)| std::iter::once(&e.fqdn).chain(&e.aliases).map(move |n| (n.clone(), *a)))
                .collect(),
        });
        let on_query: dns::OnQuery = {
            let scope = scope.clone();
            Arc::new(move |from, asked| {
                let who = scope.who(from.ip());
                let target = format!("{} {}", asked.name.trim_end_matches('.'), asked.kind);
                let reason =
                    if asked.answer == Answer::Refused { Reason::DnsRefused } else { Reason::Allowlisted };
                scope.record(&who, Kind::Dns, &target, reason, (0, 0));
            })
        };
        let admit: dns::Admit = {
            let (scope, at) = (scope.clone(), format!("{gateway}/tcp"));
            Arc::new(move |from| scope.admit(from, Kind::Dns, &at))
        };
        let runtime = self.runtime();
        attached.tasks.push(runtime.spawn(dns::serve_udp(udp, zone.clone(), on_query.clone())));
        attached.tasks.push(runtime.spawn(dns::serve_tcp(tcp, zone, on_query, admit, self.limits)));
        attached.tasks.push(runtime.spawn(proxy::serve(proxy, scope.clone())));
        for (index, (endpoint, addr)) in net.endpoints.iter().zip(&addresses).enumerate() {
            for port in &endpoint.ports {
                let at = SocketAddr::from((*addr, *port));
                let listener =
                    sockets::tcp_listener(at).map_err(|e| bind(&format!("{} on {at}", endpoint.name), e))?;
                attached.tasks.push(runtime.spawn(forward::serve(listener, scope.clone(), index)));
            }
        }
        let rules = Rules {
            owner: net.id.to_string(),
            bridge: net.bridge.clone(),
            fence: Fence::Private {
                gateway: net.gateway,
                gateway_tcp: vec![53, PROXY_PORT],
                gateway_udp: vec![53],
                endpoints: net.endpoints.iter().zip(&addresses).map(|(e, a)| (*a, e.ports.clone())).collect(),
            },
        };
        self.install(rules).map_err(Error::Rules)?;

        let attachment = attachment(net, &attached.addresses);
        Ok((attached, attachment))
    }

    /// A private network whose guard cannot be attached gets rules that let nothing out, not
    /// even to the guard's ports, until its containers are gone and [`Guard::detach`] runs:
    /// the rules stay, the traffic stops.
    fn lock_down(&self, net: &Network) {
        for addr in host::top_addresses(net.subnet, net.prefix, net.endpoints.len()) {
            host::remove(&net.bridge, addr);
        }
        let nothing = Fence::Private {
            gateway: net.gateway,
            gateway_tcp: Vec::new(),
            gateway_udp: Vec::new(),
            endpoints: Vec::new(),
        };
        let rules = Rules { owner: net.id.to_string(), bridge: net.bridge.clone(), fence: nothing };
        if let Err(e) = self.install(rules) {
            tracing::error!(endpoint = %net.id.endpoint, deployment = %net.id.deployment, error = %e, "cannot lock the network down; its earlier rules stay");
        }
    }

    /// Fences a public deployment's network: its containers reach neither the host, nor
    /// link-local addresses, nor another moat network; everything else as before. Fails when
    /// the rules cannot be installed: the deployment must not run unfenced.
    pub fn fence(&self, id: &DeploymentId, bridge: &str) -> Result<(), Error> {
        let rules = Rules { owner: id.to_string(), bridge: bridge.to_string(), fence: Fence::Public };
        self.install(rules).map_err(Error::Rules)
    }

    fn kernel(&self) -> MutexGuard<'_, Kernel> {
        self.kernel.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts a deployment's rules in the table, and remembers them and the table they make.
    fn install(&self, rules: Rules) -> Result<(), String> {
        let mut kernel = self.kernel();
        nft::apply(&self.home_id, &rules)?;
        kernel.rules.insert(rules.owner.clone(), rules);
        kernel.expected = nft::snapshot(&self.home_id);
        Ok(())
    }

    fn uninstall(&self, owner: &str) -> Result<(), String> {
        let mut kernel = self.kernel();
        let removed = nft::remove(&self.home_id, owner);
        if removed.is_ok() {
            kernel.rules.remove(owner);
        }
        kernel.expected = nft::snapshot(&self.home_id);
        removed
    }

    /// Compares the home's table with what the guard left in it; when it was flushed, deleted
    /// or edited from outside, makes it anew. Ok(true) when it had to. Blocks on nft: call it
    /// from a blocking thread, every few seconds.
    pub fn keep_rules(&self) -> Result<bool, String> {
        let mut kernel = self.kernel();
        let Some(expected) = &kernel.expected else { return Ok(false) };
        if nft::snapshot(&self.home_id).as_ref() == Some(expected) {
            return Ok(false);
        }
        let mut all: Vec<Rules> = kernel.rules.values().cloned().collect();
        all.sort_by(|a, b| a.owner.cmp(&b.owner));
        nft::restore(&self.home_id, &all)?;
        kernel.expected = nft::snapshot(&self.home_id);
        metrics::counter!(RULES_RESTORED).increment(1);
        Ok(true)
    }

    /// Which instance has which address, for the decision log.
    pub fn set_instances(&self, id: &DeploymentId, instances: HashMap<IpAddr, String>) {
        if let Some(a) = self.attached().get(id) {
            a.scope.instances.store(Arc::new(instances));
        }
    }

    /// Takes the deployment's listeners, addresses and kernel rules away.
    pub fn detach(&self, id: &DeploymentId) {
        if let Some(a) = self.attached().remove(id) {
            for addr in &a.addresses {
                host::remove(&a.bridge, *addr);
            }
        }
        if let Err(e) = self.uninstall(&id.to_string()) {
            tracing::warn!(endpoint = %id.endpoint, deployment = %id.deployment, error = %e, "removing kernel rules");
        }
    }

    /// Removes the kernel rules of every deployment not in `keep` (left by deployments deleted
    /// while no daemon ran).
    pub fn remove_others(&self, keep: &[DeploymentId]) {
        for owner in nft::owners(&self.home_id) {
            let Some((endpoint, deployment)) = owner.split_once('/') else { continue };
            let id = DeploymentId::new(endpoint, deployment);
            if !keep.contains(&id) {
                self.detach(&id);
            }
        }
    }

    /// The guard's address for each private endpoint of a deployment it serves.
    pub fn addresses(&self, id: &DeploymentId) -> Vec<(String, Ipv4Addr)> {
        let attached = self.attached();
        let Some(a) = attached.get(id) else {
            return Vec::new();
        };
        a.scope.endpoints.iter().map(|e| e.name.clone()).zip(a.addresses.iter().copied()).collect()
    }

    /// The private endpoints the guard serves a deployment, if it serves it.
    pub fn endpoints(&self, id: &DeploymentId) -> Option<Vec<Endpoint>> {
        self.attached().get(id).map(|a| a.scope.endpoints.clone())
    }

    /// The deployments the guard serves now.
    pub fn deployments(&self) -> Vec<DeploymentId> {
        self.attached().keys().cloned().collect()
    }

    /// Packets the kernel rules dropped for each deployment, for the metrics.
    pub fn kernel_drops(&self) -> Vec<(DeploymentId, u64)> {
        self.deployments()
            .into_iter()
            .filter_map(|id| {
                let dropped = nft::dropped(&self.home_id, &id.to_string())?;
                Some((id, dropped))
            })
            .collect()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
