//! Secrets never leave the node in plaintext: before a record goes to etcd, every field that
//! holds one (an endpoint's keys, a deployment's environment variables, the aml token secret)
//! is sealed, and opened again when it comes back.
//!
//! Envelope encryption with AES-256-GCM: each sealed field has a key of its own, made for it
//! and wrapped by the fleet key; the record's etcd key is bound in as associated data, so a
//! sealed field copied into another record does not open. A sealed field is
//! `{"moat_sealed": 1, "key": <nonce|wrapped key>, "data": <nonce|ciphertext>}` (base64).

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use serde_json::{Value, json};

use crate::error::Error;

const MARK: &str = "moat_sealed";

/// The fleet key: 32 bytes every node of the fleet has in its `key_file`. Debug never shows it.
pub struct FleetKey(LessSafeKey);

impl fmt::Debug for FleetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FleetKey(<redacted>)")
    }
}

impl FleetKey {
    pub fn new(bytes: &[u8; 32]) -> FleetKey {
        FleetKey(aead_key(bytes))
    }

    /// From a key file's text: 64 hex digits (whitespace around them is fine).
    pub fn from_hex(text: &str) -> Option<FleetKey> {
        let hex = text.trim();
        if hex.len() != 64 {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(FleetKey::new(&bytes))
    }
}

fn aead_key(bytes: &[u8; 32]) -> LessSafeKey {
    // 32 bytes is AES-256's key length: this cannot fail.
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).unwrap_or_else(|_| unreachable!("32-byte key")))
}

fn random<const N: usize>() -> Result<[u8; N], Error> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).map_err(|e| Error::other("reading the system RNG", e))?;
    Ok(out)
}

/// `nonce | ciphertext | tag` of `plaintext` under `key`, bound to `aad`.
fn encrypt(key: &LessSafeKey, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, Error> {
    let nonce = random::<NONCE_LEN>()?;
    let mut buf = plaintext.to_vec();
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut buf)
        .map_err(|_| Error::Other("sealing a secret failed".into()))?;
    Ok([nonce.as_slice(), &buf].concat())
}

fn decrypt(key: &LessSafeKey, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    let (nonce, rest) = sealed.split_at_checked(NONCE_LEN)?;
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut buf = rest.to_vec();
    let plain = key.open_in_place(nonce, Aad::from(aad), &mut buf).ok()?;
    Some(plain.to_vec())
}

/// Seals one JSON value (any shape) for the record at `etcd_key`.
pub fn seal(fleet: &FleetKey, etcd_key: &str, value: &Value) -> Result<Value, Error> {
    let data_key = random::<32>()?;
    let wrapped = encrypt(&fleet.0, etcd_key.as_bytes(), &data_key)?;
    let plaintext = serde_json::to_vec(value).map_err(|e| Error::other("encoding a secret", e))?;
    let data = encrypt(&aead_key(&data_key), etcd_key.as_bytes(), &plaintext)?;
    Ok(json!({MARK: 1, "key": B64.encode(wrapped), "data": B64.encode(data)}))
}

/// Opens a value [`seal`] made; `None` if it is not one, or does not open with this fleet
/// key for this record.
pub fn open(fleet: &FleetKey, etcd_key: &str, sealed: &Value) -> Option<Value> {
    if sealed.get(MARK)? != 1 {
        return None;
    }
    let field = |name: &str| B64.decode(sealed.get(name)?.as_str()?).ok();
    let data_key: [u8; 32] = decrypt(&fleet.0, etcd_key.as_bytes(), &field("key")?)?.try_into().ok()?;
    let plaintext = decrypt(&aead_key(&data_key), etcd_key.as_bytes(), &field("data")?)?;
    serde_json::from_slice(&plaintext).ok()
}

fn is_sealed(value: &Value) -> bool {
    value.get(MARK).is_some()
}

/// Which part of a record, by its key (without the fleet prefix), holds secrets: a JSON
/// pointer, or "" for the whole value.
pub fn secret_part(key: &str) -> Option<&'static str> {
    if key.starts_with("endpoints/") {
        Some("/keys")
    } else if key.starts_with("deployments/") {
        Some("/spec/environment_variables")
    } else if key.starts_with("secrets/") {
        Some("")
    } else {
        None
    }
}

/// The record as it goes to etcd: its secret part sealed.
pub fn seal_record(fleet: &FleetKey, etcd_key: &str, key: &str, mut record: Value) -> Result<Value, Error> {
    let Some(pointer) = secret_part(key) else { return Ok(record) };
    if pointer.is_empty() {
        return seal(fleet, etcd_key, &record);
    }
    if let Some(part) = record.pointer_mut(pointer) {
        *part = seal(fleet, etcd_key, part)?;
    }
    Ok(record)
}

/// The record as this node holds it: its secret part opened. `None` when a part that should
/// be sealed is not, or does not open (the fleet key differs): such a record is not trusted.
pub fn open_record(fleet: &FleetKey, etcd_key: &str, key: &str, mut record: Value) -> Option<Value> {
    let Some(pointer) = secret_part(key) else { return Some(record) };
    if pointer.is_empty() {
        return open(fleet, etcd_key, &record);
    }
    match record.pointer_mut(pointer) {
        Some(part) if is_sealed(part) => *part = open(fleet, etcd_key, part)?,
        Some(_) => return None,
        None => {}
    }
    Some(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> FleetKey {
        FleetKey::new(&[byte; 32])
    }

    fn endpoint() -> Value {
        json!({"spec": {"name": "ep1"}, "keys": {"primary": "p-secret-0123456789", "secondary": "s-secret-0123456789"}})
    }

    #[test]
    fn an_endpoints_keys_are_sealed_and_open_again_with_the_fleet_key() {
        let sealed =
            seal_record(&key(1), "/moat/f/endpoints/ep1", "endpoints/ep1", endpoint()).expect("seal");
        let text = sealed.to_string();
        assert!(!text.contains("p-secret") && !text.contains("s-secret"), "{text}");
        assert_eq!(sealed["spec"]["name"], "ep1", "what is not secret stays readable");
        let opened = open_record(&key(1), "/moat/f/endpoints/ep1", "endpoints/ep1", sealed).expect("open");
        assert_eq!(opened, endpoint());
    }

    #[test]
    fn a_sealed_value_opens_only_with_the_same_fleet_key_and_for_the_same_record() {
        let sealed = seal(&key(1), "/moat/f/secrets/aml", &json!("token secret")).expect("seal");
        assert_eq!(open(&key(1), "/moat/f/secrets/aml", &sealed), Some(json!("token secret")));
        assert_eq!(open(&key(2), "/moat/f/secrets/aml", &sealed), None, "another fleet key");
        assert_eq!(open(&key(1), "/moat/f/secrets/other", &sealed), None, "moved to another record");
        let mut tampered = sealed.clone();
        tampered["data"] = json!(B64.encode([0u8; 40]));
        assert_eq!(open(&key(1), "/moat/f/secrets/aml", &tampered), None);
        assert_ne!(
            seal(&key(1), "k", &json!(1)).expect("seal"),
            seal(&key(1), "k", &json!(1)).expect("seal"),
            "fresh keys and nonces"
        );
    }

    #[test]
    fn environment_values_are_sealed_and_a_record_whose_secrets_are_plain_is_refused() {
        let record = json!({"spec": {"name": "blue", "environment_variables": {"TOKEN": "hunter2"}}, "all_traffic": false});
        let sealed =
            seal_record(&key(3), "/moat/f/deployments/ep1/blue", "deployments/ep1/blue", record.clone())
                .expect("seal");
        assert!(!sealed.to_string().contains("hunter2"));
        assert_eq!(
            open_record(&key(3), "/moat/f/deployments/ep1/blue", "deployments/ep1/blue", sealed),
            Some(record.clone())
        );
        assert_eq!(
            open_record(&key(3), "/moat/f/deployments/ep1/blue", "deployments/ep1/blue", record),
            None,
            "plaintext in etcd is not trusted"
        );
        let outcome = json!({"revision": 3});
        assert_eq!(
            open_record(&key(3), "k", "outcomes/ep1/blue/n", outcome.clone()),
            Some(outcome),
            "no secret part"
        );
    }

    #[test]
    fn a_key_file_holds_64_hex_digits() {
        assert!(FleetKey::from_hex(&format!("{}\n", "ab".repeat(32))).is_some());
        for bad in ["", "ab", &"zz".repeat(32), &"ab".repeat(33)] {
            assert!(FleetKey::from_hex(bad).is_none(), "{bad}");
        }
    }
}
