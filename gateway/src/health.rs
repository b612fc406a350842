//! `/healthz` and `/readyz`, for balancers and orchestrators (CONTRACT.md "Health and
//! lifecycle"): no credential, no access policy, no access line. `/healthz` answers 200 while
//! the process serves; `/readyz` answers 200 only while the node is ready, which `deploy`
//! decides (store loaded, route table built, not draining, not stale) and sets here.

use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;

pub const HEALTHZ: &str = "/healthz";
pub const READYZ: &str = "/readyz";

/// Whether the node is ready, and why not when it is not.
#[derive(Debug)]
pub struct Health {
    unready: ArcSwap<Option<String>>,
}

impl Default for Health {
    /// Not ready until told: a node that has not loaded its state yet must not get traffic.
    fn default() -> Self {
        Health { unready: ArcSwap::from_pointee(Some("starting".into())) }
    }
}

impl Health {
    pub fn set_ready(&self) {
        self.unready.store(Arc::new(None));
    }

    pub fn set_unready(&self, why: impl Into<String>) {
        self.unready.store(Arc::new(Some(why.into())));
    }

    /// `None` while ready, else why not.
    pub fn unready(&self) -> Option<String> {
        (*self.unready.load_full()).clone()
    }

    /// The answer to a health probe, or `None` when the request is not one.
    pub fn answer(&self, method: &Method, path: &str) -> Option<Response<Full<Bytes>>> {
        if !(method == Method::GET || method == Method::HEAD) {
            return None;
        }
        let (status, text) = match path {
            HEALTHZ => (StatusCode::OK, "ok\n".to_string()),
            READYZ => match self.unready() {
                None => (StatusCode::OK, "ready\n".to_string()),
                Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
            },
            _ => return None,
        };
        let mut response = Response::new(Full::new(Bytes::from(text)));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Some(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readyz_follows_what_it_is_told_and_healthz_is_always_ok() {
        let health = Health::default();
        let status = |path| health.answer(&Method::GET, path).map(|r| r.status().as_u16());
        assert_eq!((status(HEALTHZ), status(READYZ)), (Some(200), Some(503)), "not ready until told");
        health.set_ready();
        assert_eq!(status(READYZ), Some(200));
        health.set_unready("draining");
        assert_eq!(status(READYZ), Some(503));
        assert_eq!(health.unready().as_deref(), Some("draining"));
        assert!(health.answer(&Method::POST, READYZ).is_none(), "a POST is not a probe");
        assert!(health.answer(&Method::GET, "/endpoints/x/score").is_none());
    }
}
