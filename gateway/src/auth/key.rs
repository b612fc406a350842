//! `auth_mode: key`: the bearer credential against the endpoint's primary and secondary
//! keys. Every key is compared, in constant time, so neither a match nor a mismatch shows in
//! the timing.

use subtle::ConstantTimeEq;

/// Whether `presented` is one of `keys`.
pub fn matches(keys: &[Vec<u8>], presented: &[u8]) -> bool {
    let mut matched = subtle::Choice::from(0);
    for key in keys {
        matched |= key.as_slice().ct_eq(presented);
    }
    bool::from(matched)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn either_key_matches_and_nothing_near_it_does() {
        let keys = vec![b"primary-key".to_vec(), b"secondary-key".to_vec()];
        assert!(matches(&keys, b"primary-key"));
        assert!(matches(&keys, b"secondary-key"));
        for wrong in [&b"primary-ke"[..], b"primary-key-and-more", b"", b"PRIMARY-KEY"] {
            assert!(!matches(&keys, wrong), "{wrong:?}");
        }
    }
}
