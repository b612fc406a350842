//! A request's header fields, read by name. HTTP/2 requests come with hyper's `HeaderMap`;
//! HTTP/1.1 requests keep their fields as the head's own bytes
//! ([`crate::http1::head::HeadFields`]): building a map hashed every name of every request to
//! look a few of them up, and cost about 7 % of a proxied request's instructions
//! (BENCHMARKS.md). The request life reads the fields through [`Fields`], whichever they are.

use http::header::{HeaderMap, HeaderName};

/// Header fields by name. Names are compared without regard to case; values are bytes as the
/// client sent them (HTTP/1.1 and HTTP/2 framing both exclude CR, LF and NUL).
pub trait Fields {
    /// The values of every field called `name`, in the order they came.
    fn all<'a>(&'a self, name: &HeaderName) -> impl Iterator<Item = &'a [u8]>;

    /// Every field, in the order it came: its name (in any case) and its value.
    fn each(&self) -> impl Iterator<Item = (&[u8], &[u8])>;

    /// The fields as a map of their own: for a mirror copy, which outlives the request.
    fn to_map(&self) -> HeaderMap;

    /// The first value of `name`.
    fn first(&self, name: &HeaderName) -> Option<&[u8]> {
        self.all(name).next()
    }

    /// The first value of `name`, if it is text.
    fn text(&self, name: &HeaderName) -> Option<&str> {
        std::str::from_utf8(self.first(name)?).ok()
    }
}

/// Whether a field's `name`, in any case, is `known`: how a client's names, which are not
/// lowered into a map, are read everywhere.
pub fn named(name: &[u8], known: &HeaderName) -> bool {
    name.eq_ignore_ascii_case(known.as_str().as_bytes())
}

impl Fields for HeaderMap {
    fn all<'a>(&'a self, name: &HeaderName) -> impl Iterator<Item = &'a [u8]> {
        self.get_all(name).into_iter().map(|value| value.as_bytes())
    }

    fn each(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.iter().map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes()))
    }

    fn to_map(&self) -> HeaderMap {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;
    use http::header::{CONNECTION, CONTENT_TYPE};

    use super::*;

    #[test]
    fn a_map_is_read_by_name_in_order() {
        let mut map = HeaderMap::new();
        map.append(CONNECTION, HeaderValue::from_static("a"));
        map.append(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        map.append(CONNECTION, HeaderValue::from_static("b"));
        assert_eq!(map.all(&CONNECTION).collect::<Vec<_>>(), [b"a", b"b"]);
        assert_eq!(map.first(&CONTENT_TYPE), Some(&b"text/plain"[..]));
        assert_eq!(map.text(&CONTENT_TYPE), Some("text/plain"));
        assert_eq!(map.each().count(), 3);
        assert_eq!(map.to_map(), map);
        assert!(named(b"Content-TYPE", &CONTENT_TYPE) && !named(b"content-typ", &CONTENT_TYPE));
    }
}
