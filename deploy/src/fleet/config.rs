//! The `fleet` section of `config.yaml`: which fleet, its etcd, and the fleet key.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::Error;
use crate::store::etcd::EtcdSettings;
use crate::store::seal::FleetKey;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetFile {
    name: Option<String>,
    etcd: Option<EtcdFile>,
    key_file: Option<PathBuf>,
    max_staleness_s: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EtcdFile {
    endpoints: Option<Vec<String>>,
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
}

/// A node's fleet settings, checked: the etcd connection settings and the fleet key file.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    pub name: String,
    pub etcd: EtcdSettings,
    pub key_file: PathBuf,
}

/// A fleet name: the same rule as a workspace name, since it names a tree in etcd.
fn name_ok(name: &str) -> bool {
    (3..=33).contains(&name.len())
        && name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `invalid(field, message)` makes the located error; relative paths resolve against `base`.
pub fn parse(
    file: &FleetFile,
    base: &Path,
    invalid: &dyn Fn(&str, &str) -> Error,
) -> Result<FleetConfig, Error> {
    let name = file.name.clone().ok_or_else(|| invalid("fleet", "give the fleet's `name`"))?;
    if !name_ok(&name) {
        return Err(invalid(
            "fleet.name",
            "use 3-33 letters, digits, '-' or '_', starting with a letter or digit",
        ));
    }
    let etcd = file.etcd.as_ref().ok_or_else(|| invalid("fleet", "give `etcd.endpoints`"))?;
    let endpoints = etcd.endpoints.clone().unwrap_or_default();
    let url_ok = |e: &String| {
        (e.starts_with("http://") || e.starts_with("https://")) && e.parse::<hyper::Uri>().is_ok()
    };
    if endpoints.is_empty() || !endpoints.iter().all(url_ok) {
        return Err(invalid("fleet.etcd.endpoints", "list etcd's client URLs, like http://10.0.1.4:2379"));
    }
    let read = |field: &str, path: &PathBuf| {
        std::fs::read(base.join(path))
            .map_err(|e| invalid(field, &format!("{}: {e}", base.join(path).display())))
    };
    let tls = match (&etcd.ca_file, &etcd.cert_file, &etcd.key_file) {
        (None, None, None) => None,
        (Some(ca), cert, key) => {
            let mut tls = etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(read("fleet.etcd.ca_file", ca)?));
            match (cert, key) {
                (Some(cert), Some(key)) => {
                    let identity = etcd_client::Identity::from_pem(
                        read("fleet.etcd.cert_file", cert)?,
                        read("fleet.etcd.key_file", key)?,
                    );
                    tls = tls.identity(identity);
                }
                (None, None) => {}
                _ => return Err(invalid("fleet.etcd", "give cert_file and key_file together")),
            }
            Some(tls)
        }
        _ => return Err(invalid("fleet.etcd", "client certificates need the ca_file that verifies etcd")),
    };
    let key_file = file
        .key_file
        .as_ref()
        .map(|k| base.join(k))
        .ok_or_else(|| invalid("fleet", "give the fleet's `key_file`"))?;
    let max_staleness = Duration::from_secs(file.max_staleness_s.unwrap_or(30));
    if max_staleness.is_zero() {
        return Err(invalid("fleet.max_staleness_s", "must be at least 1"));
    }
    Ok(FleetConfig {
        etcd: EtcdSettings { endpoints, tls, fleet: name.clone(), max_staleness },
        name,
        key_file,
    })
}

impl FleetConfig {
    /// The fleet key from its file: owner-only, 64 hex digits (32 random bytes).
    pub fn load_key(&self) -> Result<FleetKey, Error> {
        let path = self.key_file.display();
        let meta = std::fs::metadata(&self.key_file)
            .map_err(|e| Error::Invalid(format!("fleet key_file {path}: {e}")))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(Error::Invalid(format!(
                "fleet key_file {path} can be read by others (mode {:o}); make it owner-only: chmod 600 {path}",
                meta.permissions().mode() & 0o777
            )));
        }
        let text = std::fs::read_to_string(&self.key_file)
            .map_err(|e| Error::Invalid(format!("fleet key_file {path}: {e}")))?;
        FleetKey::from_hex(&text).ok_or_else(|| {
            Error::Invalid(format!(
                "fleet key_file {path} must hold 32 random bytes as 64 hex digits (openssl rand -hex 32)"
            ))
        })
    }
}
