//! The Azure ML name rule for endpoints and deployments: 3-32 characters, a letter first,
//! then letters, digits and hyphens, not ending with a hyphen.

use crate::error::Error;

pub fn check(kind: &str, name: &str) -> Result<(), Error> {
    let bytes = name.as_bytes();
    let shape_ok = bytes.first().is_some_and(u8::is_ascii_alphabetic)
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric);
    if (3..=32).contains(&name.len()) && shape_ok {
        return Ok(());
    }
    Err(Error::Invalid(format!(
        "{kind} name {name:?} is invalid: use 3-32 characters, a letter first, then letters, digits or '-', not ending with '-'"
    )))
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn names_follow_the_azure_rule() {
        for good in ["abc", "my-endpoint-1", "A23", &"a".repeat(32)] {
            assert!(check("endpoint", good).is_ok(), "{good}");
        }
        for bad in ["ab", "1abc", "-abc", "abc-", "a_bc", "a.bc", "", &"a".repeat(33), "ab c", "ébc"] {
            assert!(check("endpoint", bad).is_err(), "{bad}");
        }
    }
}
