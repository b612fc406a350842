//! Kernel rules with nftables, in the home's own table `inet moat_<home id>` (hooks input and
//! forward at priority -10, so they run before Docker's rules). Every moat network gets a
//! fence; established replies (the host's own connections to its containers, the gateway's
//! and the probes') always pass:
//!
//! - a public network: nothing to the host (any of its addresses), nothing to link-local
//!   addresses (169.254.0.0/16, a cloud's metadata service among them; fe80::/10), nothing to
//!   or from another moat network; everything else as Docker would have it;
//! - a private network: to the host, only the guard's own sockets (its addresses and ports,
//!   and a listening socket that carries the guard's mark, so a host process that takes the
//!   port while the daemon is down serves nobody); through the host, nothing at all.
//!
//! The set `bridges` holds every moat bridge of the home. Every chain, counter and jump of a
//! deployment is named or commented `<endpoint>/<deployment>`. Each change is one `nft -f`
//! script, so it applies whole or not at all; applying the same deployment again replaces its
//! rules (idempotent across daemon restarts).
//!
//! A table flushed or edited from outside (a firewall reload, `nft flush ruleset`) is noticed:
//! [`snapshot`] is the table as the kernel shows it, without handles and counter values, taken
//! after each change and compared every few seconds; [`restore`] rebuilds the whole table in one
//! script.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

/// The mark (SO_MARK) on the guard's listening sockets; only sockets with it get a private
/// network's traffic.
pub const GUARD_MARK: u32 = 0x4d4f_4154;

/// One deployment's rules, as data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// `<endpoint>/<deployment>`.
    pub owner: String,
    pub bridge: String,
    pub fence: Fence,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fence {
    /// Out to anything but the host, link-local addresses and other moat networks.
    Public,
    /// Out to the guard's sockets only.
    Private {
        gateway: Ipv4Addr,
        /// TCP and UDP ports of the guard on the gateway address (DNS, the proxy).
        gateway_tcp: Vec<u16>,
        gateway_udp: Vec<u16>,
        /// The guard's address per private endpoint, and its ports.
        endpoints: Vec<(Ipv4Addr, Vec<u16>)>,
    },
}

pub fn table(home: &str) -> String {
    format!("moat_{home}")
}

fn list(ports: &[u16]) -> String {
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    format!("{{ {} }}", ports.join(", "))
}

/// The table, its base chains and the set of bridges, if they are not there yet.
fn table_script(t: &str) -> String {
    let mut s = format!("add table inet {t}\n");
    s.push_str(&format!(
        "add chain inet {t} input {{ type filter hook input priority -10; policy accept; }}\n"
    ));
    s.push_str(&format!(
        "add chain inet {t} forward {{ type filter hook forward priority -10; policy accept; }}\n"
    ));
    s.push_str(&format!("add set inet {t} bridges {{ type ifname; }}\n"));
    s
}

/// The script that makes the table (if new) and sets this deployment's rules.
pub fn apply_script(home: &str, rules: &Rules, stale_jumps: &[(String, u64)]) -> String {
    let t = table(home);
    let o = &rules.owner;
    let (into, out) = (format!("{o}/from"), format!("{o}/to"));
    let b = &rules.bridge;
    let mut s = table_script(&t);
    for (chain, handle) in stale_jumps {
        s.push_str(&format!("delete rule inet {t} {chain} handle {handle}\n"));
    }
    s.push_str(&format!("add element inet {t} bridges {{ \"{b}\" }}\n"));
    s.push_str(&format!("add counter inet {t} {o}\n"));
    for chain in [&into, &out] {
        s.push_str(&format!("add chain inet {t} {chain}\nflush chain inet {t} {chain}\n"));
    }
    let rule = |s: &mut String, chain: &str, body: &str| {
        s.push_str(&format!("add rule inet {t} {chain} {body} comment \"{o}\"\n"));
    };
    // From the deployment's bridge to the host: replies, and for a private network the guard.
    rule(&mut s, &into, "ct state established,related accept");
    if let Fence::Private { gateway, gateway_tcp, gateway_udp, endpoints } = &rules.fence {
        let mark = format!("socket mark {GUARD_MARK:#x}");
        if !gateway_udp.is_empty() {
            rule(&mut s, &into, &format!("ip daddr {gateway} udp dport {} {mark} accept", list(gateway_udp)));
        }
        if !gateway_tcp.is_empty() {
            rule(&mut s, &into, &format!("ip daddr {gateway} tcp dport {} {mark} accept", list(gateway_tcp)));
        }
        for (addr, ports) in endpoints {
            rule(&mut s, &into, &format!("ip daddr {addr} tcp dport {} {mark} accept", list(ports)));
        }
    }
    rule(&mut s, &into, &format!("counter name {o} drop"));
    // Through the host.
    rule(&mut s, &out, "ct state established,related accept");
    match &rules.fence {
        Fence::Private { .. } => {}
        Fence::Public => {
            // Its own network, not another moat network, not the link; the rest as Docker has it.
            rule(&mut s, &out, &format!("iifname \"{b}\" oifname \"{b}\" accept"));
            rule(&mut s, &out, &format!("iifname \"{b}\" ip daddr 169.254.0.0/16 counter name {o} drop"));
            rule(&mut s, &out, &format!("iifname \"{b}\" ip6 daddr fe80::/10 counter name {o} drop"));
            rule(&mut s, &out, &format!("iifname \"{b}\" oifname != @bridges accept"));
            rule(&mut s, &out, &format!("oifname \"{b}\" iifname != @bridges accept"));
        }
    }
    rule(&mut s, &out, &format!("counter name {o} drop"));
    rule(&mut s, "input", &format!("iifname \"{b}\" jump {into}"));
    rule(&mut s, "forward", &format!("iifname \"{b}\" jump {out}"));
    rule(&mut s, "forward", &format!("oifname \"{b}\" jump {out}"));
    s
}

/// The script that removes this deployment's rules, chains, counter and bridge.
pub fn remove_script(home: &str, owner: &str, jumps: &[(String, u64)], bridge: Option<&str>) -> String {
    let t = table(home);
    let mut s = String::new();
    for (chain, handle) in jumps {
        s.push_str(&format!("delete rule inet {t} {chain} handle {handle}\n"));
    }
    if let Some(b) = bridge {
        s.push_str(&format!("delete element inet {t} bridges {{ \"{b}\" }}\n"));
    }
    for chain in [format!("{owner}/from"), format!("{owner}/to")] {
        s.push_str(&format!("delete chain inet {t} {chain}\n"));
    }
    s.push_str(&format!("delete counter inet {t} {owner}\n"));
    s
}

fn run(args: &[&str], input: Option<&str>) -> Result<String, String> {
    let mut child = Command::new("nft")
        .args(args)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nft: {e}"))?;
    if let (Some(script), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(script.as_bytes()).map_err(|e| format!("nft: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("nft: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// The jump rules of the base chains that belong to `owner`, (chain, handle), and the bridge
/// they jump from.
fn jumps(home: &str, owner: &str) -> (Vec<(String, u64)>, Option<String>) {
    let Ok(json) = run(&["-j", "-a", "list", "table", "inet", &table(home)], None) else {
        return (Vec::new(), None);
    };
    let Ok(value) = serde_json::from_str::<serde_json::Value>(&json) else { return (Vec::new(), None) };
    let mut bridge = None;
    let jumps = value["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| {
            let rule = item.get("rule")?;
            let chain = rule["chain"].as_str()?;
            let base = chain == "input" || chain == "forward";
            if !(base && rule["comment"].as_str() == Some(owner)) {
                return None;
            }
            let matched = &rule["expr"][0]["match"];
            if matched["left"]["meta"]["key"] == "iifname" {
                bridge = matched["right"].as_str().map(String::from).or(bridge.take());
            }
            Some((chain.to_string(), rule["handle"].as_u64()?))
        })
        .collect();
    (jumps, bridge)
}

pub fn apply(home: &str, rules: &Rules) -> Result<(), String> {
    let (stale, _) = jumps(home, &rules.owner);
    run(&["-f", "-"], Some(&apply_script(home, rules, &stale)))?;
    Ok(())
}

pub fn remove(home: &str, owner: &str) -> Result<(), String> {
    let (existing, bridge) = jumps(home, owner);
    if existing.is_empty() && run(&["list", "counter", "inet", &table(home), owner], None).is_err() {
        return Ok(());
    }
    run(&["-f", "-"], Some(&remove_script(home, owner, &existing, bridge.as_deref()))).map(drop)
}

/// The table as the kernel lists it, without what changes by itself (handles, counter values);
/// None when there is no table (or nft cannot list it).
pub fn snapshot(home: &str) -> Option<String> {
    let json = run(&["-j", "list", "table", "inet", &table(home)], None).ok()?;
    let mut value: serde_json::Value = serde_json::from_str(&json).ok()?;
    let items = value.get_mut("nftables")?.as_array_mut()?;
    items.retain(|item| item.get("metainfo").is_none());
    for item in items.iter_mut() {
        without_volatile(item);
    }
    Some(value.to_string())
}

fn without_volatile(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for key in ["handle", "packets", "bytes"] {
                map.remove(key);
            }
            map.values_mut().for_each(without_volatile);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(without_volatile),
        _ => {}
    }
}

/// The script that makes the table anew with exactly these rules: one transaction, so there
/// is no moment without them.
pub fn restore_script(home: &str, all: &[Rules]) -> String {
    let t = table(home);
    let mut s = format!(
        "add table inet {t}
delete table inet {t}
"
    );
    s.push_str(&table_script(&t));
    for rules in all {
        s.push_str(&apply_script(home, rules, &[]));
    }
    s
}

pub fn restore(home: &str, all: &[Rules]) -> Result<(), String> {
    run(&["-f", "-"], Some(&restore_script(home, all))).map(drop)
}

/// Every deployment that has rules in the home's table (`<endpoint>/<deployment>`).
pub fn owners(home: &str) -> Vec<String> {
    let Ok(json) = run(&["-j", "list", "counters", "table", "inet", &table(home)], None) else {
        return Vec::new();
    };
    let Ok(value) = serde_json::from_str::<serde_json::Value>(&json) else { return Vec::new() };
    value["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| Some(i.get("counter")?["name"].as_str()?.to_string()))
        .collect()
}

/// Packets dropped for `owner` so far.
pub fn dropped(home: &str, owner: &str) -> Option<u64> {
    let json = run(&["-j", "list", "counter", "inet", &table(home), owner], None).ok()?;
    let value: serde_json::Value = serde_json::from_str(&json).ok()?;
    value["nftables"].as_array()?.iter().find_map(|i| i.get("counter")?["packets"].as_u64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_deployment_reaches_only_the_guards_marked_sockets() {
        let rules = Rules {
            owner: "ep/blue".into(),
            bridge: "br-0123456789ab".into(),
            fence: Fence::Private {
                gateway: Ipv4Addr::new(172, 20, 0, 1),
                gateway_tcp: vec![53, 3128],
                gateway_udp: vec![53],
                endpoints: vec![(Ipv4Addr::new(172, 20, 255, 254), vec![443])],
            },
        };
        let s = apply_script("0a1b2c3d", &rules, &[("input".into(), 7)]);
        for line in [
            "add table inet moat_0a1b2c3d",
            "add element inet moat_0a1b2c3d bridges { \"br-0123456789ab\" }",
            "delete rule inet moat_0a1b2c3d input handle 7",
            "add rule inet moat_0a1b2c3d ep/blue/from ip daddr 172.20.0.1 udp dport { 53 } socket mark 0x4d4f4154 accept comment \"ep/blue\"",
            "add rule inet moat_0a1b2c3d ep/blue/from ip daddr 172.20.0.1 tcp dport { 53, 3128 } socket mark 0x4d4f4154 accept comment \"ep/blue\"",
            "add rule inet moat_0a1b2c3d ep/blue/from ip daddr 172.20.255.254 tcp dport { 443 } socket mark 0x4d4f4154 accept comment \"ep/blue\"",
            "add rule inet moat_0a1b2c3d ep/blue/from counter name ep/blue drop comment \"ep/blue\"",
            "add rule inet moat_0a1b2c3d input iifname \"br-0123456789ab\" jump ep/blue/from comment \"ep/blue\"",
        ] {
            assert!(s.lines().any(|l| l == line), "missing {line}\n{s}");
        }
        let established = s.find("ct state established,related accept").expect("established");
        assert!(established < s.find("counter name").expect("drop"), "replies are accepted before the drop");
        assert!(!s.contains("oifname != @bridges accept"), "nothing goes through the host");
    }

    #[test]
    fn a_public_deployment_reaches_all_but_the_host_the_link_and_other_moat_networks() {
        let rules =
            Rules { owner: "ep/green".into(), bridge: "br-feedfacecafe".into(), fence: Fence::Public };
        let s = apply_script("0a1b2c3d", &rules, &[]);
        let t = "add rule inet moat_0a1b2c3d";
        let c = "comment \"ep/green\"";
        let expected = [
            format!("{t} ep/green/from ct state established,related accept {c}"),
            format!("{t} ep/green/from counter name ep/green drop {c}"),
            format!(
                "{t} ep/green/to iifname \"br-feedfacecafe\" ip daddr 169.254.0.0/16 counter name ep/green drop {c}"
            ),
            format!(
                "{t} ep/green/to iifname \"br-feedfacecafe\" ip6 daddr fe80::/10 counter name ep/green drop {c}"
            ),
            format!("{t} ep/green/to iifname \"br-feedfacecafe\" oifname != @bridges accept {c}"),
            format!("{t} ep/green/to counter name ep/green drop {c}"),
        ];
        let lines: Vec<&str> = s.lines().collect();
        let at = |line: &str| {
            lines.iter().position(|l| *l == line).unwrap_or_else(|| panic!("missing {line}\n{s}"))
        };
        let order: Vec<usize> = expected.iter().map(|l| at(l)).collect();
        assert!(
            order[2..].windows(2).all(|w| w[0] < w[1]),
            "link-local is dropped before the rest is let through"
        );
        assert!(!s.contains("socket mark"), "no host port is open to a public network");
    }

    #[test]
    fn a_restore_replaces_the_whole_table_in_one_script() {
        let green =
            Rules { owner: "ep/green".into(), bridge: "br-feedfacecafe".into(), fence: Fence::Public };
        let s = restore_script("0a1b2c3d", &[green]);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[..2], ["add table inet moat_0a1b2c3d", "delete table inet moat_0a1b2c3d"]);
        assert!(s.contains("jump ep/green/to"), "{s}");
        let mut listed =
            serde_json::json!({"rule": {"handle": 7, "expr": [{"counter": {"packets": 3, "bytes": 180}}]}});
        without_volatile(&mut listed);
        assert_eq!(listed, serde_json::json!({"rule": {"expr": [{"counter": {}}]}}));
    }

    #[test]
    fn removing_takes_the_bridge_out_of_the_set() {
        let s = remove_script("0a1b2c3d", "ep/green", &[("input".into(), 3)], Some("br-feedfacecafe"));
        assert!(s.contains("delete element inet moat_0a1b2c3d bridges { \"br-feedfacecafe\" }"), "{s}");
        assert!(s.contains("delete chain inet moat_0a1b2c3d ep/green/to"));
    }
}
