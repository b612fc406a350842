//! The egress guard with real containers and real rules. The test builds its own topology:
//! "private endpoint" servers (plain TCP, HTTP, TLS with its own certificate) in one network
//! namespace, and an "internet" host at a documentation address (203.0.113.0/24) in another,
//! both routed from the host through veth links (routes checked before any packet leaves).
//! From inside a private deployment's container (the test scorer's `/probe`), the endpoints
//! answer and nothing else does; the same probes from a deployment with egress enabled reach
//! their targets, so every block is moat's doing.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::Message;
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record};
use moat_test_support::{
    Daemon, TEST_IMAGE, TempDir, TestHost, home_containers, home_networks, http, probe, require_test_image,
    tcp_server, unique_id, wait_until,
};
use serde_json::{Value, json};

const MOAT: &str = env!("CARGO_BIN_EXE_moat");
const PROXY_PORT: u16 = 3128;

/// A TLS server with its own certificate; after the handshake it says `text`.
fn tls_server(addr: SocketAddr, cert: Vec<u8>, key: Vec<u8>, text: &'static str) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&cert).collect::<Result<_, _>>().expect("certificate");
    let key = PrivateKeyDer::from_pem_slice(&key).expect("key");
    let config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server config");
    let config = Arc::new(config);
    let listener = TcpListener::bind(addr).expect("bind");
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let config = config.clone();
        std::thread::spawn(move || {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(3)));
            let Ok(connection) = rustls::ServerConnection::new(config) else { return };
            let mut tls = rustls::StreamOwned::new(connection, stream);
            let mut buf = [0u8; 64];
            if tls.read(&mut buf).is_ok() {
                let _ = tls.write_all(format!("{text}\n").as_bytes());
                let _ = tls.flush();
            }
        });
    }
}

/// A DNS server that answers every A query with `answer`.
fn dns_server(addr: SocketAddr, answer: Ipv4Addr) {
    let socket = UdpSocket::bind(addr).expect("bind");
    let mut buf = [0u8; 2048];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf) else { continue };
        let Ok(query) = Message::from_vec(&buf[..n]) else { continue };
        let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
        for q in &query.queries {
            reply.add_query(q.clone());
            reply.add_answer(Record::from_rdata(q.name().clone(), 60, RData::A(A(answer))));
        }
        if let Ok(bytes) = reply.to_vec() {
            let _ = socket.send_to(&bytes, from);
        }
    }
}

fn certificate(dir: &std::path::Path, name: &str) -> (Vec<u8>, Vec<u8>) {
    let (cert, key) = moat_test_support::self_signed_certificate(dir, name, &format!("DNS:{name}"));
    (std::fs::read(cert).expect("cert"), std::fs::read(key).expect("key"))
}

/// A deployment file for the test scorer, in the daemon's home.
fn deployment_file(d: &Daemon, name: &str) -> std::path::PathBuf {
    let spec = d.home.join(format!("{name}.yml"));
    std::fs::write(
        &spec,
        format!(
            "name: {name}\nendpoint_name: egress-ep\nenvironment:\n  image: {TEST_IMAGE}\n  inference_config:\n    readiness_route: {{port: 5001, path: /ready}}\n    liveness_route: {{port: 5001, path: /live}}\n    scoring_route: {{port: 5001, path: /score}}\ninstance_type: Standard_F1s\nreadiness_probe: {{initial_delay: 0, period: 1}}\n"
        ),
    )
    .expect("spec");
    spec
}

fn deployment(d: &Daemon, name: &str, extra: &str) -> Value {
    let spec = deployment_file(d, name);
    let run = d.cli(&format!("online-deployment create -f {} {extra}", spec.display()));
    assert_eq!(run.code, 0, "{run:?}");
    let mut view: Value = serde_json::from_str(&run.stdout).expect("json");
    view["stderr"] = json!(run.stderr);
    view
}

/// The host's address on a deployment's network.
fn network_gateway(d: &Daemon, deployment: &str) -> String {
    let network = format!("moat-{}-egress-ep-{deployment}", d.home_id());
    let out = std::process::Command::new("docker")
        .args(["network", "inspect", "-f", "{{(index .IPAM.Config 0).Gateway}}", &network])
        .output()
        .expect("docker");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn container(view: &Value) -> SocketAddr {
    let ip: Ipv4Addr = view["instances"][0]["address"].as_str().expect("address").parse().expect("ip");
    SocketAddr::from((ip, 5001))
}

#[test]
fn a_private_deployment_reaches_its_private_endpoints_and_nothing_else() {
    require_test_image();
    let id = unique_id();
    let n = u32::from_str_radix(&id, 16).expect("hex");
    let (a, b) = (((n >> 8) & 0xff) as u8, (n & 0xf0) as u8);
    let pe_ip = move |i: u8| Ipv4Addr::new(10, 215, a, b + i);
    let pe = TestHost::with_addresses("pe", &id, pe_ip(1), &[pe_ip(2), pe_ip(3), pe_ip(4), pe_ip(5)], 28);
    // The lower half of 203.0.113.0/24 (tests/fence.rs takes the upper half, and runs alongside).
    let c = (n & 0x7c) as u8;
    let internet_ip = Ipv4Addr::new(203, 0, 113, c + 2);
    let internet = TestHost::new("in", &id, Ipv4Addr::new(203, 0, 113, c + 1), internet_ip);
    for i in 2..=5 {
        pe.assert_route_to(pe_ip(i));
    }
    internet.assert_route_is_ours();

    let dir = TempDir::new("moat-egress");
    let (cert, key) = certificate(dir.path(), "tls.pe.test");
    pe.spawn(move || tcp_server(SocketAddr::from((pe_ip(2), 7000)), "pe-tcp-a"));
    pe.spawn(move || tcp_server(SocketAddr::from((pe_ip(3), 7000)), "pe-tcp-b"));
    pe.spawn(move || tcp_server(SocketAddr::from((pe_ip(4), 80)), "pe-http"));
    pe.spawn(move || tls_server(SocketAddr::from((pe_ip(5), 443)), cert, key, "pe-tls"));
    internet.spawn(move || tcp_server(SocketAddr::from((internet_ip, 443)), "internet-443"));
    internet.spawn(move || tcp_server(SocketAddr::from((internet_ip, 80)), "internet-http"));
    internet.spawn(move || dns_server(SocketAddr::from((internet_ip, 53)), internet_ip));
    // A listener of the host's own, open to every network.
    let host_listener = TcpListener::bind("0.0.0.0:0").expect("bind");
    let host_port = host_listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in host_listener.incoming().flatten() {
            let mut stream = stream;
            let _ = stream.write_all(b"host-listener\n");
        }
    });

    let mut d = Daemon::start(MOAT);
    // The workspace; `storage` is its second private endpoint (changed later on).
    let workspace = |access: &str, storage: &str| {
        format!(
            "name: egress-ws\npublic_network_access: {access}\nprivate_endpoints:\n  - {{name: tcp-a, kind: storage_file, fqdn: a.pe.test, aliases: [a.privatelink.pe.test], ips: [{}], ports: [7000]}}\n  - {storage}\n  - {{name: web, kind: workspace, fqdn: web.pe.test, ips: [{}], ports: [80]}}\n  - {{name: vault, kind: key_vault, fqdn: tls.pe.test, aliases: [tls.privatelink.pe.test], ips: [{}], ports: [443]}}\n",
            pe_ip(2),
            pe_ip(4),
            pe_ip(5)
        )
    };
    let file = d.home.join("workspace.yml");
    let storage_b =
        format!("{{name: tcp-b, kind: storage_blob, fqdn: b.pe.test, ips: [{}], ports: [7000]}}", pe_ip(3));
    std::fs::write(&file, workspace("enabled", &storage_b)).expect("workspace");
    d.cli(&format!("workspace create -f {}", file.display())).ok();
    d.cli("online-endpoint create -n egress-ep -f examples/model-1/endpoint.yml").ok();
    // The positive control first: a deployment with egress enabled.
    let open = container(&deployment(&d, "open", ""));
    let closed_view = deployment(&d, "closed", "--set private_network_connection=true");
    assert!(
        closed_view["stderr"].as_str().unwrap_or_default().contains("now has public network access disabled")
    );
    let closed = container(&closed_view);
    let guard_of = |name: &str| -> String {
        closed_view["egress"]["private_endpoints"]
            .as_array()
            .expect("private endpoints")
            .iter()
            .find(|e| e["name"] == name)
            .and_then(|e| e["address"].as_str())
            .expect("guard address")
            .to_string()
    };
    let gateway = network_gateway(&d, "closed");
    let open_gateway = network_gateway(&d, "open");

    // Each private endpoint answers by name, by alias, over TLS with its SNI, through the proxy.
    let reached = |target: SocketAddr, request: Value, want: &str| {
        let (ok, detail) = probe(target, request.clone());
        assert!(ok && detail.contains(want), "{request} should reach {want}: {detail}");
    };
    let (ok, answer) = probe(closed, json!({"dns": "a.pe.test"}));
    assert!(ok && answer == guard_of("tcp-a"), "a.pe.test resolves to the guard: {answer}");
    reached(closed, json!({"tcp": "a.pe.test:7000"}), "pe-tcp-a");
    reached(closed, json!({"tcp": "A.PrivateLink.pe.test:7000"}), "pe-tcp-a");
    reached(closed, json!({"tcp": "b.pe.test:7000"}), "pe-tcp-b");
    reached(
        closed,
        json!({"tcp": "web.pe.test:80", "send": "GET / HTTP/1.1\r\nHost: web.pe.test\r\n\r\n"}),
        "pe-http",
    );
    reached(closed, json!({"tcp": "web.pe.test:80", "via": "http"}), "pe-http");
    reached(closed, json!({"tcp": "a.pe.test:7000", "via": "connect"}), "pe-tcp-a");
    reached(closed, json!({"tls": "tls.pe.test:443", "sni": "tls.pe.test"}), "pe-tls");
    reached(
        closed,
        json!({"tls": "tls.privatelink.pe.test:443", "sni": "tls.privatelink.pe.test"}),
        "pe-tls",
    );
    reached(closed, json!({"tls": "tls.pe.test:443", "sni": "tls.pe.test", "via": "connect"}), "pe-tls");
    reached(closed, json!({"tcp": format!("{}:7000", pe_ip(2)), "via": "connect"}), "pe-tcp-a");

    // The internet host: from the egress-enabled deployment it answers (positive controls)...
    let internet_443 = format!("{internet_ip}:443");
    reached(open, json!({"tcp": internet_443}), "internet-443");
    reached(
        open,
        json!({"tcp": format!("{internet_ip}:80"), "send": "GET / HTTP/1.1\r\n\r\n"}),
        "internet-http",
    );
    let (ok, _) = probe(open, json!({"dns": "anything.internet.example", "server": internet_ip.to_string()}));
    assert!(ok, "the internet host's DNS answers the egress-enabled deployment");
    // Public or not, no deployment reaches the host (the fence test shows the rest).
    let (ok, detail) = probe(open, json!({"tcp": format!("{open_gateway}:{host_port}")}));
    assert!(!ok, "a public deployment reached a host listener: {detail}");

    // ...and from the private one it is unreachable every way there is.
    let literal = u32::from(internet_ip);
    let blocked = [
        json!({"tcp": internet_443}),
        json!({"tcp": format!("{internet_ip}:80"), "send": "GET / HTTP/1.1\r\nHost: web.pe.test\r\n\r\n"}),
        json!({"tls": internet_443, "sni": "tls.pe.test"}),
        json!({"tcp": internet_443, "via": "connect"}),
        json!({"tcp": "www.internet.example:443", "via": "connect"}),
        json!({"tcp": format!("{internet_ip}:80"), "via": "http"}),
        json!({"tcp": "www.internet.example:80", "via": "http"}),
        json!({"tcp": format!("{literal}:443"), "via": "connect"}),
        json!({"tcp": format!("{literal:#x}:443"), "via": "connect"}),
        json!({"tcp": format!("0{:o}.0{:o}.0{:o}.0{:o}:443", 203, 0, 113, c + 2), "via": "connect"}),
        json!({"tcp": format!("[::ffff:{internet_ip}]:443"), "via": "connect"}),
        json!({"tcp": "a.pe.test:443", "via": "connect"}),
        json!({"tls": "tls.pe.test:443", "sni": "www.internet.example"}),
        json!({"dns": "www.internet.example"}),
        json!({"dns": "www.internet.example", "type": "AAAA"}),
        json!({"dns": format!("{}.exfil.internet.example", "x".repeat(60)), "type": "TXT"}),
        json!({"dns": "anything.internet.example", "server": internet_ip.to_string()}),
        json!({"tcp": format!("{gateway}:{host_port}")}),
        json!({"tcp": open.to_string(), "send": "GET / HTTP/1.1\r\n\r\n"}),
    ];
    for request in blocked {
        let (ok, detail) = probe(closed, request.clone());
        assert!(!ok, "{request} got through from the private deployment: {detail}");
    }

    // A flood of refused queries is counted in full and logged a few lines a second.
    for i in 0..40 {
        assert!(!probe(closed, json!({"dns": format!("flood-{i}.internet.example")})).0);
    }

    // Decisions are attributed, logged and counted; the kernel counts its drops (its counters
    // are read every two seconds).
    let count = |metrics: &str, parts: &[&str]| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with("moat_egress_decisions_total") && parts.iter().all(|p| l.contains(p)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let metrics = wait_until(Duration::from_secs(10), "the decisions counted", || {
        let metrics = http(d.metrics_addr(), "GET", "/metrics", &[], "").map_err(|e| e.to_string())?.body;
        let counted = count(&metrics, &["decision=\"deny\"", "reason=\"dns_refused\""]) >= 43.0
            && count(&metrics, &["decision=\"deny\"", "reason=\"kernel\""]) >= 1.0;
        if counted { Ok(metrics) } else { Err(metrics) }
    });
    let log = d.log();
    let flood_lines = log.lines().filter(|l| l.contains("flood-")).count();
    assert!(flood_lines <= 20, "{flood_lines} of 40 refused queries logged: not rate-limited");
    for needle in [
        "\"kind\":\"dns\"",
        "\"reason\":\"dns_refused\"",
        "\"kind\":\"connect\"",
        "\"reason\":\"sni_mismatch\"",
        "\"instance\":\"closed-0\"",
    ] {
        assert!(log.contains(needle), "no {needle} in the decision log");
    }
    let count = |parts: &[&str]| count(&metrics, parts);
    assert!(count(&["decision=\"allow\""]) >= 5.0, "{metrics}");
    assert!(metrics.contains("moat_egress_bytes_total{"), "{metrics}");

    // A change of the workspace's private endpoints reaches the running deployment: tcp-b
    // goes, and tcp-c (the same server under a new name) comes.
    let storage_c =
        format!("{{name: tcp-c, kind: storage_blob, fqdn: c.pe.test, ips: [{}], ports: [7000]}}", pe_ip(3));
    std::fs::write(&file, workspace("disabled", &storage_c)).expect("workspace");
    d.cli(&format!("workspace update -f {}", file.display())).ok();
    wait_until(Duration::from_secs(15), "the new private endpoint reachable", || {
        let (ok, detail) = probe(closed, json!({"tcp": "c.pe.test:7000"}));
        if ok { Ok(()) } else { Err(detail) }
    });
    let (ok, detail) = probe(closed, json!({"tcp": "b.pe.test:7000"}));
    assert!(!ok, "a private endpoint taken out of the workspace still answers: {detail}");
    reached(closed, json!({"tcp": "a.pe.test:7000"}), "pe-tcp-a");

    // A private endpoint inside moat's own networks (here: the container itself) is refused.
    let into_moat = format!(
        "{{name: tcp-m, kind: storage_blob, fqdn: m.pe.test, ips: [{}], ports: [5001]}}",
        closed.ip()
    );
    std::fs::write(&file, workspace("disabled", &into_moat)).expect("workspace");
    let run = d.cli(&format!("workspace update -f {}", file.display()));
    assert!(
        run.code != 0
            && run.stderr.contains("private_endpoints[1].ips[0]")
            && run.stderr.contains("moat's own network"),
        "{run:?}"
    );

    // The rules stay while the daemon is down and everything works again after a restart.
    let table = format!("moat_{}", d.home_id());
    d.kill9();
    let rules =
        std::process::Command::new("nft").args(["list", "table", "inet", &table]).output().expect("nft");
    assert!(
        String::from_utf8_lossy(&rules.stdout).contains("egress-ep/closed"),
        "rules gone while the daemon was down"
    );
    // A host process that takes the guard's ports meanwhile serves the container nothing: the
    // rules admit only the guard's own (marked) sockets.
    for port in [PROXY_PORT, 53] {
        let squatter =
            TcpListener::bind((gateway.parse::<Ipv4Addr>().expect("gateway"), port)).expect("squat");
        squatter.set_nonblocking(true).expect("nonblocking");
        let (ok, detail) = probe(closed, json!({"tcp": format!("{gateway}:{port}")}));
        assert!(!ok, "a host listener on the guard's port {port} served the container: {detail}");
        let accepted = squatter.accept();
        assert!(
            accepted.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
            "the host listener on port {port} got a connection: {accepted:?}"
        );
    }
    d.restart();
    wait_until(Duration::from_secs(20), "the guard back after a restart", || {
        let (ok, detail) = probe(closed, json!({"tcp": "a.pe.test:7000"}));
        if ok { Ok(()) } else { Err(detail) }
    });
    assert!(!probe(closed, json!({"tcp": internet_443})).0);

    // Deleting the deployment takes its network, rules and guard addresses with it.
    d.cli("online-deployment delete -n closed -e egress-ep --yes").ok();
    let rules =
        std::process::Command::new("nft").args(["list", "table", "inet", &table]).output().expect("nft");
    assert!(!String::from_utf8_lossy(&rules.stdout).contains("egress-ep/closed"), "rules left behind");
    let networks = std::process::Command::new("docker")
        .args(["network", "ls", "--format", "{{.Name}}"])
        .output()
        .expect("docker");
    assert!(!String::from_utf8_lossy(&networks.stdout).contains("egress-ep-closed"), "network left behind");
    let addresses = std::process::Command::new("ip").args(["-4", "addr"]).output().expect("ip");
    assert!(
        !String::from_utf8_lossy(&addresses.stdout).contains(&guard_of("tcp-a")),
        "guard address left behind"
    );
}

/// Without nftables the guard cannot fence a private deployment in, so moat refuses it and
/// leaves nothing of it behind.
#[test]
fn any_deployment_is_refused_when_the_kernel_rules_cannot_be_installed() {
    require_test_image();
    let bin_dir = TempDir::new("moat-no-nft");
    let bin = bin_dir.path();
    let ip = std::process::Command::new("sh").args(["-c", "command -v ip"]).output().expect("sh");
    let ip = String::from_utf8_lossy(&ip.stdout).trim().to_string();
    std::os::unix::fs::symlink(&ip, bin.join("ip")).expect("symlink");
    let path = bin.display().to_string();
    let d = Daemon::start_with_env(MOAT, &[("PATH", &path)]);
    d.cli("online-endpoint create -n egress-ep -f examples/model-1/endpoint.yml").ok();
    let spec = deployment_file(&d, "closed");
    let run = d.cli(&format!(
        "online-deployment create -f {} --set private_network_connection=true",
        spec.display()
    ));
    assert_ne!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("kernel rules cannot be installed"), "{}", run.stderr);
    let shown = d.cli("online-deployment show -n closed -e egress-ep").ok().stdout;
    let shown: Value = serde_json::from_str(&shown).expect("json");
    assert_eq!(shown["provisioning_state"], "Failed");
    assert!(home_containers(&d.home_id()).is_empty(), "a container of a refused private deployment");
    assert!(home_networks(&d.home_id()).is_empty(), "a network of a refused private deployment");
    // A public deployment is fenced too: unfenced, it does not run either.
    d.cli("workspace update --public-network-access enabled").ok();
    let spec = deployment_file(&d, "open");
    let run = d.cli(&format!("online-deployment create -f {}", spec.display()));
    assert_ne!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("kernel rules cannot be installed"), "{}", run.stderr);
    assert!(home_containers(&d.home_id()).is_empty(), "a container of a refused public deployment");
}

/// `serve --upgrade` with a private deployment: the new daemon's guard takes over the
/// guard's addresses (both bound at once for a moment), and the container reaches its
/// private endpoint, by name, before and after the old daemon is gone; its container is the
/// same one.
#[test]
fn a_private_deployment_keeps_its_private_endpoint_through_serve_upgrade() {
    require_test_image();
    let id = unique_id();
    let n = u32::from_str_radix(&id, 16).expect("hex");
    let (a, b) = (((n >> 8) & 0xff) as u8, (n & 0xf0) as u8);
    let pe_ip = move |i: u8| Ipv4Addr::new(10, 216, a, b + i);
    let pe = TestHost::new("up", &id, pe_ip(1), pe_ip(2));
    pe.assert_route_to(pe_ip(2));
    pe.spawn(move || tcp_server(SocketAddr::from((pe_ip(2), 7000)), "pe-through-upgrade"));

    let mut d = Daemon::start(MOAT);
    let file = d.home.join("workspace.yml");
    let workspace = format!(
        "name: up-ws\nprivate_endpoints:\n  - {{name: store, kind: storage_file, fqdn: up.pe.test, ips: [{}], ports: [7000]}}\n",
        pe_ip(2)
    );
    std::fs::write(&file, workspace).expect("workspace");
    d.cli(&format!("workspace create -f {}", file.display())).ok();
    d.cli("online-endpoint create -n egress-ep -f examples/model-1/endpoint.yml").ok();
    let view = deployment(&d, "closed", "--set private_network_connection=true");
    let closed = container(&view);
    let guard =
        view["egress"]["private_endpoints"][0]["address"].as_str().expect("guard address").to_string();
    let reaches = || {
        let (ok, detail) = probe(closed, json!({"tcp": "up.pe.test:7000"}));
        if ok && detail.contains("pe-through-upgrade") { Ok(()) } else { Err(detail) }
    };
    assert_eq!(reaches(), Ok(()));
    let before = home_containers(&d.home_id());

    let _new = moat_test_support::Killed(d.upgrade_command("127.0.0.1:0").spawn().expect("serve --upgrade"));
    assert_eq!(d.wait_exit(), Some(0), "the old daemon hands over and exits");
    wait_until(Duration::from_secs(10), "the container to reach its endpoint through the new guard", reaches);
    let (ok, answer) = probe(closed, json!({"dns": "up.pe.test"}));
    assert!(ok && answer == guard, "up.pe.test resolves to the guard's address {guard}: {answer}");
    assert_eq!(home_containers(&d.home_id()), before, "the same container");
    let log = std::fs::read_to_string(d.home.join("upgrade.log")).expect("log");
    assert!(log.contains("took over"), "{log}");
}
