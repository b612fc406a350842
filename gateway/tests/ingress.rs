//! The ingress policy through a real listener: clients on loopback addresses of their own, a
//! trusted balancer (127.0.0.1) that sends PROXY v1/v2 headers with and without a LINKID,
//! and an untrusted peer (127.0.0.2) whose claims count for nothing.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use moat_gateway::ingress::proxy_protocol::v2_header;
use moat_gateway::ingress::{IngressConfig, Mode};
use moat_gateway::{AccessRecord, Admissions, Config, Credentials, Gateway, RouteTable, Routes};
use tokio::net::TcpListener;

const KEY: &str = "ingress-test-key";

struct Harness {
    addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
}

async fn gateway(mode: Mode) -> Harness {
    let up = common::upstream("{}").await;
    let admissions = Admissions::default();
    let endpoint = |name: &str, public_access: bool| {
        common::endpoint(
            &admissions,
            name,
            up,
            Credentials::Keys(vec![KEY.as_bytes().to_vec()]),
            public_access,
        )
    };
    let routes = Routes::default();
    routes.publish(RouteTable {
        moat_networks: Vec::new(),
        endpoints: HashMap::from_iter([endpoint("closed", false), endpoint("open", true)]),
    });
    let ingress = IngressConfig {
        trusted_proxies: vec!["127.0.0.1/32".parse().expect("cidr")],
        private_link_ids: vec![42],
        mode,
        ..IngressConfig::default()
    };
    let logs = Arc::new(Mutex::new(Vec::new()));
    let sink = {
        let logs = logs.clone();
        Arc::new(move |r: &AccessRecord| {
            logs.lock().expect("logs").push(serde_json::to_string(r).expect("json"))
        })
    };
    let gw = Gateway::new(Config { ingress, ..Config::default() }, routes, sink);
    // Every loopback address reaches it: 127.0.0.1 is the balancer, 127.0.0.2 a stranger.
    let listener = TcpListener::bind("0.0.0.0:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(moat_gateway::serve(listener, gw, std::future::pending(), Duration::from_secs(1)));
    Harness { addr: SocketAddr::from(([127, 0, 0, 1], port)), logs }
}

/// Connects from `from`, sends `prefix` then a scoring request; the status, or None when the
/// server closed the connection without answering.
fn call(from: &str, to: SocketAddr, prefix: &[u8], endpoint: &str, extra: &str) -> Option<u16> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let local: SocketAddr = format!("{from}:0").parse().expect("from");
    socket.bind(&local.into()).expect("bind");
    socket.connect(&to.into()).expect("connect");
    let mut stream: std::net::TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let request = format!(
        "POST /endpoints/{endpoint}/score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n{extra}Content-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    );
    let mut bytes = prefix.to_vec();
    bytes.extend(request.as_bytes());
    if stream.write_all(&bytes).is_err() {
        return None;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.split_whitespace().nth(1).and_then(|s| s.parse().ok())
}

async fn call_async(
    from: &'static str,
    to: SocketAddr,
    prefix: Vec<u8>,
    endpoint: &'static str,
    extra: &'static str,
) -> Option<u16> {
    tokio::task::spawn_blocking(move || call(from, to, &prefix, endpoint, extra)).await.expect("join")
}

fn public() -> Option<SocketAddr> {
    Some("198.51.100.7:40000".parse().expect("addr"))
}

fn private() -> Option<SocketAddr> {
    Some("10.1.2.3:40000".parse().expect("addr"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_endpoint_answers_private_ingress_only() {
    let h = gateway(Mode::Enforce).await;
    let to = h.addr;
    let cases: Vec<(&str, Vec<u8>, &str, Option<u16>)> = vec![
        ("private client by PROXY v2", v2_header(private(), to, None), "", Some(200)),
        ("public client by PROXY v2", v2_header(public(), to, None), "", Some(403)),
        ("public client with a listed LINKID", v2_header(public(), to, Some(42)), "", Some(200)),
        ("public client with an unlisted LINKID", v2_header(public(), to, Some(43)), "", Some(403)),
        ("balancer health probe (LOCAL)", v2_header(None, to, None), "", Some(403)),
        ("private client by PROXY v1", b"PROXY TCP4 10.1.2.3 127.0.0.1 40000 80\r\n".to_vec(), "", Some(200)),
        (
            "public client by PROXY v1",
            b"PROXY TCP4 198.51.100.7 127.0.0.1 40000 80\r\n".to_vec(),
            "",
            Some(403),
        ),
        ("public client by X-Forwarded-For", vec![], "X-Forwarded-For: 198.51.100.7\r\n", Some(403)),
        ("private client by X-Forwarded-For", vec![], "X-Forwarded-For: 10.1.2.3\r\n", Some(200)),
    ];
    for (what, prefix, extra, want) in cases {
        assert_eq!(call_async("127.0.0.1", to, prefix, "closed", extra).await, want, "{what}");
    }
    // The stranger 127.0.0.2 is loopback, so private; its own claims change nothing.
    assert_eq!(
        call_async("127.0.0.2", to, vec![], "closed", "X-Forwarded-For: 198.51.100.7\r\n").await,
        Some(200)
    );
    assert_eq!(
        call_async("127.0.0.2", to, v2_header(private(), to, None), "closed", "").await,
        None,
        "closed at once"
    );
    assert_eq!(
        call_async("127.0.0.2", to, b"PROXY TCP4 10.1.2.3 127.0.0.1 1 80\r\n".to_vec(), "closed", "").await,
        None
    );

    let logs = h.logs.lock().expect("logs").join("\n");
    assert!(logs.contains("\"client\":\"198.51.100.7\"") && logs.contains("\"policy\":\"deny\""), "{logs}");
    let body_check = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(to).expect("connect");
        let mut bytes = v2_header(public(), to, None);
        bytes.extend(b"POST /endpoints/closed/score HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        s.write_all(&bytes).expect("write");
        let mut answer = String::new();
        s.read_to_string(&mut answer).expect("read");
        answer
    })
    .await
    .expect("join");
    assert!(
        body_check.contains("public network access to endpoint closed is disabled; use its private endpoint"),
        "{body_check}"
    );
    assert!(
        body_check.starts_with("HTTP/1.1 403"),
        "the policy runs before the credential check: {body_check}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_endpoint_answers_everyone() {
    let h = gateway(Mode::Enforce).await;
    assert_eq!(
        call_async("127.0.0.1", h.addr, v2_header(public(), h.addr, None), "open", "").await,
        Some(200)
    );
    assert_eq!(call_async("127.0.0.1", h.addr, v2_header(None, h.addr, None), "open", "").await, Some(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_mode_serves_and_logs_what_it_would_refuse() {
    let h = gateway(Mode::Report).await;
    assert_eq!(
        call_async("127.0.0.1", h.addr, v2_header(public(), h.addr, None), "closed", "").await,
        Some(200)
    );
    // An untrusted peer's PROXY header is taken off the wire, not believed, and served.
    assert_eq!(
        call_async("127.0.0.2", h.addr, v2_header(public(), h.addr, None), "closed", "").await,
        Some(200)
    );
    let logs = h.logs.lock().expect("logs").join("\n");
    assert!(logs.contains("\"policy\":\"would_deny\""), "{logs}");
    assert!(logs.contains("\"client\":\"127.0.0.2\""), "{logs}");
}
