//! The guard's addresses on a deployment's bridge: one per private endpoint, taken from the
//! top of the network's subnet (Docker hands containers addresses from the bottom).

use std::net::Ipv4Addr;
use std::process::Command;

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Already gone (del).
    if stderr.contains("Cannot assign requested address") {
        return Ok(());
    }
    Err(format!("ip {}: {}", args.join(" "), stderr.trim()))
}

/// The `count` highest usable addresses of `network/prefix`, highest first.
pub fn top_addresses(network: Ipv4Addr, prefix: u8, count: usize) -> Vec<Ipv4Addr> {
    let size = 1u64 << (32 - u32::from(prefix.min(30)));
    let broadcast = u64::from(u32::from(network)) + size - 1;
    (1..=count as u64)
        .filter_map(|i| u32::try_from(broadcast.checked_sub(i)?).ok())
        .map(Ipv4Addr::from)
        .collect()
}

/// Idempotent: a restarted guard finds its addresses still on the bridge.
pub fn add(bridge: &str, addr: Ipv4Addr) -> Result<(), String> {
    ip(&["addr", "replace", &format!("{addr}/32"), "dev", bridge])
}

pub fn remove(bridge: &str, addr: Ipv4Addr) {
    let _ = ip(&["addr", "del", &format!("{addr}/32"), "dev", bridge]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_addresses_come_from_the_top_of_the_subnet() {
        let addrs = top_addresses(Ipv4Addr::new(172, 20, 0, 0), 16, 3);
        assert_eq!(
            addrs,
            [
                Ipv4Addr::new(172, 20, 255, 254),
                Ipv4Addr::new(172, 20, 255, 253),
                Ipv4Addr::new(172, 20, 255, 252)
            ]
        );
        assert_eq!(top_addresses(Ipv4Addr::new(192, 168, 16, 0), 20, 1), [Ipv4Addr::new(192, 168, 31, 254)]);
    }
}
