//! Test hosts: network namespaces joined to the host by veth pairs.

use std::process::Command;

/// A network namespace joined to the host by a veth pair: a test host of its own, with an
/// address on a /30 whose other end is the host. Removed (with its links) when dropped.
pub struct TestHost {
    pub name: String,
    pub host_if: String,
    pub host_addr: std::net::Ipv4Addr,
    pub addr: std::net::Ipv4Addr,
}

fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip {args:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("ip {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

impl TestHost {
    /// `tag` (a few letters) and `id` make the names unique; `host_addr`/`addr` share a /30.
    pub fn new(tag: &str, id: &str, host_addr: std::net::Ipv4Addr, addr: std::net::Ipv4Addr) -> TestHost {
        TestHost::with_addresses(tag, id, host_addr, &[addr], 30)
    }

    /// A test host with several addresses (the first is `addr`) on a `/prefix` it shares
    /// with the host's end.
    pub fn with_addresses(
        tag: &str,
        id: &str,
        host_addr: std::net::Ipv4Addr,
        addrs: &[std::net::Ipv4Addr],
        prefix: u8,
    ) -> TestHost {
        let name = format!("moat-{id}-{tag}");
        let host_if = format!("m{id}{tag}");
        let peer_if = format!("n{id}{tag}");
        let host = TestHost { name: name.clone(), host_if: host_if.clone(), host_addr, addr: addrs[0] };
        let setup = || -> Result<(), String> {
            ip(&["netns", "add", &name])?;
            ip(&["link", "add", &host_if, "type", "veth", "peer", "name", &peer_if])?;
            ip(&["link", "set", &peer_if, "netns", &name])?;
            ip(&["addr", "add", &format!("{host_addr}/{prefix}"), "dev", &host_if])?;
            ip(&["link", "set", &host_if, "up"])?;
            for addr in addrs {
                ip(&[
                    "netns",
                    "exec",
                    &name,
                    "ip",
                    "addr",
                    "add",
                    &format!("{addr}/{prefix}"),
                    "dev",
                    &peer_if,
                ])?;
            }
            ip(&["netns", "exec", &name, "ip", "link", "set", &peer_if, "up"])?;
            ip(&["netns", "exec", &name, "ip", "link", "set", "lo", "up"])?;
            ip(&["netns", "exec", &name, "ip", "route", "add", "default", "via", &host_addr.to_string()])?;
            Ok(())
        };
        if let Err(e) = setup() {
            drop(host);
            panic!("setting up test host {name}: {e}");
        }
        host
    }

    /// Stops the test unless the host's route to this address leads into this host's link:
    /// no packet may go anywhere but to the test's own hosts.
    pub fn assert_route_is_ours(&self) {
        self.assert_route_to(self.addr);
    }

    /// The same check for another of this host's addresses.
    pub fn assert_route_to(&self, addr: std::net::Ipv4Addr) {
        let route = ip(&["route", "get", &addr.to_string()]).expect("ip route get");
        assert!(
            route
                .split_whitespace()
                .collect::<Vec<_>>()
                .windows(2)
                .any(|w| w == ["dev", self.host_if.as_str()]),
            "the route to {addr} does not lead into test host {}: {route}",
            self.name
        );
    }

    /// Runs `f` on a thread inside this host's network namespace (its sockets are the host's).
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn(f).join().expect("test host thread")
    }

    /// Starts `f` on a thread inside this host's network namespace (a server, say).
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            let ns = std::fs::File::open(&path).expect("namespace file");
            // SAFETY: setns on a file descriptor we own, for this thread only.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns into {path}: {}", std::io::Error::last_os_error());
            f()
        })
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
        let _ = ip(&["link", "del", &self.host_if]);
    }
}
