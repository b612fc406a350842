//! The credential check: `Authorization: Bearer <key>` against the endpoint's keys. Every key
//! is compared, in constant time, so neither a match nor a mismatch shows in the timing.

use http::HeaderMap;
use http::header::AUTHORIZATION;
use subtle::ConstantTimeEq;

use crate::reject::Reject;
use crate::table::Credentials;

/// How the credential check ended, for the access log (never the credential itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Missing,
    Invalid,
    Accepted,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Missing => "missing",
            Verdict::Invalid => "invalid",
            Verdict::Accepted => "ok",
        }
    }
}

/// The bearer credential of a request, if it has one in the expected shape.
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = value.split_at(value.iter().position(|&b| b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

pub fn check(credentials: &Credentials, headers: &HeaderMap) -> (Verdict, Result<(), Reject>) {
    let Some(presented) = bearer(headers) else {
        return (Verdict::Missing, Err(Reject::Unauthorized));
    };
    match credentials {
        Credentials::Keys(keys) => {
            let mut matched = subtle::Choice::from(0);
            for key in keys {
                matched |= key.as_slice().ct_eq(presented);
            }
            if bool::from(matched) {
                (Verdict::Accepted, Ok(()))
            } else {
                (Verdict::Invalid, Err(Reject::Unauthorized))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Credentials {
        Credentials::Keys(vec![b"primary-key".to_vec(), b"secondary-key".to_vec()])
    }

    fn with(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, auth.parse().expect("header"));
        h
    }

    #[test]
    fn primary_and_secondary_keys_both_pass() {
        assert_eq!(check(&keys(), &with("Bearer primary-key")).0, Verdict::Accepted);
        assert_eq!(check(&keys(), &with("bearer secondary-key")).0, Verdict::Accepted);
    }

    #[test]
    fn anything_else_is_refused() {
        for (auth, verdict) in [
            ("Bearer wrong", Verdict::Invalid),
            ("Bearer primary-key-and-more", Verdict::Invalid),
            ("Bearer primary-ke", Verdict::Invalid),
            ("Basic primary-key", Verdict::Missing),
            ("Bearer ", Verdict::Missing),
            ("primary-key", Verdict::Missing),
        ] {
            let (v, result) = check(&keys(), &with(auth));
            assert_eq!(v, verdict, "{auth}");
            assert_eq!(result, Err(Reject::Unauthorized), "{auth}");
        }
        assert_eq!(check(&keys(), &HeaderMap::new()).0, Verdict::Missing);
    }
}
