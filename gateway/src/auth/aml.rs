//! `auth_mode: aml_token`: tokens moat issues itself. A token is a JWT signed (HS256) with a
//! secret moat keeps per workspace, scoped to one endpoint by its audience, and valid for
//! `auth.aml_token_ttl_s`. Only HS256 verifies: `alg: none` and every other algorithm fail.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::Failure;

/// Who issues aml tokens; the audience is per endpoint.
pub const ISSUER: &str = "moat";

/// The signing secret, and the keys made from it. Debug never shows it.
pub struct AmlKey {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl fmt::Debug for AmlKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AmlKey(<redacted>)")
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    aud: String,
    iat: u64,
    nbf: u64,
    exp: u64,
}

/// A token and its times, in seconds since the epoch (CONTRACT.md's get-credentials).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub token: String,
    pub expires: u64,
    pub refresh_after: u64,
}

/// The audience of an endpoint's tokens.
pub fn audience(workspace: &str, endpoint: &str) -> String {
    format!("moat:{workspace}/{endpoint}")
}

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl AmlKey {
    pub fn new(secret: &[u8]) -> AmlKey {
        AmlKey { encoding: EncodingKey::from_secret(secret), decoding: DecodingKey::from_secret(secret) }
    }

    pub fn issue(&self, audience: &str, ttl: Duration) -> Result<Issued, jsonwebtoken::errors::Error> {
        self.issue_at(audience, ttl, now())
    }

    /// A token as if issued at `now` (seconds since the epoch): the clock is the caller's,
    /// so a test can hold a token that expired without waiting for it to.
    pub fn issue_at(
        &self,
        audience: &str,
        ttl: Duration,
        now: u64,
    ) -> Result<Issued, jsonwebtoken::errors::Error> {
        let ttl = ttl.as_secs().max(1);
        let claims = Claims { iss: ISSUER.into(), aud: audience.into(), iat: now, nbf: now, exp: now + ttl };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?;
        Ok(Issued { token, expires: now + ttl, refresh_after: now + ttl / 2 })
    }

    pub fn verify(&self, token: &str, audience: &str) -> Result<(), Failure> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.validate_nbf = true;
        validation.set_audience(&[audience]);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "aud", "iss"]);
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation).map(drop).map_err(Failure::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    fn key() -> AmlKey {
        AmlKey::new(b"a workspace secret of thirty-two bytes!")
    }

    #[test]
    fn a_fresh_token_verifies_for_its_endpoint_only() {
        let issued = key().issue("moat:ws/ep1", Duration::from_secs(60)).expect("token");
        assert_eq!(key().verify(&issued.token, "moat:ws/ep1"), Ok(()));
        assert_eq!(key().verify(&issued.token, "moat:ws/ep2"), Err(Failure::Invalid));
        assert!(issued.refresh_after < issued.expires);
    }

    #[test]
    fn expired_tokens_fail_as_expired() {
        let old = key().issue_at("moat:ws/ep1", Duration::from_secs(60), now() - 120).expect("token");
        assert_eq!(key().verify(&old.token, "moat:ws/ep1"), Err(Failure::Expired));
    }

    #[test]
    fn another_secret_alg_none_and_other_algorithms_fail() {
        let issued = AmlKey::new(b"someone else's secret")
            .issue("moat:ws/ep1", Duration::from_secs(60))
            .expect("token");
        assert_eq!(key().verify(&issued.token, "moat:ws/ep1"), Err(Failure::Invalid));

        let claims = format!(
            r#"{{"iss":"moat","aud":"moat:ws/ep1","iat":{0},"nbf":{0},"exp":{1}}}"#,
            now(),
            now() + 60
        );
        let unsigned = format!("{}.{}.", b64(br#"{"alg":"none","typ":"JWT"}"#), b64(claims.as_bytes()));
        assert_eq!(key().verify(&unsigned, "moat:ws/ep1"), Err(Failure::Invalid));
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &serde_json::from_str::<serde_json::Value>(&claims).expect("json"),
            &EncodingKey::from_secret(b"a workspace secret of thirty-two bytes!"),
        )
        .expect("token");
        assert_eq!(key().verify(&hs512, "moat:ws/ep1"), Err(Failure::Invalid));
        assert_eq!(key().verify("not.a.token", "moat:ws/ep1"), Err(Failure::Invalid));
    }
}
