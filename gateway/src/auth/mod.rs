//! The credential check, per endpoint `auth_mode`:
//!
//! - [`key`]: the primary and secondary keys, compared in constant time;
//! - [`aml`]: tokens moat issues (HS256, per workspace, scoped to the endpoint);
//! - [`aad`]: tokens of an OpenID issuer, checked against its key set;
//! - [`principals`]: which of the issuer's principals an `aad_token` endpoint admits;
//! - [`signatures`]: the RS256 and ES256 signature checks those tokens need, through ring.
//!
//! Every failure gets the same 401 message, which says nothing that helps forge a
//! credential; the access log records which check failed. A valid AAD token of a principal
//! the endpoint does not allow gets 403.

pub mod aad;
pub mod aml;
pub mod key;
pub mod principals;
pub mod signatures;

use http::header::AUTHORIZATION;

use crate::fields::Fields;
use crate::reject::Reject;
use crate::table::Credentials;
use aad::Aad;

/// Why a token did not pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Invalid,
    Expired,
    /// The issuer's key set cannot be fetched and the token's key is unknown.
    Unavailable,
}

impl From<jsonwebtoken::errors::Error> for Failure {
    fn from(e: jsonwebtoken::errors::Error) -> Self {
        match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => Failure::Expired,
            _ => Failure::Invalid,
        }
    }
}

/// How the credential check ended, for the access log (never the credential itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Missing,
    Invalid,
    Expired,
    Unavailable,
    /// A valid token, of a principal the endpoint does not allow.
    Forbidden,
    Accepted,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Missing => "missing",
            Verdict::Invalid => "invalid",
            Verdict::Expired => "expired",
            Verdict::Unavailable => "keys_unavailable",
            Verdict::Forbidden => "forbidden",
            Verdict::Accepted => "ok",
        }
    }
}

/// The bearer credential of a request, if it has one in the expected shape.
fn bearer(headers: &impl Fields) -> Option<&[u8]> {
    let value = headers.first(&AUTHORIZATION)?;
    let (scheme, rest) = value.split_at(value.iter().position(|&b| b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

pub async fn check(
    credentials: &Credentials,
    aad: Option<&Aad>,
    headers: &(impl Fields + Sync),
) -> (Verdict, Result<(), Reject>) {
    let Some(presented) = bearer(headers) else {
        return (Verdict::Missing, Err(Reject::Unauthorized));
    };
    let outcome = match credentials {
        Credentials::Keys(keys) => {
            if key::matches(keys, presented) {
                Ok(())
            } else {
                Err(Failure::Invalid)
            }
        }
        Credentials::AmlToken { key, audience } => match std::str::from_utf8(presented) {
            Ok(token) => key.verify(token, audience),
            Err(_) => Err(Failure::Invalid),
        },
        Credentials::AadToken { allowed } => match (aad, std::str::from_utf8(presented)) {
            // Boxed: verifying may fetch signing keys, and that future would otherwise make
            // every request's future as large, keys or not (a large future costs a copy at
            // each move).
            (Some(aad), Ok(token)) => match Box::pin(aad.verify(token)).await {
                Ok(claims) if allowed.admits(&claims) => Ok(()),
                Ok(_) => return (Verdict::Forbidden, Err(Reject::PrincipalNotAllowed)),
                Err(failure) => Err(failure),
            },
            (None, _) => Err(Failure::Unavailable),
            (_, Err(_)) => Err(Failure::Invalid),
        },
    };
    match outcome {
        Ok(()) => (Verdict::Accepted, Ok(())),
        Err(Failure::Invalid) => (Verdict::Invalid, Err(Reject::Unauthorized)),
        Err(Failure::Expired) => (Verdict::Expired, Err(Reject::Unauthorized)),
        Err(Failure::Unavailable) => (Verdict::Unavailable, Err(Reject::KeysUnavailable)),
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;

    use super::*;

    fn keys() -> Credentials {
        Credentials::Keys(vec![b"primary-key".to_vec(), b"secondary-key".to_vec()])
    }

    fn with(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, auth.parse().expect("header"));
        h
    }

    #[tokio::test]
    async fn primary_and_secondary_keys_both_pass() {
        assert_eq!(check(&keys(), None, &with("Bearer primary-key")).await.0, Verdict::Accepted);
        assert_eq!(check(&keys(), None, &with("bearer secondary-key")).await.0, Verdict::Accepted);
    }

    #[tokio::test]
    async fn anything_else_is_refused() {
        for (auth, verdict) in [
            ("Bearer wrong", Verdict::Invalid),
            ("Bearer primary-key-and-more", Verdict::Invalid),
            ("Basic primary-key", Verdict::Missing),
            ("Bearer ", Verdict::Missing),
            ("primary-key", Verdict::Missing),
        ] {
            let (v, result) = check(&keys(), None, &with(auth)).await;
            assert_eq!(v, verdict, "{auth}");
            assert_eq!(result, Err(Reject::Unauthorized), "{auth}");
        }
        assert_eq!(check(&keys(), None, &HeaderMap::new()).await.0, Verdict::Missing);
    }
}
