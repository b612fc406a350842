//! `auth_mode: aad_token`: JWTs from an OpenID issuer (`auth.aad`), checked against the
//! issuer's key set (JWKS): issuer, audience, expiry and not-before, RS256 or ES256 only.
//!
//! The key set is cached for as long as the issuer's `Cache-Control: max-age` says (an hour
//! when it says nothing, a day at most), then fetched again whole, so a key the issuer removed
//! stops passing. A token whose `kid` the cache does not know makes one refresh, at most once
//! per `refresh_gap` (a flood of made-up kids cannot hammer the issuer); while the key set
//! cannot be fetched, an unknown `kid` is [`Failure::Unavailable`] (503, retry later), never a
//! pass, and known keys serve until they are a day old.

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
use super::principals::Claims;

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
/// How long a key set is kept when its answer names no lifetime.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);
/// The longest a key set is used, whatever its answer says and whether or not the issuer
/// can be reached again.
pub const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Clock skew allowed between the issuer and this machine.
const LEEWAY_S: u64 = 60;

struct Key {
    algorithm: Algorithm,
    decoding: DecodingKey,
}

/// The issuer's keys, and until when to use them.
#[derive(Default)]
struct KeySet {
    keys: HashMap<String, Arc<Key>>,
    fetched: Option<Instant>,
    lifetime: Duration,
}

impl KeySet {
    fn expired(&self, now: Instant) -> bool {
        self.fetched.is_none_or(|at| now.saturating_duration_since(at) >= self.lifetime)
    }

    /// Past even the longest a key set may serve while the issuer cannot be reached.
    fn too_old(&self, now: Instant) -> bool {
        self.fetched.is_none_or(|at| now.saturating_duration_since(at) >= MAX_LIFETIME)
    }
}

/// The lifetime a key set's `Cache-Control` gives it.
fn lifetime(cache_control: Option<&str>) -> Duration {
    let Some(value) = cache_control else { return DEFAULT_LIFETIME };
    let mut lifetime = None;
    for directive in value.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return Duration::ZERO;
        }
        if let Some(seconds) =
            lower.strip_prefix("max-age=").and_then(|s| s.trim_matches('"').parse::<u64>().ok())
        {
            lifetime = Some(Duration::from_secs(seconds));
        }
    }
    lifetime.unwrap_or(DEFAULT_LIFETIME).min(MAX_LIFETIME)
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
    keys: ArcSwap<KeySet>,
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
            keys: ArcSwap::from_pointee(KeySet::default()),
            refresh: Mutex::new(Refresh { at: None, ok: false }),
            client: Client::builder(TokioExecutor::new()).build(https),
        }
    }

    pub fn audience(&self) -> &str {
        &self.config.audience
    }

    /// The token's principal claims, once its signature and claims check out.
    pub async fn verify(&self, token: &str) -> Result<Claims, Failure> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| Failure::Invalid)?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(Failure::Invalid);
        }
        let kid = header.kid.ok_or(Failure::Invalid)?;
        let now = Instant::now();
        if self.keys.load().expired(now) {
            // A failed refresh leaves the old keys serving until they are too old.
            let refreshed = self.refresh().await;
            if refreshed.is_err() && self.keys.load().too_old(now) {
                return Err(Failure::Unavailable);
            }
        }
        let key = match self.keys.load().keys.get(&kid).cloned() {
            Some(key) => key,
            None => {
                self.refresh().await?;
                self.keys.load().keys.get(&kid).cloned().ok_or(Failure::Invalid)?
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
        jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation)
            .map(|data| data.claims)
            .map_err(Failure::from)
    }

    /// One refresh for all the requests that wait on it, and none if the last was too
    /// recent: then its outcome stands.
    async fn refresh(&self) -> Result<(), Failure> {
        let mut last = self.refresh.lock().await;
        if let Some(ok) = last.standing(Instant::now(), self.config.refresh_gap) {
            return if ok { Ok(()) } else { Err(Failure::Unavailable) };
        }
        let fetched = self.fetch().await;
        last.at = Some(Instant::now());
        last.ok = fetched.is_ok();
        match fetched {
            Ok(set) => {
                self.keys.store(Arc::new(set));
                Ok(())
            }
            Err(e) => {
                tracing::warn!(jwks_uri = %self.config.jwks_uri, error = %e, "cannot fetch the AAD key set");
                Err(Failure::Unavailable)
            }
        }
    }

    /// Uses this key set for a day (for benchmarks and tests without a server).
    pub fn preload(&self, set: &JwkSet) {
        let keys = keys_of(set);
        self.keys.store(Arc::new(KeySet { keys, fetched: Some(Instant::now()), lifetime: MAX_LIFETIME }));
    }

    /// Fetches the key set now (at start-up), whatever the rate limit says.
    pub async fn prefetch(&self) -> Result<usize, String> {
        let mut last = self.refresh.lock().await;
        let fetched = self.fetch().await;
        last.at = Some(Instant::now());
        last.ok = fetched.is_ok();
        let set = fetched?;
        let count = set.keys.len();
        self.keys.store(Arc::new(set));
        Ok(count)
    }

    async fn fetch(&self) -> Result<KeySet, String> {
        let uri: hyper::Uri = self.config.jwks_uri.parse().map_err(|e| format!("jwks_uri: {e}"))?;
        let request = hyper::Request::get(uri).body(Empty::new()).map_err(|e| e.to_string())?;
        let response = tokio::time::timeout(FETCH_TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| "no answer in time".to_string())?
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("status {}", response.status()));
        }
        let cache_control =
            response.headers().get(hyper::header::CACHE_CONTROL).and_then(|v| v.to_str().ok());
        let lifetime = lifetime(cache_control);
        let body = tokio::time::timeout(FETCH_TIMEOUT, Limited::new(response.into_body(), 1 << 20).collect())
            .await
            .map_err(|_| "the key set did not arrive in time".to_string())?
            .map_err(|e| e.to_string())?
            .to_bytes();
        let set: JwkSet = serde_json::from_slice(&body).map_err(|e| format!("not a JWK set: {e}"))?;
        Ok(KeySet { keys: keys_of(&set), fetched: Some(Instant::now()), lifetime })
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
    fn a_key_set_lives_as_long_as_its_answer_says_and_a_day_at_most() {
        for (header, expected) in [
            (None, DEFAULT_LIFETIME),
            (Some("public, max-age=600"), Duration::from_secs(600)),
            (Some("Max-Age=\"60\", must-revalidate"), Duration::from_secs(60)),
            (Some("max-age=31536000"), MAX_LIFETIME),
            (Some("private"), DEFAULT_LIFETIME),
            (Some("max-age=600, no-cache"), Duration::ZERO),
            (Some("no-store"), Duration::ZERO),
            (Some("max-age=soon"), DEFAULT_LIFETIME),
        ] {
            assert_eq!(lifetime(header), expected, "{header:?}");
        }
        let t0 = Instant::now();
        let set = KeySet { keys: HashMap::new(), fetched: Some(t0), lifetime: Duration::from_secs(600) };
        assert!(!set.expired(t0 + Duration::from_secs(599)) && set.expired(t0 + Duration::from_secs(600)));
        assert!(!set.too_old(t0 + MAX_LIFETIME - Duration::from_secs(1)) && set.too_old(t0 + MAX_LIFETIME));
        assert!(KeySet::default().expired(t0), "a set never fetched");
    }

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
