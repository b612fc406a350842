//! Kernel rules with nftables, in the home's own table `inet moat_<home id>` (hooks input and
//! forward at priority -10, so they run before Docker's rules). For each private deployment:
//! from its bridge, established replies and the guard's own addresses and ports are accepted
//! and everything else is counted and dropped; into its bridge from anywhere else, the same.
//! Every chain, counter and jump of a deployment is named or commented `<endpoint>/<deployment>`.
//!
//! Each change is one `nft -f` script, so it applies whole or not at all; applying the same
//! deployment again replaces its rules (idempotent across daemon restarts).

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

/// One deployment's rules, as data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// `<endpoint>/<deployment>`.
    pub owner: String,
    pub bridge: String,
    pub gateway: Ipv4Addr,
    /// TCP and UDP ports of the guard on the gateway address (DNS, the proxy).
    pub gateway_tcp: Vec<u16>,
    pub gateway_udp: Vec<u16>,
    /// The guard's address per private endpoint, and its ports.
    pub endpoints: Vec<(Ipv4Addr, Vec<u16>)>,
}

pub fn table(home: &str) -> String {
    format!("moat_{home}")
}

fn list(ports: &[u16]) -> String {
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    format!("{{ {} }}", ports.join(", "))
}

/// The script that makes the table (if new) and sets this deployment's rules.
pub fn apply_script(home: &str, rules: &Rules, stale_jumps: &[(String, u64)]) -> String {
    let t = table(home);
    let o = &rules.owner;
    let (into, out) = (format!("{o}/from"), format!("{o}/to"));
    let b = &rules.bridge;
    let mut s = String::new();
    s.push_str(&format!("add table inet {t}\n"));
    s.push_str(&format!(
        "add chain inet {t} input {{ type filter hook input priority -10; policy accept; }}\n"
    ));
    s.push_str(&format!(
        "add chain inet {t} forward {{ type filter hook forward priority -10; policy accept; }}\n"
    ));
    for (chain, handle) in stale_jumps {
        s.push_str(&format!("delete rule inet {t} {chain} handle {handle}\n"));
    }
    s.push_str(&format!("add counter inet {t} {o}\n"));
    for chain in [&into, &out] {
        s.push_str(&format!("add chain inet {t} {chain}\nflush chain inet {t} {chain}\n"));
    }
    // From the deployment's bridge to the host: the guard only.
    s.push_str(&format!("add rule inet {t} {into} ct state established,related accept comment \"{o}\"\n"));
    if !rules.gateway_udp.is_empty() {
        s.push_str(&format!(
            "add rule inet {t} {into} ip daddr {} udp dport {} accept comment \"{o}\"\n",
            rules.gateway,
            list(&rules.gateway_udp)
        ));
    }
    if !rules.gateway_tcp.is_empty() {
        s.push_str(&format!(
            "add rule inet {t} {into} ip daddr {} tcp dport {} accept comment \"{o}\"\n",
            rules.gateway,
            list(&rules.gateway_tcp)
        ));
    }
    for (addr, ports) in &rules.endpoints {
        s.push_str(&format!(
            "add rule inet {t} {into} ip daddr {addr} tcp dport {} accept comment \"{o}\"\n",
            list(ports)
        ));
    }
    s.push_str(&format!("add rule inet {t} {into} counter name {o} drop comment \"{o}\"\n"));
    // Through the host (other networks, other containers, beyond the machine): nothing, either way.
    s.push_str(&format!("add rule inet {t} {out} ct state established,related accept comment \"{o}\"\n"));
    s.push_str(&format!("add rule inet {t} {out} counter name {o} drop comment \"{o}\"\n"));
    s.push_str(&format!("add rule inet {t} input iifname \"{b}\" jump {into} comment \"{o}\"\n"));
    s.push_str(&format!("add rule inet {t} forward iifname \"{b}\" jump {out} comment \"{o}\"\n"));
    s.push_str(&format!("add rule inet {t} forward oifname \"{b}\" jump {out} comment \"{o}\"\n"));
    s
}

/// The script that removes this deployment's rules, chains and counter.
pub fn remove_script(home: &str, owner: &str, jumps: &[(String, u64)]) -> String {
    let t = table(home);
    let mut s = String::new();
    for (chain, handle) in jumps {
        s.push_str(&format!("delete rule inet {t} {chain} handle {handle}\n"));
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

/// The jump rules of the base chains that belong to `owner`: (chain, handle).
fn jumps(home: &str, owner: &str) -> Vec<(String, u64)> {
    let Ok(json) = run(&["-j", "-a", "list", "table", "inet", &table(home)], None) else { return Vec::new() };
    let Ok(value) = serde_json::from_str::<serde_json::Value>(&json) else { return Vec::new() };
    value["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| {
            let rule = item.get("rule")?;
            let chain = rule["chain"].as_str()?;
            let base = chain == "input" || chain == "forward";
            (base && rule["comment"].as_str() == Some(owner))
                .then(|| Some((chain.to_string(), rule["handle"].as_u64()?)))?
        })
        .collect()
}

pub fn apply(home: &str, rules: &Rules) -> Result<(), String> {
    let stale = jumps(home, &rules.owner);
    run(&["-f", "-"], Some(&apply_script(home, rules, &stale)))?;
    Ok(())
}

pub fn remove(home: &str, owner: &str) -> Result<(), String> {
    let existing = jumps(home, owner);
    if existing.is_empty() && run(&["list", "counter", "inet", &table(home), owner], None).is_err() {
        return Ok(());
    }
    run(&["-f", "-"], Some(&remove_script(home, owner, &existing))).map(drop)
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
    fn a_deployment_gets_its_guard_ports_and_a_counted_drop_under_its_name() {
        let rules = Rules {
            owner: "ep/blue".into(),
            bridge: "br-0123456789ab".into(),
            gateway: Ipv4Addr::new(172, 20, 0, 1),
            gateway_tcp: vec![53, 3128],
            gateway_udp: vec![53],
            endpoints: vec![(Ipv4Addr::new(172, 20, 255, 254), vec![443])],
        };
        let s = apply_script("0a1b2c3d", &rules, &[("input".into(), 7)]);
        for line in [
            "add table inet moat_0a1b2c3d",
            "delete rule inet moat_0a1b2c3d input handle 7",
            "add rule inet moat_0a1b2c3d ep/blue/from ip daddr 172.20.0.1 udp dport { 53 } accept comment \"ep/blue\"",
            "add rule inet moat_0a1b2c3d ep/blue/from ip daddr 172.20.0.1 tcp dport { 53, 3128 } accept comment \"ep/blue\"",
            "add rule inet moat_0a1b2c3d ep/blue/from ip daddr 172.20.255.254 tcp dport { 443 } accept comment \"ep/blue\"",
            "add rule inet moat_0a1b2c3d ep/blue/from counter name ep/blue drop comment \"ep/blue\"",
            "add rule inet moat_0a1b2c3d input iifname \"br-0123456789ab\" jump ep/blue/from comment \"ep/blue\"",
        ] {
            assert!(s.lines().any(|l| l == line), "missing {line}\n{s}");
        }
        let established = s.find("ct state established,related accept").expect("established");
        assert!(established < s.find("counter name").expect("drop"), "replies are accepted before the drop");
    }
}
