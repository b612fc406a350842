//! `auth_mode: aad_token`: JWTs from an OpenID issuer (`auth.aad`), checked against the
//! issuer's key set (JWKS): issuer, audience, expiry and not-before, RS256 or ES256 only.
//!
//! The key set is cached. A token whose `kid` the cache does not know makes one refresh,
//! at most once per `refresh_gap` (a flood of made-up kids cannot hammer the issuer);
//! while the key set cannot be fetched, an unknown `kid` is [`Failure::Unavailable`] (503,
//! retry later), never a pass.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::Failure;

/// The issuer settings of CONTRACT.md's `auth.aad`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AadConfig {
    pub issuer: String,
    pub jwks_uri: String,
    pub audience: String,
    /// The least time between two fetches of the key set ([`MIN_REFRESH_GAP`]).
    pub refresh_gap: Duration,
}

pub const MIN_REFRESH_GAP: Duration = Duration::from_secs(10);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Clock skew allowed between the issuer and this machine.
const LEEWAY_S: u64 = 60;

struct Key {
    algorithm: Algorithm,
    decoding: DecodingKey,
}

/// When the key set was last fetched, and whether that worked.
#[derive(Debug, Clone, Copy)]
struct Refresh {
    at: Option<Instant>,
    ok: bool,
}

impl Refresh {
    /// `None`: fetch now. `Some(ok)`: the last fetch is less than `gap` old, and its outcome
    /// stands for every request until it is not.
    fn standing(&self, now: Instant, gap: Duration) -> Option<bool> {
        let at = self.at?;
        (now.saturating_duration_since(at) < gap).then_some(self.ok)
    }
}

pub struct Aad {
    config: AadConfig,
    keys: ArcSwap<HashMap<String, Arc<Key>>>,
    refresh: Mutex<Refresh>,
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

impl fmt::Debug for Aad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Aad").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Aad {
    pub fn new(config: AadConfig) -> Aad {
        super::signatures::install();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .build();
        Aad {
            config,
            keys: ArcSwap::from_pointee(HashMap::new()),
            refresh: Mutex::new(Refresh { at: None, ok: false }),
            client: Client::builder(TokioExecutor::new()).build(https),
        }
    }

    pub fn audience(&self) -> &str {
        &self.config.audience
    }

    pub async fn verify(&self, token: &str) -> Result<(), Failure> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| Failure::Invalid)?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(Failure::Invalid);
        }
        let kid = header.kid.ok_or(Failure::Invalid)?;
        let key = match self.keys.load().get(&kid).cloned() {
            Some(key) => key,
            None => {
                self.refresh_for_unknown_kid().await?;
                self.keys.load().get(&kid).cloned().ok_or(Failure::Invalid)?
            }
        };
        if key.algorithm != header.alg {
            return Err(Failure::Invalid);
        }
        let mut validation = Validation::new(key.algorithm);
        validation.leeway = LEEWAY_S;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        jsonwebtoken::decode::<serde_json::Value>(token, &key.decoding, &validation)
            .map(drop)
            .map_err(Failure::from)
    }

    /// One refresh for all the requests that wait on it, and none if the last was too
    /// recent: then its outcome stands.
    async fn refresh_for_unknown_kid(&self) -> Result<(), Failure> {
        let mut last = self.refresh.lock().await;
        if let Some(ok) = last.standing(Instant::now(), self.config.refresh_gap) {
            return if ok { Ok(()) } else { Err(Failure::Unavailable) };
        }
        let fetched = self.fetch().await;
        last.at = Some(Instant::now());
        last.ok = fetched.is_ok();
        match fetched {
            Ok(keys) => {
                self.keys.store(Arc::new(keys));
                Ok(())
            }
            Err(e) => {
                tracing::warn!(jwks_uri = %self.config.jwks_uri, error = %e, "cannot fetch the AAD key set");
                Err(Failure::Unavailable)
            }
        }
    }

    /// Uses this key set until the next refresh (for benchmarks and tests without a server).
    pub fn preload(&self, set: &JwkSet) {
        self.keys.store(Arc::new(keys_of(set)));
    }

    /// Fetches the key set now (at start-up), whatever the rate limit says.
    pub async fn prefetch(&self) -> Result<usize, String> {
        let mut last = self.refresh.lock().await;
        let fetched = self.fetch().await;
        last.at = Some(Instant::now());
        last.ok = fetched.is_ok();
        let keys = fetched?;
        let count = keys.len();
        self.keys.store(Arc::new(keys));
        Ok(count)
    }

    async fn fetch(&self) -> Result<HashMap<String, Arc<Key>>, String> {
        let uri: hyper::Uri = self.config.jwks_uri.parse().map_err(|e| format!("jwks_uri: {e}"))?;
        let request = hyper::Request::get(uri).body(Empty::new()).map_err(|e| e.to_string())?;
        let response = tokio::time::timeout(FETCH_TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| "no answer in time".to_string())?
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("status {}", response.status()));
        }
        let body = tokio::time::timeout(FETCH_TIMEOUT, Limited::new(response.into_body(), 1 << 20).collect())
            .await
            .map_err(|_| "the key set did not arrive in time".to_string())?
            .map_err(|e| e.to_string())?
            .to_bytes();
        let set: JwkSet = serde_json::from_slice(&body).map_err(|e| format!("not a JWK set: {e}"))?;
        Ok(keys_of(&set))
    }
}

/// The RS256 and ES256 (P-256) keys of a set that name their `kid`.
fn keys_of(set: &JwkSet) -> HashMap<String, Arc<Key>> {
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let Some(kid) = &jwk.common.key_id else { continue };
        let algorithm = match (&jwk.algorithm, &jwk.common.key_algorithm) {
            (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
            (AlgorithmParameters::EllipticCurve(ec), None | Some(KeyAlgorithm::ES256))
                if ec.curve == EllipticCurve::P256 =>
            {
                Algorithm::ES256
            }
            _ => continue,
        };
        if let Ok(decoding) = DecodingKey::from_jwk(jwk) {
            keys.insert(kid.clone(), Arc::new(Key { algorithm, decoding }));
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_set_is_fetched_again_only_once_the_gap_has_passed() {
        let t0 = Instant::now();
        let gap = Duration::from_secs(10);
        let never = Refresh { at: None, ok: false };
        assert_eq!(never.standing(t0, gap), None, "the first unknown kid fetches");
        for ok in [true, false] {
            let last = Refresh { at: Some(t0), ok };
            assert_eq!(
                last.standing(t0 + Duration::from_millis(9_999), gap),
                Some(ok),
                "within the gap it stands"
            );
            assert_eq!(last.standing(t0 + gap, gap), None, "at the gap it fetches again");
        }
        let clock_went_back = Refresh { at: Some(t0 + gap), ok: true };
        assert_eq!(clock_went_back.standing(t0, gap), Some(true));
    }
}
