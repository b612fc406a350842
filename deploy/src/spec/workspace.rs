//! The workspace: its public network access and its private endpoints (the resources a
//! private deployment may reach). A home holds exactly one.

use std::collections::HashSet;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{Access, Broken, Document, ensure};
use crate::error::Error;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceFile {
    #[serde(rename = "$schema")]
    pub schema: Option<String>,
    pub name: Option<String>,
    pub public_network_access: Option<Access>,
    pub private_endpoints: Option<Vec<PrivateEndpointFile>>,
    pub description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivateEndpointFile {
    pub name: String,
    pub kind: PrivateEndpointKind,
    pub fqdn: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub ports: Vec<u16>,
    /// Which of `ports` besides 443 carry TLS (443 always does).
    #[serde(default)]
    pub tls_ports: Vec<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrivateEndpointKind {
    ContainerRegistry,
    KeyVault,
    StorageBlob,
    StorageFile,
    Workspace,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceSpec {
    pub name: String,
    pub public_network_access: Access,
    pub private_endpoints: Vec<PrivateEndpoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrivateEndpoint {
    pub name: String,
    pub kind: PrivateEndpointKind,
    pub fqdn: String,
    pub aliases: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub ports: Vec<u16>,
    /// Which of `ports` besides 443 carry TLS: on each, a connection must open with a
    /// ClientHello naming the endpoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls_ports: Vec<u16>,
}

impl WorkspaceSpec {
    /// What an empty home starts with.
    pub fn default_workspace() -> WorkspaceSpec {
        WorkspaceSpec {
            name: "default".into(),
            public_network_access: Access::Enabled,
            private_endpoints: Vec::new(),
            description: None,
        }
    }
}

/// A DNS name: dot-separated labels of letters, digits and hyphens, 253 characters at most.
fn is_host_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

pub fn validate(doc: &Document) -> Result<WorkspaceSpec, Error> {
    let file: WorkspaceFile = doc.decode()?;
    let name = file.name.ok_or_else(|| Error::Invalid(doc.locate("", "missing field `name`")))?;
    let canonical = |n: &str| n.trim_end_matches('.').to_ascii_lowercase();
    let private_endpoints = file
        .private_endpoints
        .unwrap_or_default()
        .into_iter()
        .map(|pe| PrivateEndpoint {
            name: pe.name,
            kind: pe.kind,
            fqdn: canonical(&pe.fqdn),
            aliases: pe.aliases.iter().map(|a| canonical(a)).collect(),
            ips: pe.ips,
            ports: pe.ports,
            tls_ports: pe.tls_ports,
        })
        .collect();
    let spec = WorkspaceSpec {
        name,
        public_network_access: file.public_network_access.unwrap_or_default(),
        private_endpoints,
        description: file.description,
    };
    spec.check().map_err(|broken| broken.located(doc))?;
    Ok(spec)
}

impl WorkspaceSpec {
    /// The workspace's rules, whoever made the spec: its name, and private endpoints with
    /// unique names, DNS names, and at least one address and port each.
    pub fn check(&self) -> Result<(), Broken> {
        let name = &self.name;
        let name_ok = (3..=33).contains(&name.len())
            && name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ensure(
            name_ok,
            "name",
            format!(
                "workspace name {name:?} is invalid: use 3-33 letters, digits, '-' or '_', starting with a letter or digit"
            ),
        )?;
        let mut seen = HashSet::new();
        for (i, pe) in self.private_endpoints.iter().enumerate() {
            let at = |field: &str| format!("private_endpoints[{i}].{field}");
            ensure(
                !pe.name.is_empty() && seen.insert(pe.name.clone()),
                &at("name"),
                format!("private endpoint name {:?} is empty or used twice", pe.name),
            )?;
            ensure(is_host_name(&pe.fqdn), &at("fqdn"), format!("{:?} is not a DNS name", pe.fqdn))?;
            for (j, alias) in pe.aliases.iter().enumerate() {
                ensure(
                    is_host_name(alias),
                    &at(&format!("aliases[{j}]")),
                    format!("{alias:?} is not a DNS name"),
                )?;
            }
            ensure(!pe.ips.is_empty(), &at("ips"), "list at least one address")?;
            for (j, ip) in pe.ips.iter().enumerate() {
                let class = moat_net::classify(*ip);
                ensure(
                    !class.points_home(),
                    &at(&format!("ips[{j}]")),
                    format!(
                        "{ip} is {class}; a private endpoint is an address beyond this machine and its link"
                    ),
                )?;
            }
            ensure(
                !pe.ports.is_empty() && !pe.ports.contains(&0),
                &at("ports"),
                "list at least one port, each 1-65535",
            )?;
            for (j, port) in pe.tls_ports.iter().enumerate() {
                ensure(
                    pe.ports.contains(port),
                    &at(&format!("tls_ports[{j}]")),
                    format!("{port} is not one of the endpoint's ports"),
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(text: &str) -> Result<WorkspaceSpec, Error> {
        validate(&Document::parse(Path::new("ws.yml"), text, &[])?)
    }

    #[test]
    fn the_contract_example_validates() {
        let ws = parse(
            "name: mlw-demo\npublic_network_access: enabled\nprivate_endpoints:\n  - name: registry\n    kind: container_registry\n    fqdn: crdemo.azurecr.io\n    aliases: [crdemo.privatelink.azurecr.io]\n    ips: [10.0.1.4]\n    ports: [443]\n",
        )
        .expect("valid");
        assert_eq!(ws.private_endpoints[0].kind, PrivateEndpointKind::ContainerRegistry);
    }

    #[test]
    fn bad_private_endpoints_are_located() {
        let e = parse("name: mlw-demo\nprivate_endpoints:\n  - name: r\n    kind: container_registry\n    fqdn: bad_name!\n    ips: [10.0.1.4]\n    ports: [443]\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("ws.yml:5:11: field `private_endpoints[0].fqdn`"), "{e}");
        let e = parse("name: mlw-demo\nprivate_endpoints:\n  - name: r\n    kind: dns\n    fqdn: a.b\n    ips: [10.0.1.4]\n    ports: [443]\n").unwrap_err();
        assert_eq!(e.exit_code(), 2, "{e}");
    }

    #[test]
    fn private_endpoints_that_point_home_are_refused_whatever_the_spelling() {
        let with_ip = |ip: &str| {
            parse(&format!(
                "name: mlw-demo\nprivate_endpoints:\n  - name: r\n    kind: key_vault\n    fqdn: kv.vault.azure.net\n    ips: [10.0.1.4, \"{ip}\"]\n    ports: [443]\n"
            ))
        };
        for (ip, class) in [
            ("127.0.0.1", "loopback"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("169.254.169.254", "link-local"),
            ("::ffff:169.254.169.254", "link-local"),
            ("fe80::1", "link-local"),
            ("0.0.0.0", "unspecified"),
            ("::", "unspecified"),
            ("224.0.0.251", "multicast"),
            ("ff02::1", "multicast"),
        ] {
            let e = with_ip(ip).unwrap_err().to_string();
            assert!(e.contains("field `private_endpoints[0].ips[1]`") && e.contains(class), "{ip}: {e}");
        }
        for neighbour in
            ["10.0.1.5", "169.253.255.255", "169.255.0.1", "126.255.255.255", "128.0.0.1", "fd00::4"]
        {
            assert!(with_ip(neighbour).is_ok(), "{neighbour} is an ordinary address");
        }
    }

    #[test]
    fn public_access_can_be_disabled() {
        let ws = parse("name: mlw-demo\npublic_network_access: disabled\n").expect("valid");
        assert_eq!(ws.public_network_access, Access::Disabled);
    }
}
