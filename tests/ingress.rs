//! Ingress isolation with real networks: a private client and a public one, each a network
//! namespace of the test's own joined to the host by a veth pair, score an endpoint while the
//! workspace's and the endpoint's public network access change; the private host also plays
//! the trusted balancer that sends PROXY v2 headers. Nothing is sent anywhere else: each
//! test host's route is checked first.

use std::net::{Ipv4Addr, SocketAddr};

use moat_test_support::{Daemon, TEST_IMAGE, TestHost, http, require_test_image, unique_id};
use serde_json::Value;

const MOAT: &str = env!("CARGO_BIN_EXE_moat");

/// Two /30s of the test's own: a private one in 10.213.0.0/16 and a public one in the
/// documentation range 198.51.100.0/24.
fn hosts(id: &str) -> (TestHost, TestHost) {
    let n = u32::from_str_radix(id, 16).expect("hex id");
    let (a, b) = (((n >> 8) & 0xff) as u8, (n & 0xfc) as u8);
    let private = TestHost::new("pv", id, Ipv4Addr::new(10, 213, a, b + 1), Ipv4Addr::new(10, 213, a, b + 2));
    let public =
        TestHost::new("pb", id, Ipv4Addr::new(198, 51, 100, b + 1), Ipv4Addr::new(198, 51, 100, b + 2));
    private.assert_route_is_ours();
    public.assert_route_is_ours();
    (private, public)
}

fn tsv(d: &Daemon, line: &str) -> String {
    d.cli(&format!("{line} -o tsv")).ok().stdout.trim().to_string()
}

/// Scores from inside a test host; the status (0 when the connection was closed).
fn score_from(host: &TestHost, gateway: SocketAddr, path: &str, key: &str, prefix: Vec<u8>) -> u16 {
    let (path, key) = (path.to_string(), key.to_string());
    host.run(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect_timeout(&gateway, std::time::Duration::from_secs(5)).expect("connect");
        s.set_read_timeout(Some(std::time::Duration::from_secs(10))).expect("timeout");
        let mut bytes = prefix;
        bytes.extend(
            format!("POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}")
                .as_bytes(),
        );
        if s.write_all(&bytes).is_err() {
            return 0;
        }
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
    })
}

#[test]
fn public_network_access_decides_who_is_served() {
    require_test_image();
    let id = unique_id();
    let (private, public) = hosts(&id);
    let config = format!("ingress:\n  trusted_proxies: [{}/32]\n  private_link_ids: [4242]\n", private.addr);
    let d = Daemon::start_listening(MOAT, &config, "0.0.0.0:0");
    d.cli("online-endpoint create -n iso-ep -f examples/model-1/endpoint.yml").ok();
    let spec = d.home.join("blue.yml");
    std::fs::write(
        &spec,
        format!(
            "name: blue\nendpoint_name: iso-ep\nenvironment:\n  image: {TEST_IMAGE}\n  inference_config:\n    readiness_route: {{port: 5001, path: /ready}}\n    liveness_route: {{port: 5001, path: /live}}\n    scoring_route: {{port: 5001, path: /score}}\ninstance_type: Standard_F1s\nreadiness_probe: {{initial_delay: 0, period: 1}}\n"
        ),
    )
    .expect("spec");
    d.cli(&format!("online-deployment create -f {} --all-traffic", spec.display())).ok();
    let key = tsv(&d, "online-endpoint get-credentials -n iso-ep --query primaryKey");
    let port: u16 = tsv(&d, "online-endpoint show -n iso-ep --query scoring_uri")
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next()?.parse().ok())
        .expect("port");
    let path = "/endpoints/iso-ep/score";
    let via_private = SocketAddr::from((private.host_addr, port));
    let via_public = SocketAddr::from((public.host_addr, port));
    let from_private = || score_from(&private, via_private, path, &key, Vec::new());
    let from_public = || score_from(&public, via_public, path, &key, Vec::new());
    assert_eq!((from_private(), from_public()), (200, 200), "public access enabled: both");

    // Disabling the workspace's public access warns about the deployment it cuts off.
    let run = d.cli("workspace update --public-network-access disabled");
    assert!(run.stderr.contains("iso-ep/blue"), "{}", run.stderr);
    let run = run.ok();
    let ws: Value = serde_json::from_str(&run.stdout).expect("json");
    assert_eq!(ws["public_network_access"], "disabled");
    assert_eq!((from_private(), from_public()), (200, 403), "private ingress only, from the next request");
    let view: Value =
        serde_json::from_str(&d.cli("online-deployment show -n blue -e iso-ep").ok().stdout).expect("json");
    assert!(view["warnings"].to_string().contains("public network access disabled"), "{view}");
    let refused = d.cli(&format!("online-deployment create -n green -f {} -e iso-ep", spec.display()));
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains("unsupported pair") && refused.stderr.contains("supported pairs are"),
        "{}",
        refused.stderr
    );

    // The private host as the trusted balancer speaks for its clients in PROXY v2.
    let header = |source: &str, link: Option<u32>| {
        let source: SocketAddr = source.parse().expect("addr");
        moat_gateway::ingress::proxy_protocol::v2_header(Some(source), via_private, link)
    };
    let balanced = |prefix: Vec<u8>| score_from(&private, via_private, path, &key, prefix);
    assert_eq!(balanced(header("198.51.100.77:5000", None)), 403, "a public client behind the balancer");
    assert_eq!(
        balanced(header("198.51.100.77:5000", Some(4242))),
        200,
        "through the listed private endpoint"
    );
    assert_eq!(balanced(header("198.51.100.77:5000", Some(1))), 403, "an unlisted LINKID");
    assert_eq!(balanced(header("10.20.30.40:5000", None)), 200, "a private client behind the balancer");
    // The public host is no balancer: its PROXY header closes the connection.
    assert_eq!(score_from(&public, via_public, path, &key, header("10.20.30.40:5000", None)), 0);

    d.cli("workspace update --public-network-access enabled").ok();
    assert_eq!((from_private(), from_public()), (200, 200));
    d.cli("online-endpoint update -n iso-ep --set public_network_access=disabled").ok();
    assert_eq!((from_private(), from_public()), (200, 403), "the endpoint's own setting");

    let metrics = http(d.metrics_addr(), "GET", "/metrics", &[], "").expect("metrics").body;
    let denied = |reason: &str| {
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("moat_ingress_denied_total")
                    && l.contains(reason)
                    && l.contains("mode=\"enforce\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    assert!(denied("public_access_disabled") >= 4.0, "{metrics}");
    assert!(denied("untrusted_proxy_header") >= 1.0, "{metrics}");
}
