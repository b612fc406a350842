//! What the fleet tests share: a real etcd cluster of three members, nodes running `moat
//! serve` with the same `fleet` config (their own homes and listeners), and quick reads of a
//! node's view over its admin socket.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use moat_test_support::{Daemon, EtcdCluster, Relay, TempDir, http, http_unix, scorer_deployment, unique_id};
use serde_json::Value;

pub const MOAT: &str = env!("CARGO_BIN_EXE_moat");

pub struct Fleet {
    pub etcd: EtcdCluster,
    pub nodes: Vec<Daemon>,
    /// Relays between a node and each member, for the nodes started cut-able.
    pub relays: Vec<Vec<Relay>>,
    pub name: String,
    key: TempDir,
    /// `ca_file`, `cert_file`, `key_file` lines for a cluster that speaks TLS.
    tls: String,
}

impl Fleet {
    /// Three etcd members and `nodes` nodes talking to them directly.
    pub fn start(nodes: usize) -> Fleet {
        Fleet::start_with(nodes, &[])
    }

    /// Like [`Fleet::start`]; the nodes listed in `relayed` reach etcd through relays the test
    /// can cut.
    pub fn start_with(nodes: usize, relayed: &[usize]) -> Fleet {
        Fleet::on(EtcdCluster::start(3), nodes, relayed, String::new())
    }

    /// Nodes on a cluster the test started; `tls` holds the `fleet.etcd` lines that reach it.
    pub fn on(etcd: EtcdCluster, nodes: usize, relayed: &[usize], tls: String) -> Fleet {
        let key = TempDir::new("moat-fleet-key");
        let key_file = key.path().join("fleet.key");
        let bytes: String = (0..32).map(|_| format!("{:02x}", fastrand::u8(..))).collect();
        std::fs::write(&key_file, bytes).expect("key file");
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let name = format!("t-{}", unique_id());
        let mut fleet = Fleet { etcd, nodes: Vec::new(), relays: Vec::new(), name, key, tls };
        for i in 0..nodes {
            let relays: Vec<Relay> = if relayed.contains(&i) {
                (0..3).map(|m| Relay::start(fleet.etcd.client_addr(m))).collect()
            } else {
                Vec::new()
            };
            let endpoints = if relays.is_empty() {
                fleet.etcd.endpoints()
            } else {
                relays.iter().map(Relay::url).collect()
            };
            let config = fleet.config(&endpoints);
            fleet.nodes.push(Daemon::start_with_config(MOAT, &config));
            fleet.relays.push(relays);
        }
        fleet
    }

    pub fn config(&self, endpoints: &[String]) -> String {
        self.config_with_key(endpoints, &self.key.path().join("fleet.key"))
    }

    pub fn config_with_key(&self, endpoints: &[String], key_file: &std::path::Path) -> String {
        format!(
            "fleet:\n  name: {}\n  etcd:\n    endpoints: [{}]\n{}  key_file: {}\n  max_staleness_s: 2\nsupervisor:\n  stop_timeout_s: 2\n",
            self.name,
            endpoints.join(", "),
            self.tls,
            key_file.display()
        )
    }

    pub fn node(&self, i: usize) -> &Daemon {
        &self.nodes[i]
    }

    /// Cuts node `i` off from every etcd member (it must have been started relayed).
    pub fn cut(&self, i: usize) {
        self.relays[i].iter().for_each(Relay::cut);
    }

    pub fn heal(&self, i: usize) {
        self.relays[i].iter().for_each(Relay::heal);
    }
}

/// A node's answer to a GET on its admin socket (`None`: not found).
pub fn admin_get(node: &Daemon, path: &str) -> Option<Value> {
    let reply = http_unix(&node.socket(), "GET", path, &[], "").ok()?;
    if reply.status != 200 {
        return None;
    }
    serde_json::from_str(&reply.body).ok()
}

pub fn tsv(node: &Daemon, line: &str) -> String {
    node.cli(&format!("{line} -o tsv")).ok().stdout.trim().to_string()
}

/// Creates `endpoint` on `node` with one test-scorer deployment `blue` of one instance per
/// node, taking all traffic; returns the primary key.
pub fn scoring_endpoint(fleet: &Fleet, node: usize, endpoint: &str) -> String {
    let d = fleet.node(node);
    d.cli(&format!("online-endpoint create -n {endpoint} -f examples/model-1/endpoint.yml")).ok();
    let file = d.home.join(format!("{endpoint}-blue.yml"));
    std::fs::write(&file, scorer_deployment(endpoint, "blue", 1)).expect("spec");
    d.cli(&format!("online-deployment create -e {endpoint} -f {} --all-traffic", file.display())).ok();
    tsv(d, &format!("online-endpoint get-credentials -n {endpoint} --query primaryKey"))
}

/// A scoring request to `node` with `key`; the status it got (0: no answer).
pub fn score(node: &Daemon, endpoint: &str, key: &str) -> u16 {
    score_at(node.scoring_addr(), endpoint, key)
}

pub fn score_at(addr: SocketAddr, endpoint: &str, key: &str) -> u16 {
    let auth = format!("Bearer {key}");
    let path = format!("/endpoints/{endpoint}/score");
    http(addr, "POST", &path, &[("Authorization", &auth), ("Content-Type", "application/json")], "{}")
        .map_or(0, |r| r.status)
}

/// Which deployment answered a scoring request (its `azureml-model-deployment`), if one did.
pub fn answered_by(addr: SocketAddr, endpoint: &str, key: &str) -> Option<String> {
    let auth = format!("Bearer {key}");
    let path = format!("/endpoints/{endpoint}/score");
    let reply =
        http(addr, "POST", &path, &[("Authorization", &auth), ("Content-Type", "application/json")], "{}")
            .ok()?;
    (reply.status == 200).then(|| reply.header("azureml-model-deployment").map(String::from)).flatten()
}

/// Polls until `done`, up to `limit`; how long it took (the test fails past the limit).
pub fn time_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
    started.elapsed()
}

/// p50 and max of some durations, in milliseconds.
pub fn summary(mut times: Vec<Duration>) -> (f64, f64) {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (ms(times[times.len() / 2]), ms(*times.last().unwrap_or(&Duration::ZERO)))
}
