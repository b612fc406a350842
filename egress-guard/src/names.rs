//! Host names as the guard compares them: ASCII lowercase, without the trailing dot, and an
//! internationalised name in its punycode form, so every spelling of one name is one string.

/// The canonical form of a host name, or None when it is not a valid name.
pub fn canonical(host: &str) -> Option<String> {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || host.len() > 253 {
        return None;
    }
    let ascii = idna::domain_to_ascii(host).ok()?;
    let valid = !ascii.is_empty()
        && ascii.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    valid.then_some(ascii)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_name_has_one_form() {
        for spelling in ["crdemo.azurecr.io", "CRDEMO.AzureCR.io", "crdemo.azurecr.io."] {
            assert_eq!(canonical(spelling).as_deref(), Some("crdemo.azurecr.io"), "{spelling}");
        }
        assert_eq!(canonical("bücher.example").as_deref(), Some("xn--bcher-kva.example"));
        assert_eq!(canonical("BÜCHER.example.").as_deref(), Some("xn--bcher-kva.example"));
    }

    #[test]
    fn what_is_not_a_name_is_refused() {
        for bad in ["", ".", "a..b", "a b.com", "evil.com/x", &format!("{}.com", "a".repeat(64))] {
            assert_eq!(canonical(bad), None, "{bad:?}");
        }
    }
}
