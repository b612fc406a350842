//! Attaching the guard again to a network it already serves (a new revision of a private
//! deployment: scaled, say) leaves its listeners as they are: the containers' connections to
//! their private endpoints never find the guard's port closed. Another network (a changed
//! list of private endpoints) still replaces the attachment.
//!
//! Real parts: a bridge standing in for the deployment's, the guard's addresses and kernel
//! rules on it, a private endpoint listening on the bridge. Needs root, `ip` and `nft`; the
//! bridge and the table are removed when the test ends, also when it fails.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;

use moat_egress_guard::{Endpoint, Guard, Network};

/// The stand-in bridge and the guard's table, removed on drop.
struct Bridge {
    link: String,
    table: String,
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.link]).status();
        let _ = Command::new("nft").args(["delete", "table", "inet", &self.table]).status();
    }
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip").args(args).status().is_ok_and(|s| s.success())
}

/// The private endpoint: answers every connection with `text` and closes it.
fn endpoint(listener: TcpListener, text: &'static str) {
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let _ = stream.write_all(text.as_bytes());
        }
    });
}

fn fetch(at: SocketAddr) -> String {
    let mut stream = TcpStream::connect(at).expect("connect through the guard");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read");
    text
}

/// The inode of the socket listening on `at` (from /proc/net/tcp): the same socket, or
/// another one made since.
fn listening_socket(at: SocketAddr) -> Option<u64> {
    let SocketAddr::V4(at) = at else { return None };
    let local = format!("{:08X}:{:04X}", u32::from_le_bytes(at.ip().octets()), at.port());
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // local address, remote, state (0A: listening), ..., inode
        (fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&"0A"))
            .then(|| fields.get(9)?.parse().ok())
            .flatten()
    })
}

#[test]
fn attaching_the_same_network_again_keeps_the_listeners_and_another_replaces_them() {
    let id = format!("{:06x}", std::process::id() & 0xffffff);
    let third = (std::process::id() % 200) as u8 + 20;
    let gateway = Ipv4Addr::new(10, 253, third, 1);
    let home = format!("att{id}");
    let bridge = Bridge { link: format!("mga{id}"), table: format!("moat_{home}") };
    assert!(
        ip(&["link", "add", &bridge.link, "type", "bridge"])
            && ip(&["addr", "add", &format!("{gateway}/24"), "dev", &bridge.link])
            && ip(&["link", "set", &bridge.link, "up"]),
        "this test needs root and iproute2 (it makes a bridge)"
    );
    let listener = TcpListener::bind(SocketAddr::from((gateway, 0))).expect("endpoint");
    let port = listener.local_addr().expect("address").port();
    endpoint(listener, "private endpoint");

    let guard = Guard::new(&home, Arc::new(|_| {})).expect("guard");
    let network = |ports: Vec<u16>| Network {
        id: moat_id::DeploymentId::new("attach", "blue"),
        bridge: bridge.link.clone(),
        gateway,
        subnet: Ipv4Addr::new(10, 253, third, 0),
        prefix: 24,
        endpoints: vec![Endpoint {
            name: "storage".into(),
            fqdn: "storage.attach.test".into(),
            aliases: Vec::new(),
            ips: vec![gateway.into()],
            ports,
            tls_ports: Vec::new(),
        }],
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let first = runtime.block_on(guard.attach(network(vec![port]))).expect("attach");
    let through_guard = SocketAddr::from((first.addresses[0].1, port));
    assert_eq!(fetch(through_guard), "private endpoint");
    let before = listening_socket(through_guard).expect("the guard listens for the endpoint");

    let again = runtime.block_on(guard.attach(network(vec![port]))).expect("attach again");
    assert_eq!(again, first, "the same attachment");
    assert_eq!(listening_socket(through_guard), Some(before), "the same listener, never closed");
    assert_eq!(fetch(through_guard), "private endpoint");

    // Another list of ports: the attachment is made again.
    let other = TcpListener::bind(SocketAddr::from((gateway, 0))).expect("second endpoint");
    let other_port = other.local_addr().expect("address").port();
    endpoint(other, "private endpoint");
    let changed = runtime.block_on(guard.attach(network(vec![port, other_port]))).expect("attach changed");
    let after = listening_socket(SocketAddr::from((changed.addresses[0].1, port)));
    assert!(after.is_some_and(|inode| inode != before), "a changed network gets new listeners");
    assert_eq!(fetch(SocketAddr::from((changed.addresses[0].1, other_port))), "private endpoint");

    guard.detach(&moat_id::DeploymentId::new("attach", "blue"));
}
