//! The route table: everything the gateway needs to answer a request, built by `deploy` from
//! the desired state and the supervisor's ready instances. A new table replaces the old one
//! atomically; a request keeps the table it started with until it ends.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::HeaderValue;

use crate::admission::{Admission, Limits};
use crate::auth::aml::AmlKey;
use crate::auth::principals::Principals;

/// Endpoints or deployments by name. Looked up for every request by names the operator gave,
/// so hashed with foldhash rather than SipHash, which is made to withstand keys an attacker
/// chooses and cost a fiftieth of a proxied request's instructions here.
pub type ByName<V> = HashMap<String, V, foldhash::fast::RandomState>;

#[derive(Debug, Default)]
pub struct RouteTable {
    pub endpoints: ByName<EndpointRoute>,
    /// moat's own bridge subnets: a client there is a container, never private ingress.
    pub moat_networks: Vec<ipnet::IpNet>,
}

#[derive(Debug)]
pub struct EndpointRoute {
    /// Shared with the requests that log it, rather than copied into each.
    pub name: Arc<str>,
    /// Public network access of the workspace and the endpoint together: when false, only
    /// private ingress is served.
    pub public_access: bool,
    pub credentials: Credentials,
    /// Deployments with a positive share of live traffic, in percent.
    pub traffic: Vec<(String, u32)>,
    /// The mirror deployment and the percent of live requests copied to it.
    pub mirror: Option<(String, u32)>,
    pub deployments: ByName<Arc<DeploymentRoute>>,
}

/// What a caller must present. Debug never shows a key.
pub enum Credentials {
    /// `auth_mode: key`: the primary and secondary keys.
    Keys(Vec<Vec<u8>>),
    /// `auth_mode: aml_token`: tokens signed with the workspace's key, for this audience.
    AmlToken { key: Arc<AmlKey>, audience: String },
    /// `auth_mode: aad_token`: tokens of the configured OpenID issuer, of these principals.
    AadToken { allowed: Principals },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Keys(keys) => write!(f, "Keys(<{} redacted>)", keys.len()),
            Credentials::AmlToken { audience, .. } => write!(f, "AmlToken({audience})"),
            Credentials::AadToken { allowed } => write!(f, "AadToken({allowed:?})"),
        }
    }
}

impl Credentials {
    pub fn mode(&self) -> &'static str {
        match self {
            Credentials::Keys(_) => "key",
            Credentials::AmlToken { .. } => "aml_token",
            Credentials::AadToken { .. } => "aad_token",
        }
    }
}

#[derive(Debug)]
pub struct DeploymentRoute {
    pub name: Arc<str>,
    /// The name as every answer's `azureml-model-deployment` value, made once (none if the
    /// name cannot be a header value).
    pub name_header: Option<HeaderValue>,
    pub scoring_path: String,
    /// The container's OpenAPI document, served at the endpoint's `swagger.json`.
    pub swagger_path: String,
    pub request_timeout: Duration,
    /// Its ready instances and who may use them now (shared across tables).
    pub admission: Arc<Admission>,
}

impl DeploymentRoute {
    /// Publishes `instances` and `limits` to the deployment's admission as well.
    pub fn new(
        name: &str,
        scoring_path: &str,
        request_timeout: Duration,
        admission: Arc<Admission>,
        instances: Vec<Upstream>,
        limits: Limits,
    ) -> Self {
        admission.configure(instances, limits);
        DeploymentRoute {
            name: name.into(),
            name_header: HeaderValue::from_str(name).ok(),
            scoring_path: scoring_path.to_string(),
            swagger_path: "/swagger.json".to_string(),
            request_timeout,
            admission,
        }
    }
}

/// One ready instance: its name (for logs and headers), where its scoring port listens, and
/// its in-flight counter (shared across tables, see [`crate::load::Load`]).
#[derive(Debug, Clone)]
pub struct Upstream {
    pub instance: Arc<str>,
    pub addr: SocketAddr,
    pub load: Arc<AtomicUsize>,
    /// `addr` as the `Host` of requests to it, made once rather than per request.
    pub host: http::HeaderValue,
}

impl Upstream {
    pub fn new(instance: impl Into<Arc<str>>, addr: SocketAddr, load: Arc<AtomicUsize>) -> Upstream {
        // An address's text is digits, dots, colons and brackets: always a valid value.
        let host = http::HeaderValue::try_from(addr.to_string())
            .unwrap_or_else(|_| http::HeaderValue::from_static("localhost"));
        Upstream { instance: instance.into(), addr, load, host }
    }

    pub fn in_flight(&self) -> usize {
        self.load.load(Ordering::Relaxed)
    }
}

/// The handle through which `deploy` publishes tables and requests read them.
#[derive(Clone, Default)]
pub struct Routes {
    current: Arc<ArcSwap<RouteTable>>,
}

impl Routes {
    pub fn publish(&self, table: RouteTable) {
        self.current.store(Arc::new(table));
    }

    pub fn load(&self) -> Arc<RouteTable> {
        self.current.load_full()
    }
}
