//! Probes: the Azure ML threshold rules as a pure counter, and the [`Probe`] that asks a
//! container (one HTTP GET against a route, or a scripted answer in tests).
//!
//! A probe passes on any 2xx answer within its timeout. `success_threshold` consecutive passes
//! make a not-ready instance ready; `failure_threshold` consecutive failures make a ready one
//! not ready.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::spec::Route;

/// Consecutive-result counter with the probe's thresholds.
#[derive(Debug, Clone)]
pub struct Threshold {
    success_threshold: u32,
    failure_threshold: u32,
    passing: bool,
    streak: u32,
}

impl Threshold {
    pub fn new(success_threshold: u32, failure_threshold: u32, passing: bool) -> Self {
        Threshold {
            success_threshold: success_threshold.max(1),
            failure_threshold: failure_threshold.max(1),
            passing,
            streak: 0,
        }
    }

    pub fn passing(&self) -> bool {
        self.passing
    }

    /// Records one probe result; returns the new verdict when it flips.
    pub fn observe(&mut self, ok: bool) -> Option<bool> {
        if ok == self.passing {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if ok { self.success_threshold } else { self.failure_threshold };
        if self.streak >= needed {
            self.passing = ok;
            self.streak = 0;
            return Some(ok);
        }
        None
    }
}

/// Asks a container at `ip` whether `route` answers; `Err` says why not, for the instance's
/// `reason`.
#[async_trait]
pub trait Probe: Send + Sync + 'static {
    async fn check(&self, ip: IpAddr, route: &Route, timeout: Duration) -> Result<(), String>;
}

/// Sends probes over HTTP; one per supervisor, sharing its connection pool.
#[derive(Clone)]
pub struct HttpProbe {
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl Default for HttpProbe {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client =
            Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector);
        HttpProbe { client }
    }
}

#[async_trait]
impl Probe for HttpProbe {
    /// One GET of `route` on `ip`, passing on any 2xx within `timeout`.
    async fn check(&self, ip: IpAddr, route: &Route, timeout: Duration) -> Result<(), String> {
        let addr = SocketAddr::new(ip, route.port);
        let uri = format!("http://{addr}{}", route.path);
        let request = match hyper::Request::get(&uri).body(Empty::new()) {
            Ok(r) => r,
            Err(e) => return Err(format!("bad probe uri {uri}: {e}")),
        };
        match tokio::time::timeout(timeout, self.client.request(request)).await {
            Err(_) => Err(format!("GET {uri}: no answer within {timeout:?}")),
            Ok(Err(e)) => Err(format!("GET {uri}: {e}")),
            Ok(Ok(response)) if response.status().is_success() => Ok(()),
            Ok(Ok(response)) => Err(format!("GET {uri}: status {}", response.status().as_u16())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(t: &mut Threshold, results: &[bool]) -> Vec<Option<bool>> {
        results.iter().map(|&ok| t.observe(ok)).collect()
    }

    #[test]
    fn becomes_ready_after_success_threshold_consecutive_passes() {
        let mut t = Threshold::new(2, 3, false);
        assert_eq!(run(&mut t, &[true, false, true, true]), [None, None, None, Some(true)]);
        assert!(t.passing());
    }

    #[test]
    fn leaves_ready_only_after_failure_threshold_consecutive_failures() {
        let mut t = Threshold::new(1, 3, true);
        assert_eq!(
            run(&mut t, &[false, false, true, false, false, false]),
            [None, None, None, None, None, Some(false)]
        );
    }

    #[test]
    fn threshold_of_one_flips_at_once_and_zero_counts_as_one() {
        let mut t = Threshold::new(0, 1, false);
        assert_eq!(run(&mut t, &[true, false, true]), [Some(true), Some(false), Some(true)]);
    }
}
