//! What the egress guard costs a private deployment's connection to a private endpoint: a
//! short exchange (connect, ask, one byte back, close) and a 1 MiB download, through the
//! guard's listener for the endpoint, straight to the endpoint, and through haproxy in TCP
//! mode (a peer, when `haproxy` is installed), all in the same run.
//!
//! The guard is attached for real: its address on an empty bridge standing in for the
//! deployment's bridge, its kernel rules in a table of the bench's own (removed at the end).
//! Needs root, `ip` and `nft`: `cargo bench -p moat-egress-guard --bench guard`.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use moat_egress_guard::{Endpoint, Guard, Network};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const MIB: usize = 1 << 20;

/// The private endpoint: reads a line with a byte count, sends that many bytes, closes.
async fn endpoint(listener: tokio::net::TcpListener) {
    let payload: Arc<[u8]> = vec![b'x'; MIB].into();
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let payload = payload.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let mut stream = BufReader::new(stream);
            let mut line = String::new();
            if stream.read_line(&mut line).await.is_err() {
                return;
            }
            let n = line.trim().parse::<usize>().unwrap_or(0).min(MIB);
            let _ = stream.get_mut().write_all(&payload[..n]).await;
        });
    }
}

/// One exchange as a client does it: connect, ask for `n` bytes, read them to the end.
fn fetch(at: SocketAddr, n: usize) {
    let mut stream = TcpStream::connect(at).expect("connect");
    let _ = stream.set_nodelay(true);
    stream.write_all(format!("{n}\n").as_bytes()).expect("ask");
    let mut got = Vec::with_capacity(n);
    stream.read_to_end(&mut got).expect("read");
    assert_eq!(got.len(), n, "short reply from {at}");
}

/// The stand-in bridge, and what has to go when the bench ends.
struct Bench {
    link: String,
    table: String,
    haproxy: Option<Child>,
}

impl Drop for Bench {
    fn drop(&mut self) {
        if let Some(child) = &mut self.haproxy {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("ip").args(["link", "del", &self.link]).status();
        let _ = Command::new("nft").args(["delete", "table", "inet", &self.table]).status();
    }
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip").args(args).status().is_ok_and(|s| s.success())
}

/// haproxy in TCP mode on `listen`, forwarding to `to`; None when it is not installed.
fn haproxy(listen: SocketAddr, to: SocketAddr) -> Option<Child> {
    let config = format!(
        "global\n  maxconn 4096\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\nlisten guard\n  bind {listen}\n  server endpoint {to}\n"
    );
    // The configuration goes in on stdin: no file to leave behind.
    let mut child =
        Command::new("haproxy").args(["-db", "-f", "/dev/stdin"]).stdin(Stdio::piped()).spawn().ok()?;
    child.stdin.take()?.write_all(config.as_bytes()).ok()?;
    for _ in 0..50 {
        if TcpStream::connect(listen).is_ok() {
            return Some(child);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

fn guard(c: &mut Criterion) {
    let id = format!("{:06x}", std::process::id() & 0xffffff);
    let third = (std::process::id() % 200) as u8 + 20;
    let gateway = Ipv4Addr::new(10, 251, third, 1);
    let bench = Bench { link: format!("mgb{id}"), table: format!("moat_bench{id}"), haproxy: None };
    if !(ip(&["link", "add", &bench.link, "type", "bridge"])
        && ip(&["addr", "add", &format!("{gateway}/24"), "dev", &bench.link])
        && ip(&["link", "set", &bench.link, "up"]))
    {
        eprintln!("the guard bench needs root and iproute2 (it makes a bridge); skipped");
        return;
    }
    let mut bench = bench;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    // On the bridge's own address: the guard never dials loopback.
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(SocketAddr::from((gateway, 0))))
        .expect("bind endpoint");
    let direct = listener.local_addr().expect("endpoint address");
    runtime.spawn(endpoint(listener));

    // The guard's decision log as the daemon writes it: one JSON line per connection.
    let sink: moat_egress_guard::DecisionSink = Arc::new(|decision| {
        std::hint::black_box(serde_json::to_vec(decision).ok());
    });
    let guard = Guard::new(&format!("bench{id}"), sink).expect("the guard's runtime");
    let network = Network {
        id: moat_id::DeploymentId::new("bench", "guard"),
        bridge: bench.link.clone(),
        gateway,
        subnet: Ipv4Addr::new(10, 251, third, 0),
        prefix: 24,
        endpoints: vec![Endpoint {
            name: "storage".into(),
            fqdn: "storage.bench.test".into(),
            aliases: Vec::new(),
            ips: vec![direct.ip()],
            ports: vec![direct.port()],
            tls_ports: Vec::new(),
        }],
    };
    let attachment = runtime.block_on(guard.attach(network)).expect("attach the guard");
    let through_guard = SocketAddr::from((attachment.addresses[0].1, direct.port()));
    let haproxy_at =
        std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port");
    bench.haproxy = haproxy(haproxy_at, direct);
    let through_haproxy = bench.haproxy.as_ref().map(|_| haproxy_at);

    let mut routes = vec![("direct", direct), ("guard", through_guard)];
    routes.extend(through_haproxy.map(|at| ("haproxy", at)));
    let mut connection = c.benchmark_group("connection");
    for (name, at) in &routes {
        connection.bench_function(*name, |b| b.iter(|| fetch(*at, 1)));
    }
    connection.finish();
    let mut transfer = c.benchmark_group("transfer_1mib");
    transfer.throughput(Throughput::Bytes(MIB as u64)).sample_size(30);
    for (name, at) in &routes {
        transfer.bench_function(*name, |b| b.iter(|| fetch(*at, MIB)));
    }
    transfer.finish();
    guard.detach(&moat_id::DeploymentId::new("bench", "guard"));
}

criterion_group!(benches, guard);
criterion_main!(benches);
