//! Real signing keys for token tests and benchmarks: RSA 2048 and EC P-256 pairs made by
//! openssl, their public JWKs, and tokens signed with them.

use std::path::Path;

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn openssl(args: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new("openssl").args(args).output().expect("openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// A fresh RSA 2048 and EC P-256 key pair (PKCS#8 PEM) and their public JWKs.
pub struct Keys {
    pub rsa_pem: Vec<u8>,
    pub ec_pem: Vec<u8>,
    pub other_rsa_pem: Vec<u8>,
    pub rsa_jwk: serde_json::Value,
    pub ec_jwk: serde_json::Value,
}

pub fn keys(dir: &Path) -> Keys {
    std::fs::create_dir_all(dir).expect("dir");
    let path = |n: &str| dir.join(n).display().to_string();
    let (rsa, ec, other) = (path("rsa.pem"), path("ec.pem"), path("other.pem"));
    openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", &rsa]);
    openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", &other]);
    openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", &ec]);
    let modulus = String::from_utf8(openssl(&["rsa", "-in", &rsa, "-noout", "-modulus"])).expect("utf8");
    let hex = modulus.trim().trim_start_matches("Modulus=");
    let n: Vec<u8> =
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex")).collect();
    // The DER public key ends with the uncompressed point 04 || x || y.
    let der = openssl(&["ec", "-in", &ec, "-pubout", "-outform", "DER"]);
    let point = &der[der.len() - 64..];
    Keys {
        rsa_pem: std::fs::read(&rsa).expect("rsa"),
        ec_pem: std::fs::read(&ec).expect("ec"),
        other_rsa_pem: std::fs::read(&other).expect("other"),
        rsa_jwk: json!({"kty": "RSA", "kid": "rsa-1", "use": "sig", "n": b64(&n), "e": "AQAB"}),
        ec_jwk: json!({"kty": "EC", "kid": "ec-1", "crv": "P-256", "x": b64(&point[..32]), "y": b64(&point[32..])}),
    }
}

/// A JWT with `kid` in its header, signed with the PEM key for `alg` (RS256 or ES256).
pub fn sign(alg: Algorithm, kid: &str, pem: &[u8], claims: serde_json::Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(pem),
        _ => EncodingKey::from_ec_pem(pem),
    }
    .expect("key");
    jsonwebtoken::encode(&header, &claims, &key).expect("token")
}
