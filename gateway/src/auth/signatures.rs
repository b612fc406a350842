//! RS256 and ES256 signature checks through ring, the crypto library rustls already brings:
//! jsonwebtoken's own RustCrypto code took 218 µs (RSA) and 333 µs (P-256) per AAD token
//! (BENCHMARKS.md). [`install`] makes this jsonwebtoken's process-wide provider; other
//! algorithms (the aml tokens' HS256) and all signing stay with RustCrypto.

use std::sync::OnceLock;

use jsonwebtoken::crypto::{CryptoProvider, JwtVerifier, rust_crypto};
use jsonwebtoken::errors::{ErrorKind, Result};
use jsonwebtoken::signature::{Error, Verifier};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind};
use ring::signature as ring_signature;
use ring::signature::{RsaPublicKeyComponents, UnparsedPublicKey};

/// Makes ring check RS256 and ES256 signatures for every jsonwebtoken call in the process.
/// jsonwebtoken settles on a provider at its first use, so this runs before any token is
/// made or checked (`moat serve` calls it first; [`super::aad::Aad::new`] too); called later, it changes nothing: the RustCrypto
/// checks stay, slower and as strict.
pub fn install() {
    static PROVIDER: OnceLock<CryptoProvider> = OnceLock::new();
    let provider = PROVIDER.get_or_init(|| CryptoProvider {
        verifier_factory: verifier,
        ..rust_crypto::DEFAULT_PROVIDER.clone()
    });
    if let Err(first) = provider.install_default()
        && !std::ptr::eq(first, provider)
    {
        tracing::warn!(
            "jsonwebtoken was used before moat chose its provider: AAD signatures are checked by the slower RustCrypto code"
        );
    }
}

fn verifier(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    let family = match algorithm {
        Algorithm::RS256 => AlgorithmFamily::Rsa,
        Algorithm::ES256 => AlgorithmFamily::Ec,
        _ => return (rust_crypto::DEFAULT_PROVIDER.verifier_factory)(algorithm, key),
    };
    // A key of another family (an HMAC secret offered as an RSA key, say) never verifies.
    if key.family() != family {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    Ok(Box::new(RingVerifier { algorithm: *algorithm, key: key.kind().clone() }))
}

struct RingVerifier {
    algorithm: Algorithm,
    key: DecodingKeyKind,
}

impl Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, message: &[u8], signature: &Vec<u8>) -> std::result::Result<(), Error> {
        let rsa = &ring_signature::RSA_PKCS1_2048_8192_SHA256;
        let checked = match (self.algorithm, &self.key) {
            (Algorithm::RS256, DecodingKeyKind::RsaModulusExponent { n, e }) => {
                RsaPublicKeyComponents { n, e }.verify(rsa, message, signature)
            }
            // From a PEM: PKCS#1 RSAPublicKey DER, what ring takes.
            (Algorithm::RS256, DecodingKeyKind::SecretOrDer(der)) => {
                UnparsedPublicKey::new(rsa, der).verify(message, signature)
            }
            // A JWK's or PEM's uncompressed point; JWS signatures are r || s, fixed width.
            (Algorithm::ES256, DecodingKeyKind::SecretOrDer(point)) => {
                UnparsedPublicKey::new(&ring_signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, signature)
            }
            _ => return Err(Error::new()),
        };
        checked.map_err(|_| Error::new())
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};

    #[test]
    fn es256_signatures_verify_only_with_their_key_and_message() {
        let rng = SystemRandom::new();
        let pair = |rng: &SystemRandom| {
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, rng).expect("key");
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), rng).expect("pair")
        };
        let (signer, stranger) = (pair(&rng), pair(&rng));
        let public = |p: &EcdsaKeyPair| {
            // The uncompressed point: 04 || x || y.
            let point = p.public_key().as_ref();
            let b64 = |b: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, b);
            DecodingKey::from_ec_components(&b64(&point[1..33]), &b64(&point[33..])).expect("jwk key")
        };
        let message = b"header.claims";
        let signature = signer.sign(&rng, message).expect("sign").as_ref().to_vec();

        let check = |key: &DecodingKey, message: &[u8], signature: &Vec<u8>| {
            verifier(&Algorithm::ES256, key).expect("verifier").verify(message, signature).is_ok()
        };
        assert!(check(&public(&signer), message, &signature));
        assert!(!check(&public(&stranger), message, &signature), "another key");
        assert!(!check(&public(&signer), b"header.other", &signature), "another message");
        let mut altered = signature.clone();
        altered[10] ^= 1;
        assert!(!check(&public(&signer), message, &altered), "an altered signature");
        // An EC key is not an RSA key, nor an HMAC secret an EC key.
        assert!(verifier(&Algorithm::RS256, &public(&signer)).is_err());
        assert!(verifier(&Algorithm::ES256, &DecodingKey::from_secret(b"secret")).is_err());
    }
}
