//! Every moat network is fenced, public ones too: from a public deployment's container the
//! internet answers (a host of the test's own at a documentation address), while a host
//! listener on 0.0.0.0 (at the bridge's gateway and at the host's other addresses), a
//! stand-in metadata service at 169.254.169.254 (a namespace of the test's own) and another
//! deployment's container see no packet. Routes are checked before anything is sent.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::Ordering;

use std::time::Duration;

use moat_test_support::{
    Daemon, TestHost, counting_listener, http, probe, require_test_image, scorer_deployment, unique_id,
    wait_until,
};
use serde_json::{Value, json};

const MOAT: &str = env!("CARGO_BIN_EXE_moat");

fn deployment(d: &Daemon, name: &str) -> (SocketAddr, Ipv4Addr) {
    let file = d.home.join(format!("{name}.yml"));
    std::fs::write(&file, scorer_deployment("fence-ep", name, 1)).expect("spec");
    let view: Value =
        serde_json::from_str(&d.cli(&format!("online-deployment create -f {}", file.display())).ok().stdout)
            .expect("json");
    let ip: Ipv4Addr = view["instances"][0]["address"].as_str().expect("address").parse().expect("ip");
    let network = format!("moat-{}-fence-ep-{name}", d.home_id());
    let out = std::process::Command::new("docker")
        .args(["network", "inspect", "-f", "{{(index .IPAM.Config 0).Gateway}}", &network])
        .output()
        .expect("docker");
    let gateway = String::from_utf8_lossy(&out.stdout).trim().parse().expect("gateway");
    (SocketAddr::from((ip, 5001)), gateway)
}

#[test]
fn a_public_deployment_reaches_the_internet_but_not_the_host_the_metadata_service_or_another_deployment() {
    require_test_image();
    let id = unique_id();
    let n = u32::from_str_radix(&id, 16).expect("hex");
    // The upper half of 203.0.113.0/24 (tests/egress.rs takes the lower half, and runs alongside).
    let c = 0x80 | (n & 0x7c) as u8;
    let internet_ip = Ipv4Addr::new(203, 0, 113, c + 2);
    let internet = TestHost::new("fi", &id, Ipv4Addr::new(203, 0, 113, c + 1), internet_ip);
    let metadata_ip = Ipv4Addr::new(169, 254, 169, 254);
    let metadata = TestHost::new("fm", &id, Ipv4Addr::new(169, 254, 169, 253), metadata_ip);
    internet.assert_route_is_ours();
    metadata.assert_route_is_ours();
    let internet_seen = {
        let listener = internet.run(move || TcpListener::bind((internet_ip, 80)).expect("bind"));
        counting_listener(listener, "internet")
    };
    let metadata_seen = {
        let listener = metadata.run(move || TcpListener::bind((metadata_ip, 80)).expect("bind"));
        counting_listener(listener, "metadata-token")
    };
    let host = TcpListener::bind("0.0.0.0:0").expect("bind");
    let host_port = host.local_addr().expect("addr").port();
    let host_seen = counting_listener(host, "host-listener");
    // The stand-ins answer the host itself: what is blocked below is the fence's doing.
    for (addr, seen) in [
        (SocketAddr::from((metadata_ip, 80)), &metadata_seen),
        (SocketAddr::from(([127, 0, 0, 1], host_port)), &host_seen),
    ] {
        std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2))
            .expect("reachable from the host");
        moat_test_support::wait_until(std::time::Duration::from_secs(2), "the connection counted", || {
            if seen.load(Ordering::SeqCst) == 1 { Ok(()) } else { Err("not yet".into()) }
        });
    }

    let d = Daemon::start(MOAT);
    d.cli("online-endpoint create -n fence-ep -f examples/model-1/endpoint.yml").ok();
    let (blue, blue_gateway) = deployment(&d, "blue");
    let (green, _) = deployment(&d, "green");

    let (ok, detail) = probe(blue, json!({"tcp": format!("{internet_ip}:80")}));
    assert!(ok && detail.contains("internet"), "the internet is reached as before: {detail}");
    let blocked = [
        json!({"tcp": format!("{metadata_ip}:80")}),
        json!({"tcp": format!("{blue_gateway}:{host_port}")}),
        json!({"tcp": format!("{}:{host_port}", Ipv4Addr::new(203, 0, 113, c + 1))}),
        json!({"tcp": format!("{}:{host_port}", Ipv4Addr::new(169, 254, 169, 253))}),
        json!({"tcp": green.to_string(), "send": "GET /ready HTTP/1.1\r\n\r\n"}),
    ];
    for request in blocked {
        let (ok, detail) = probe(blue, request.clone());
        assert!(!ok, "{request} got through from a public deployment: {detail}");
    }
    assert_eq!(
        metadata_seen.load(Ordering::SeqCst),
        1,
        "the metadata stand-in saw nothing from the container"
    );
    assert_eq!(host_seen.load(Ordering::SeqCst), 1, "the host listener saw nothing from the container");
    assert_eq!(internet_seen.load(Ordering::SeqCst), 1);
    // The gateway still reaches its containers (the probes do too, or they would not be ready).
    let reply = http(green, "GET", "/ready", &[], "").expect("the host reaches its containers");
    assert_eq!(reply.status, 200);
    let rules = std::process::Command::new("nft")
        .args(["list", "table", "inet", &format!("moat_{}", d.home_id())])
        .output()
        .expect("nft");
    let rules = String::from_utf8_lossy(&rules.stdout);
    assert!(rules.contains("fence-ep/blue/to") && rules.contains("fence-ep/green/to"), "{rules}");

    // A table flushed from outside (a firewall reload, say) is noticed and made again, and
    // the log and a metric say so; then it was deleted outright: the same.
    let table = format!("moat_{}", d.home_id());
    for (round, command) in [(1.0, "flush"), (2.0, "delete")] {
        let nft = std::process::Command::new("nft").args([command, "table", "inet", &table]).status();
        assert!(nft.is_ok_and(|s| s.success()), "nft {command} table");
        wait_until(Duration::from_secs(15), "the table restored", || {
            let metrics = http(d.metrics_addr(), "GET", "/metrics", &[], "").map_err(|e| e.to_string())?.body;
            let restored = metrics
                .lines()
                .find_map(|l| l.strip_prefix("moat_kernel_rules_restored_total ")?.trim().parse::<f64>().ok())
                .unwrap_or(0.0);
            if restored >= round { Ok(()) } else { Err(format!("{restored} restores after {command}")) }
        });
        let (ok, detail) = probe(blue, json!({"tcp": format!("{blue_gateway}:{host_port}")}));
        assert!(!ok, "the host reached after the table was restored ({command}): {detail}");
        let (ok, detail) = probe(blue, json!({"tcp": format!("{internet_ip}:80")}));
        assert!(ok, "the internet after the table was restored ({command}): {detail}");
    }
    assert!(d.log().contains("flushed or changed from outside moat; restored"), "the log says so");
    assert_eq!(host_seen.load(Ordering::SeqCst), 1, "the host listener saw nothing from the container");
}
