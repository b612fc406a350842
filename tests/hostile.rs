//! A hostile private container against the egress guard, with real containers, real kernel
//! rules and a private endpoint host of the test's own in a network namespace (its route
//! checked first):
//!
//! - on a TLS port (443, or one the workspace lists in `tls_ports`) every way of slipping a
//!   connection past the name check is refused: another name sent late, split into records
//!   and segments, padded beyond 4 KiB, through a CONNECT tunnel; plain bytes; no name; a
//!   ClientHello beyond 16 KiB. A ClientHello that names the endpoint passes however it comes;
//! - a container that opens thousands of connections to its proxy is held to the
//!   deployment's cap: the daemon's descriptors stay bounded, refusals are counted and logged
//!   a few lines a second, and another deployment and the gateway keep being served.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use moat_test_support::{
    Daemon, TestHost, http, probe, require_test_image, scorer_deployment, tcp_server, unique_id, wait_until,
};
use serde_json::{Value, json};

const MOAT: &str = env!("CARGO_BIN_EXE_moat");

/// A private endpoint host at 10.<second>.x.y, answering on `ports` with `pe-<port>`.
fn endpoint_host(second: u8, id: &str, ports: &'static [u16]) -> (TestHost, Ipv4Addr) {
    let n = u32::from_str_radix(id, 16).expect("hex");
    let (a, b) = (((n >> 8) & 0xff) as u8, (n & 0xfc) as u8);
    let pe_ip = Ipv4Addr::new(10, second, a, b + 2);
    let host = TestHost::new("pe", id, Ipv4Addr::new(10, second, a, b + 1), pe_ip);
    host.assert_route_is_ours();
    for port in ports {
        let text: &'static str = Box::leak(format!("pe-{port}").into_boxed_str());
        host.spawn(move || tcp_server(SocketAddr::from((pe_ip, *port)), text));
    }
    (host, pe_ip)
}

/// A daemon with this workspace (one private endpoint) and an endpoint `hostile-ep`.
fn daemon(private_endpoint: &str) -> Daemon {
    let d = Daemon::start(MOAT);
    let file = d.home.join("workspace.yml");
    let workspace = format!(
        "name: hostile-ws\npublic_network_access: enabled\nprivate_endpoints:\n  - {private_endpoint}\n"
    );
    std::fs::write(&file, workspace).expect("workspace");
    d.cli(&format!("workspace create -f {}", file.display())).ok();
    d.cli("online-endpoint create -n hostile-ep -f examples/model-1/endpoint.yml").ok();
    d
}

/// A private deployment of the test scorer; its container's scorer address.
fn private(d: &Daemon, name: &str) -> SocketAddr {
    let file = d.home.join(format!("{name}.yml"));
    std::fs::write(&file, scorer_deployment("hostile-ep", name, 1)).expect("spec");
    let run = d.cli(&format!(
        "online-deployment create -f {} --set private_network_connection=true",
        file.display()
    ));
    let view: Value = serde_json::from_str(&run.ok().stdout).expect("json");
    let ip: Ipv4Addr = view["instances"][0]["address"].as_str().expect("address").parse().expect("ip");
    SocketAddr::from((ip, 5001))
}

/// The sum of `moat_egress_decisions_total` lines that have every part.
fn decisions(d: &Daemon, parts: &[&str]) -> f64 {
    let metrics = http(d.metrics_addr(), "GET", "/metrics", &[], "").map(|r| r.body).unwrap_or_default();
    metrics
        .lines()
        .filter(|l| l.starts_with("moat_egress_decisions_total") && parts.iter().all(|p| l.contains(p)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn tls_ports_take_only_a_whole_client_hello_that_names_the_endpoint() {
    require_test_image();
    let id = unique_id();
    let (_pe, pe_ip) = endpoint_host(217, &id, &[443, 8443, 7000]);
    let d = daemon(&format!(
        "{{name: vault, kind: key_vault, fqdn: kv.pe.test, aliases: [kv.privatelink.pe.test], ips: [{pe_ip}], ports: [443, 8443, 7000], tls_ports: [8443]}}"
    ));
    let sly = private(&d, "sly");
    let hello = |extra: Value| {
        let mut request = json!({"hello": "kv.pe.test:443", "sni": "kv.pe.test"});
        for (k, v) in extra.as_object().expect("object") {
            request[k] = v.clone();
        }
        request
    };
    let late = json!({"delay_ms": 800});
    let split = json!({"record": 40, "segment": 7, "gap_ms": 15});
    let large = json!({"pad": 6000});
    let connect = json!({"via": "connect"});
    let listed = json!({"hello": "kv.pe.test:8443"});

    for (case, extra) in [
        ("at once", json!({})),
        ("late", late.clone()),
        ("split into records and segments", split.clone()),
        ("larger than 4 KiB", large.clone()),
        ("through CONNECT", connect.clone()),
        ("on a port listed as TLS", listed.clone()),
        ("naming an alias", json!({"sni": "KV.privatelink.pe.test"})),
    ] {
        let (ok, detail) = probe(sly, hello(extra));
        assert!(ok && detail.starts_with("pe-"), "a proper ClientHello {case} was refused: {detail}");
    }

    let evil = |mut extra: Value| {
        extra["sni"] = json!("evil.example");
        extra
    };
    for (case, extra) in [
        ("another name", evil(json!({}))),
        ("another name, late", evil(late)),
        ("another name, split", evil(split)),
        ("another name, larger than 4 KiB", evil(large)),
        ("another name, through CONNECT", evil(connect)),
        ("another name, on a port listed as TLS", evil(listed)),
        ("no name", json!({"sni": null})),
        ("plain bytes", json!({"plain": "GET / HTTP/1.1\r\nHost: kv.pe.test\r\n\r\n"})),
        ("plain bytes through CONNECT", json!({"plain": "hello\n", "via": "connect"})),
        ("beyond 16 KiB", json!({"pad": 17000, "record": 16384})),
    ] {
        let (ok, detail) = probe(sly, hello(extra));
        assert!(!ok, "{case} got through: {detail}");
    }
    // A port not listed as TLS carries whatever the client sends.
    let (ok, detail) = probe(sly, json!({"hello": "kv.pe.test:7000", "plain": "hello\n"}));
    assert!(ok && detail == "pe-7000", "a plain port: {detail}");

    wait_until(Duration::from_secs(10), "the refusals counted by reason", || {
        let counts = ["sni_mismatch", "not_tls", "client_hello_too_large"]
            .map(|reason| decisions(&d, &["decision=\"deny\"", &format!("reason=\"{reason}\"")]));
        if counts[0] >= 7.0 && counts[1] >= 2.0 && counts[2] >= 1.0 {
            Ok(())
        } else {
            Err(format!("{counts:?}"))
        }
    });
}

/// Open descriptors of a process.
fn descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn a_flood_of_connections_is_capped_and_everyone_else_keeps_being_served() {
    require_test_image();
    let id = unique_id();
    let (_pe, pe_ip) = endpoint_host(218, &id, &[7000]);
    let d = daemon(&format!(
        "{{name: store, kind: storage_blob, fqdn: st.pe.test, ips: [{pe_ip}], ports: [7000]}}"
    ));
    let flooder = private(&d, "flood");
    let calm = private(&d, "calm");
    d.cli("online-endpoint update -n hostile-ep --traffic calm=100").ok();
    let key = d.cli("online-endpoint get-credentials -n hostile-ep --query primaryKey -o tsv").ok().stdout;
    let key = key.trim().to_string();
    let pid = d.pid().expect("daemon pid");
    let before = descriptors(pid);

    let flood =
        std::thread::spawn(move || probe(flooder, json!({"flood": "proxy", "count": 3000, "hold_ms": 8000})));
    wait_until(Duration::from_secs(20), "the cap reached", || {
        let refused = decisions(&d, &["deployment=\"flood\"", "reason=\"connection_cap\""]);
        if refused >= 300.0 { Ok(()) } else { Err(format!("{refused} refused")) }
    });
    // While the flooder holds every place it may: the other deployment reaches its private
    // endpoint both ways, the gateway scores, the daemon holds no more than the cap's worth.
    let during = descriptors(pid);
    assert!(during <= before + 2 * 256 + 64, "{before} descriptors before the flood, {during} during it");
    for request in [json!({"tcp": "st.pe.test:7000"}), json!({"tcp": "st.pe.test:7000", "via": "connect"})] {
        let (ok, detail) = probe(calm, request.clone());
        assert!(ok && detail == "pe-7000", "{request} from the calm deployment during the flood: {detail}");
    }
    let scored = http(
        d.scoring_addr(),
        "POST",
        "/endpoints/hostile-ep/score",
        &[("Authorization", &format!("Bearer {key}")), ("Content-Type", "application/json")],
        "{\"data\": [[1, 2]]}",
    )
    .expect("score");
    assert_eq!(scored.status, 200, "the gateway during the flood: {}", scored.body);

    let (ok, detail) = flood.join().expect("flood thread");
    assert!(ok, "the flood: {detail}");
    let result: Value = serde_json::from_str(&detail).expect("flood result");

    let (opened, closed) = (result["opened"].as_u64().unwrap_or(0), result["closed"].as_u64().unwrap_or(0));
    assert!(opened >= 600, "the container opened only {opened} connections: {result}");
    assert!(
        opened - closed <= 256,
        "{} of {opened} connections stayed open: the cap did not hold",
        opened - closed
    );

    // Its places come back once its connections go.
    wait_until(Duration::from_secs(20), "the flooder served again", || {
        let (ok, detail) = probe(flooder, json!({"tcp": "st.pe.test:7000", "via": "connect"}));
        if ok { Ok(()) } else { Err(detail) }
    });
    let log = d.log();
    let logged = log.lines().filter(|l| l.contains("\"reason\":\"connection_cap\"")).count();
    assert!((1..=60).contains(&logged), "{logged} connection_cap lines for thousands of refusals");
    let metrics = http(d.metrics_addr(), "GET", "/metrics", &[], "").expect("metrics").body;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("moat_egress_log_suppressed_total") && l.contains("deployment=\"flood\"")),
        "suppressed lines are counted"
    );
}
