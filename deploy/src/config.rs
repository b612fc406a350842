//! `config.yaml` and the `serve` flags that override it. Unknown keys are refused, and keys of
//! features not built yet are refused when set to anything but their default.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use moat_gateway::auth::aad::{AadConfig, MIN_REFRESH_GAP};
use moat_gateway::ingress::{IngressConfig, Mode};
use moat_gateway::tls::TlsFiles;
use moat_gateway::trace::TracingConfig;
use moat_supervisor::BackoffSettings;
use serde::Deserialize;

use crate::error::Error;
use crate::fleet::config::{FleetConfig, FleetFile};
use crate::spec::Document;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default = "default_listen", deserialize_with = "nullable")]
    listen: Option<String>,
    tls: Option<TlsFile>,
    #[serde(default = "default_metrics_listen", deserialize_with = "nullable")]
    metrics_listen: Option<String>,
    advertise_host: Option<String>,
    domain: Option<String>,
    workers: Option<usize>,
    log_file: Option<PathBuf>,
    max_body_bytes: Option<usize>,
    max_buffered_body_bytes: Option<usize>,
    max_response_bytes: Option<u64>,
    max_streams_per_connection: Option<u32>,
    max_header_bytes: Option<usize>,
    max_connections: Option<usize>,
    header_read_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    shutdown_delay_s: Option<u64>,
    shutdown_grace_s: Option<u64>,
    mirror_max_in_flight: Option<usize>,
    ingress: Option<IngressFile>,
    auth: Option<AuthFile>,
    supervisor: Option<SupervisorFile>,
    fleet: Option<FleetFile>,
    tracing: Option<TracingFile>,
}

fn default_listen() -> Option<String> {
    Some(DEFAULT_LISTEN.to_string())
}

fn default_metrics_listen() -> Option<String> {
    Some(DEFAULT_METRICS_LISTEN.to_string())
}

/// `listen: null` turns the listener off, which differs from leaving the key out.
fn nullable<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Option::<String>::deserialize(d)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    listen: String,
    cert: PathBuf,
    key: PathBuf,
}

/// The TLS listener: where, and its certificate and key.
#[derive(Debug, Clone)]
pub struct Tls {
    pub listen: SocketAddr,
    pub files: TlsFiles,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IngressFile {
    private_networks: Option<Vec<String>>,
    trusted_proxies: Option<Vec<String>>,
    private_link_ids: Option<Vec<u32>>,
    mode: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthFile {
    aml_token_ttl_s: Option<u64>,
    aad: Option<AadFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AadFile {
    issuer: Option<String>,
    jwks_uri: Option<String>,
    audience: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TracingFile {
    otlp_endpoint: Option<String>,
    service_name: Option<String>,
    sample_ratio: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SupervisorFile {
    restart_backoff_initial_ms: Option<u64>,
    restart_backoff_max_ms: Option<u64>,
    restart_backoff_reset_s: Option<u64>,
    stop_timeout_s: Option<u64>,
    model_roots: Option<Vec<PathBuf>>,
}

/// The signing keys decide who may score: they come over TLS, or from this machine itself.
fn jwks_uri_allowed(text: &str) -> bool {
    let Ok(uri) = text.parse::<hyper::Uri>() else { return false };
    match (uri.scheme_str(), uri.host()) {
        (Some("https"), Some(_)) => true,
        (Some("http"), Some(host)) => {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
        _ => false,
    }
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9464";

/// The daemon's settings, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Option<SocketAddr>,
    pub tls: Option<Tls>,
    pub metrics_listen: Option<SocketAddr>,
    pub advertise_host: String,
    pub domain: Option<String>,
    pub workers: usize,
    pub log_file: Option<PathBuf>,
    pub max_body_bytes: usize,
    /// Request body bytes held at once over all requests.
    pub max_buffered_body_bytes: usize,
    pub max_response_bytes: u64,
    pub max_streams_per_connection: u32,
    pub max_header_bytes: usize,
    pub max_connections: usize,
    pub mirror_max_in_flight: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    /// After SIGTERM, how long `/readyz` says 503 while the listeners still serve, so that a
    /// balancer's probe takes the node out before it stops accepting.
    pub shutdown_delay: Duration,
    pub shutdown_grace: Duration,
    pub stop_timeout: Duration,
    pub backoff: BackoffSettings,
    /// `supervisor.model_roots`, resolved; empty: any folder the system-folder rule allows.
    pub model_roots: Vec<PathBuf>,
    pub aml_token_ttl: Duration,
    pub aad: Option<AadConfig>,
    pub tracing: TracingConfig,
    pub ingress: IngressConfig,
    /// `None`: the embedded store, one node.
    pub fleet: Option<FleetConfig>,
}

/// `serve` flags; each overrides its config key.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub listen: Option<String>,
    pub metrics_listen: Option<String>,
    pub advertise_host: Option<String>,
    pub workers: Option<usize>,
    pub log_file: Option<PathBuf>,
}

fn addr(field: &str, text: &str) -> Result<SocketAddr, Error> {
    text.parse().map_err(|_| Error::Parse(format!("{field}: {text:?} is not an address like 127.0.0.1:8080")))
}

impl Config {
    /// Reads `--config FILE`, else the home's `config.yaml` when it exists, then the flags.
    pub fn load(home_config: &Path, flags: &Overrides) -> Result<Config, Error> {
        let path = flags.config.clone().or_else(|| home_config.exists().then(|| home_config.to_path_buf()));
        let (file, doc) = match &path {
            Some(p) => {
                let doc = Document::load(p, &[])?;
                (doc.decode::<ConfigFile>()?, Some(doc))
            }
            None => (
                ConfigFile {
                    listen: default_listen(),
                    metrics_listen: default_metrics_listen(),
                    ..ConfigFile::default()
                },
                None,
            ),
        };

        let invalid = |field: &str, message: &str| {
            Error::Invalid(match &doc {
                Some(d) => d.locate(field, message),
                None => message.to_string(),
            })
        };
        let ingress = match &file.ingress {
            None => IngressConfig::default(),
            Some(i) => {
                let cidrs = |field: &str, list: &[String]| -> Result<Vec<IpNet>, Error> {
                    list.iter()
                        .map(|c| c.parse::<IpNet>().or_else(|_| c.parse::<IpAddr>().map(IpNet::from)))
                        .collect::<Result<_, _>>()
                        .map_err(|_| invalid(field, "expected addresses or CIDRs like 10.0.0.0/8"))
                };
                let defaults = IngressConfig::default();
                IngressConfig {
                    private_networks: match &i.private_networks {
                        Some(list) => cidrs("ingress.private_networks", list)?,
                        None => defaults.private_networks,
                    },
                    trusted_proxies: cidrs(
                        "ingress.trusted_proxies",
                        i.trusted_proxies.as_deref().unwrap_or_default(),
                    )?,
                    private_link_ids: i.private_link_ids.clone().unwrap_or_default(),
                    mode: match i.mode.as_deref() {
                        None | Some("enforce") => Mode::Enforce,
                        Some("report") => Mode::Report,
                        Some(_) => return Err(invalid("ingress.mode", "expected enforce or report")),
                    },
                }
            }
        };
        // Relative certificate paths resolve against the config file's folder.
        let base = path.as_ref().and_then(|p| p.parent()).map(Path::to_path_buf).unwrap_or_default();
        let tls = match &file.tls {
            None => None,
            Some(t) => {
                let files = TlsFiles { cert: base.join(&t.cert), key: base.join(&t.key) };
                moat_gateway::tls::load(&files).map_err(|e| invalid("tls", &e))?;
                Some(Tls { listen: addr("tls.listen", &t.listen)?, files })
            }
        };
        let auth = file.auth.as_ref();
        let aml_token_ttl = Duration::from_secs(auth.and_then(|a| a.aml_token_ttl_s).unwrap_or(3600));
        if aml_token_ttl.is_zero() {
            return Err(invalid("auth.aml_token_ttl_s", "must be at least 1"));
        }
        let aad = match auth.and_then(|a| a.aad.as_ref()) {
            None => None,
            Some(AadFile { issuer: None, jwks_uri: None, .. }) => None,
            Some(AadFile { issuer: Some(issuer), jwks_uri: Some(jwks_uri), audience }) => {
                if !jwks_uri_allowed(jwks_uri) {
                    return Err(invalid(
                        "auth.aad.jwks_uri",
                        "must be an https URL (plain http only to a loopback address)",
                    ));
                }
                Some(AadConfig {
                    issuer: issuer.clone(),
                    jwks_uri: jwks_uri.clone(),
                    audience: audience.clone().unwrap_or_else(|| "https://ml.azure.com".into()),
                    refresh_gap: MIN_REFRESH_GAP,
                })
            }
            Some(_) => return Err(invalid("auth.aad", "give both issuer and jwks_uri")),
        };
        let mirror_max_in_flight = file.mirror_max_in_flight.unwrap_or(64);
        let supervisor = file.supervisor.as_ref();
        let defaults = BackoffSettings::default();
        let backoff = BackoffSettings {
            initial: supervisor
                .and_then(|s| s.restart_backoff_initial_ms)
                .map_or(defaults.initial, Duration::from_millis),
            max: supervisor
                .and_then(|s| s.restart_backoff_max_ms)
                .map_or(defaults.max, Duration::from_millis),
            reset_after: supervisor
                .and_then(|s| s.restart_backoff_reset_s)
                .map_or(defaults.reset_after, Duration::from_secs),
        };
        if backoff.initial.is_zero() || backoff.max < backoff.initial {
            let message = "restart_backoff_initial_ms must be at least 1 and at most restart_backoff_max_ms";
            return Err(Error::Invalid(match &doc {
                Some(d) => d.locate("supervisor", message),
                None => message.to_string(),
            }));
        }

        let mut model_roots = Vec::new();
        for root in supervisor.and_then(|s| s.model_roots.as_deref()).unwrap_or_default() {
            let root = base.join(root);
            match root.canonicalize() {
                Ok(real) if real.is_dir() => model_roots.push(real),
                _ => {
                    let message = format!("{} is not a folder", root.display());
                    return Err(invalid("supervisor.model_roots", &message));
                }
            }
        }

        let tracing = match &file.tracing {
            None => TracingConfig::default(),
            Some(t) => {
                let defaults = TracingConfig::default();
                let sample_ratio = t.sample_ratio.unwrap_or(defaults.sample_ratio);
                if !(0.0..=1.0).contains(&sample_ratio) {
                    return Err(invalid("tracing.sample_ratio", "must be from 0.0 to 1.0"));
                }
                let endpoint_ok = |e: &str| {
                    e.parse::<hyper::Uri>()
                        .is_ok_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some())
                };
                if let Some(endpoint) = t.otlp_endpoint.as_deref().filter(|e| !endpoint_ok(e)) {
                    let message =
                        format!("{endpoint:?} is not an http(s) URL (such as http://127.0.0.1:4318)");
                    return Err(invalid("tracing.otlp_endpoint", &message));
                }
                let service_name = t.service_name.clone().unwrap_or(defaults.service_name);
                if service_name.trim().is_empty() {
                    return Err(invalid("tracing.service_name", "must not be empty"));
                }
                TracingConfig { otlp_endpoint: t.otlp_endpoint.clone(), service_name, sample_ratio }
            }
        };

        let fleet = match &file.fleet {
            None => None,
            Some(f) => Some(crate::fleet::config::parse(f, &base, &invalid)?),
        };

        let listen_text = flags.listen.clone().or(file.listen);
        let listen = match listen_text.as_deref() {
            None | Some("null") => None,
            Some(text) => Some(addr("listen", text)?),
        };
        let metrics_text = flags.metrics_listen.clone().or(file.metrics_listen);
        let metrics_listen = match metrics_text.as_deref() {
            None | Some("null") => None,
            Some(text) => Some(addr("metrics_listen", text)?),
        };
        let workers = flags.workers.or(file.workers).unwrap_or(0);
        let max_header_bytes = file.max_header_bytes.unwrap_or(65_536);
        let max_connections = file.max_connections.unwrap_or(10_000);
        if max_connections == 0 {
            return Err(Error::Invalid("max_connections must be at least 1".into()));
        }
        let max_body_bytes = file.max_body_bytes.unwrap_or(10 * 1024 * 1024);
        let max_buffered_body_bytes = file.max_buffered_body_bytes.unwrap_or(256 * 1024 * 1024);
        if max_buffered_body_bytes < max_body_bytes {
            return Err(invalid("max_buffered_body_bytes", "must be at least max_body_bytes"));
        }
        let max_response_bytes = file.max_response_bytes.unwrap_or(100 * 1024 * 1024);
        let max_streams_per_connection = file.max_streams_per_connection.unwrap_or(100);
        if max_streams_per_connection == 0 {
            return Err(invalid("max_streams_per_connection", "must be at least 1"));
        }
        Ok(Config {
            listen,
            tls,
            metrics_listen,
            advertise_host: flags
                .advertise_host
                .clone()
                .or(file.advertise_host)
                .unwrap_or_else(|| "127.0.0.1".into()),
            domain: file.domain,
            workers,
            log_file: flags.log_file.clone().or(file.log_file),
            max_body_bytes,
            max_buffered_body_bytes,
            max_response_bytes,
            max_streams_per_connection,
            max_header_bytes,
            max_connections,
            mirror_max_in_flight,
            header_read_timeout: Duration::from_millis(file.header_read_timeout_ms.unwrap_or(10_000)),
            idle_timeout: Duration::from_millis(file.idle_timeout_ms.unwrap_or(60_000)),
            shutdown_delay: Duration::from_secs(file.shutdown_delay_s.unwrap_or(10)),
            shutdown_grace: Duration::from_secs(file.shutdown_grace_s.unwrap_or(30)),
            stop_timeout: Duration::from_secs(supervisor.and_then(|s| s.stop_timeout_s).unwrap_or(30)),
            backoff,
            model_roots,
            aml_token_ttl,
            aad,
            tracing,
            ingress,
            fleet,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, flags: Overrides) -> Result<Config, Error> {
        let dir =
            std::env::temp_dir().join(format!("moat-config-{}-{}", std::process::id(), fastrand::u64(..)));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("config.yaml");
        std::fs::write(&path, text).expect("write");
        let result = Config::load(&path, &flags);
        let _ = std::fs::remove_dir_all(&dir);
        result
    }

    /// The package's config is moat's defaults, written out: loading it changes nothing.
    #[test]
    fn the_packaged_config_is_the_defaults() {
        let packaged =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/config.yaml"))
                .expect("packaging/config.yaml");
        let from_file = load(&packaged, Overrides::default()).expect("the packaged config loads");
        let defaults = load("{}", Overrides::default()).expect("defaults");
        assert_eq!(format!("{from_file:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn defaults_flags_and_null() {
        let c = load("", Overrides::default()).expect("valid");
        assert_eq!(c.listen, Some(addr("x", DEFAULT_LISTEN).expect("addr")));
        let c = load("listen: null\n", Overrides::default()).expect("valid");
        assert_eq!(c.listen, None);
        let c = load(
            "listen: 127.0.0.1:9\n",
            Overrides { listen: Some("127.0.0.1:0".into()), ..Overrides::default() },
        )
        .expect("valid");
        assert_eq!(c.listen.map(|a| a.port()), Some(0));
    }

    #[test]
    fn unknown_keys_are_refused_with_a_suggestion() {
        let e = load("listn: 1\n", Overrides::default()).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("did you mean `listen`"), "{e}");
    }

    #[test]
    fn ingress_settings_parse_and_bad_ones_are_named() {
        let c = load(
            "ingress:\n  trusted_proxies: [10.9.0.0/16, 10.8.0.4]\n  private_link_ids: [42]\n  mode: report\n",
            Overrides::default(),
        )
        .expect("valid");
        assert_eq!(c.ingress.mode, Mode::Report);
        assert_eq!(c.ingress.trusted_proxies.len(), 2);
        assert_eq!(c.ingress.private_networks.len(), 6, "the defaults stay");
        let e = load("ingress:\n  mode: lenient\n", Overrides::default()).unwrap_err().to_string();
        assert!(e.contains("ingress.mode") && e.contains("enforce or report"), "{e}");
        let e = load("ingress:\n  trusted_proxies: [10.9.0.0/33]\n", Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("ingress.trusted_proxies"), "{e}");
    }

    #[test]
    fn a_fleet_needs_a_name_etcd_endpoints_and_a_key_file() {
        let c = load(
            "fleet:\n  name: prod-eastus\n  etcd: {endpoints: [http://10.0.1.4:2379]}\n  key_file: /etc/moat/fleet.key\n",
            Overrides::default(),
        )
        .expect("valid");
        let fleet = c.fleet.expect("fleet");
        assert_eq!((fleet.name.as_str(), fleet.etcd.max_staleness), ("prod-eastus", Duration::from_secs(30)));
        for (text, expected) in [
            ("fleet:\n  etcd: {endpoints: [http://a:2379]}\n  key_file: k\n", "give the fleet's `name`"),
            ("fleet:\n  name: x y\n  etcd: {endpoints: [http://a:2379]}\n  key_file: k\n", "fleet.name"),
            ("fleet:\n  name: abc\n  etcd: {endpoints: []}\n  key_file: k\n", "fleet.etcd.endpoints"),
            ("fleet:\n  name: abc\n  etcd: {endpoints: [10.0.1.4:2379]}\n  key_file: k\n", "client URLs"),
            ("fleet:\n  name: abc\n  etcd: {endpoints: [http://a:2379]}\n", "key_file"),
            (
                "fleet:\n  name: abc\n  etcd: {endpoints: [http://a:2379], cert_file: c}\n  key_file: k\n",
                "ca_file",
            ),
        ] {
            let e = load(text, Overrides::default()).unwrap_err().to_string();
            assert!(e.contains(expected), "{text}: {e}");
        }
    }

    #[test]
    fn tracing_and_the_stream_limits_parse_and_bad_values_are_named() {
        let c = load(
            "tracing: {otlp_endpoint: http://127.0.0.1:4318, sample_ratio: 0.25}\nmax_response_bytes: 1000\n",
            Overrides::default(),
        )
        .expect("valid");
        assert_eq!(c.tracing.otlp_endpoint.as_deref(), Some("http://127.0.0.1:4318"));
        assert_eq!((c.tracing.service_name.as_str(), c.tracing.sample_ratio), ("moat", 0.25));
        assert_eq!(c.max_response_bytes, 1000);
        let defaults = load("", Overrides::default()).expect("valid");
        assert_eq!(defaults.tracing, TracingConfig::default());
        assert_eq!(defaults.max_response_bytes, 104_857_600);
        for (text, expected) in [
            ("tracing: {sample_ratio: 1.5}\n", "tracing.sample_ratio"),
            ("tracing: {otlp_endpoint: collector:4318}\n", "tracing.otlp_endpoint"),
            ("tracing: {service_name: \"\"}\n", "tracing.service_name"),
            ("tracing: {endpoint: x}\n", "endpoint"),
            ("max_buffered_body_bytes: 10\n", "max_buffered_body_bytes"),
            ("max_streams_per_connection: 0\n", "max_streams_per_connection"),
        ] {
            let e = load(text, Overrides::default()).unwrap_err().to_string();
            assert!(e.contains(expected), "{text}: {e}");
        }
    }

    #[test]
    fn model_roots_resolve_and_a_missing_one_is_named() {
        let c = load("supervisor:\n  model_roots: [/tmp]\n", Overrides::default()).expect("valid");
        assert_eq!(c.model_roots, vec![Path::new("/tmp").canonicalize().expect("tmp")]);
        let e = load("supervisor:\n  model_roots: [/no/such/models]\n", Overrides::default()).unwrap_err();
        assert!(
            e.to_string().contains("supervisor.model_roots") && e.to_string().contains("/no/such/models"),
            "{e}"
        );
    }

    #[test]
    fn aad_needs_an_issuer_and_a_jwks_uri_and_defaults_its_audience() {
        let c = load(
            "auth:\n  aml_token_ttl_s: 60\n  aad: {issuer: https://login.test/t/v2.0, jwks_uri: https://login.test/keys}\n",
            Overrides::default(),
        )
        .expect("valid");
        assert_eq!(c.aml_token_ttl, Duration::from_secs(60));
        assert_eq!(c.aad.expect("aad").audience, "https://ml.azure.com");
        let e = load("auth:\n  aad: {issuer: https://login.test}\n", Overrides::default()).unwrap_err();
        assert!(e.to_string().contains("give both issuer and jwks_uri"), "{e}");
        for refused in ["ftp://x", "http://login.test/keys", "http://10.0.0.1/keys", "https://", "keys"] {
            let e = load(
                &format!("auth:\n  aad: {{issuer: x, jwks_uri: \"{refused}\"}}\n"),
                Overrides::default(),
            )
            .unwrap_err();
            assert!(e.to_string().contains("must be an https URL"), "{refused}: {e}");
        }
        for allowed in [
            "https://login.test/keys",
            "http://127.0.0.1:8123/keys",
            "http://[::1]:80/k",
            "http://localhost/k",
        ] {
            let text = format!("auth:\n  aad: {{issuer: x, jwks_uri: \"{allowed}\"}}\n");
            assert!(load(&text, Overrides::default()).is_ok(), "{allowed}");
        }
    }
}
