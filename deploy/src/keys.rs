//! Secrets moat makes: endpoint keys and the home id, from the operating system's RNG.

use crate::error::Error;
use crate::store::{Store, Txn};

const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A 40-character key of letters and digits (about 238 bits).
pub fn new_key() -> Result<String, Error> {
    let mut out = String::with_capacity(40);
    let mut buf = [0u8; 64];
    while out.len() < 40 {
        getrandom::fill(&mut buf).map_err(|e| Error::other("reading the system RNG", e))?;
        // 248 = 4 * 62: rejecting bytes above it keeps every character equally likely.
        for b in buf.iter().filter(|&&b| b < 248) {
            if out.len() < 40 {
                out.push(ALPHABET[(*b % 62) as usize] as char);
            }
        }
    }
    Ok(out)
}

/// 8 lowercase hex characters.
pub fn new_home_id() -> Result<String, Error> {
    let mut buf = [0u8; 4];
    getrandom::fill(&mut buf).map_err(|e| Error::other("reading the system RNG", e))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// The workspace's secret for signing aml tokens: made once, kept in the store (owner-only)
/// so that every node of a workspace verifies the same tokens.
pub async fn aml_token_secret(store: &dyn Store) -> Result<Vec<u8>, Error> {
    const KEY: &str = "secrets/aml-token-key";
    loop {
        if let Some(stored) = store.get(KEY) {
            let hex = stored.value.as_str().unwrap_or_default();
            let bytes: Option<Vec<u8>> =
                (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect();
            return bytes
                .filter(|b| b.len() >= 32)
                .ok_or_else(|| Error::Other(format!("store key {KEY} is damaged")));
        }
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| Error::other("reading the system RNG", e))?;
        let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        // Another node may make it at the same moment; then its secret is the one.
        store.commit(Txn::default().expect(KEY, None).put(KEY, hex)).await?;
    }
}

/// A key a user supplies with `--key-value`.
pub fn check_user_key(key: &str) -> Result<(), Error> {
    let ok = (16..=256).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid("--key-value must be 16-256 printable ASCII characters without spaces".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_long_plain_and_distinct() {
        let (a, b) = (new_key().expect("key"), new_key().expect("key"));
        assert_eq!(a.len(), 40);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
        let id = new_home_id().expect("id");
        assert!(id.len() == 8 && id.bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    }
}
