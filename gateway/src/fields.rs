//! Header fields, read by name. HTTP/2 requests come with hyper's `HeaderMap`; HTTP/1.1
//! requests, and containers' answers, keep their fields as the head's own bytes
//! ([`HeadFields`]): building a map hashed every name of every request to look a few of them
//! up, and cost about 7 % of a proxied request's instructions (BENCHMARKS.md); an answer's
//! fields are only written on, so a map of them was all cost. The request life reads a
//! request's fields through [`Fields`], whichever they are.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};

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
#[inline(always)]
pub fn named(name: &[u8], known: &HeaderName) -> bool {
    is_lowered(name, known.as_str().as_bytes())
}

/// Whether `text`, in any case, is `lower` (which is in lower case).
///
/// Every request compares a few of its names with a few known ones (the credential, the
/// framing, the fields moat sets), so eight bytes at a time: lowering the text's words
/// suffices. A byte at a time cost about 7 instructions a byte, about 1 % of a proxied
/// request's. Inlined, so that a known name's length and words are constants where it is
/// called.
#[inline(always)]
pub fn is_lowered(text: &[u8], lower: &[u8]) -> bool {
    debug_assert!(!lower.iter().any(u8::is_ascii_uppercase), "a known name in lower case");
    if text.len() != lower.len() {
        return false;
    }
    if text.len() < 8 {
        return text.eq_ignore_ascii_case(lower);
    }
    let word = |s: &[u8], at: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&s[at..at + 8]);
        u64::from_ne_bytes(bytes)
    };
    let same = |at: usize| lowered(word(text, at)) == word(lower, at);
    // Whole words, then the last eight bytes (overlapping the words before when the length
    // is not a multiple of eight).
    (0..text.len() / 8).all(|i| same(i * 8)) && same(text.len() - 8)
}

/// The eight bytes of `w` with ASCII capitals lowered, every other byte as it is.
#[inline(always)]
fn lowered(w: u64) -> u64 {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = ONES * 0x80;
    // Added to a byte's low seven bits, these set its high bit when the byte is at least `A`,
    // and at least the byte after `Z`; no sum carries into the next byte (0x7f + 0x3f < 0x100).
    let low = w & !HIGHS;
    let from_a = low + ONES * u64::from(0x80 - b'A');
    let past_z = low + ONES * u64::from(0x80 - b'Z' - 1);
    // Capitals: at least `A`, not past `Z`, and high bit clear in the byte itself.
    let capitals = from_a & !past_z & !w & HIGHS;
    w | (capitals >> 2)
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

/// A head's fields as they came: slices of the head's bytes, found by name with a walk over
/// the few there are, never copied into a map. The head's parser let through only token names
/// and values without CR, LF or other control bytes but tab: what `http`'s names and values
/// take too.
#[derive(Clone, Default)]
pub struct HeadFields {
    head: Bytes,
    at: Vec<FieldAt>,
}

/// Where one header field's name and value lie: (start, end) in the head's bytes.
#[derive(Clone, Copy)]
pub struct FieldAt {
    name: (usize, usize),
    value: (usize, usize),
}

impl FieldAt {
    /// The field whose name and value are these slices of the bytes at `base`.
    pub fn of(base: &[u8], name: &[u8], value: &[u8]) -> FieldAt {
        let start = base.as_ptr() as usize;
        let range = |s: &[u8]| (s.as_ptr() as usize - start, s.as_ptr() as usize - start + s.len());
        FieldAt { name: range(name), value: range(value) }
    }

    pub fn name(&self) -> std::ops::Range<usize> {
        self.name.0..self.name.1
    }

    pub fn value(&self) -> std::ops::Range<usize> {
        self.value.0..self.value.1
    }
}

impl HeadFields {
    /// The fields at `at` in `head`.
    pub fn new(head: Bytes, at: Vec<FieldAt>) -> HeadFields {
        HeadFields { head, at }
    }

    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    /// Drops every field whose name (as it came) `drop` picks, in one pass.
    pub fn remove_named(&mut self, drop: impl Fn(&[u8]) -> bool) {
        let head = &self.head;
        self.at.retain(|field| !drop(&head[field.name()]));
    }

    /// Adds every field to `map`, after what it holds.
    pub fn append_to(&self, map: &mut HeaderMap) {
        map.reserve(self.at.len());
        for field in &self.at {
            // Both were checked as the head was parsed.
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(&self.head[field.name()]),
                HeaderValue::from_maybe_shared(self.head.slice(field.value())),
            ) {
                map.append(name, value);
            }
        }
    }
}

impl std::fmt::Debug for HeadFields {
    /// The names only: a value may be a credential.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.each().map(|(name, _)| String::from_utf8_lossy(name))).finish()
    }
}

impl Fields for HeadFields {
    fn all<'a>(&'a self, name: &HeaderName) -> impl Iterator<Item = &'a [u8]> {
        // Most fields differ in length from the name looked for: they are passed over
        // without being sliced out of the head.
        let len = name.as_str().len();
        self.at
            .iter()
            .filter(move |field| field.name().len() == len && named(&self.head[field.name()], name))
            .map(|field| &self.head[field.value()])
    }

    fn each(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.at.iter().map(|field| (&self.head[field.name()], &self.head[field.value()]))
    }

    fn to_map(&self) -> HeaderMap {
        let mut map = HeaderMap::new();
        self.append_to(&mut map);
        map
    }
}

#[cfg(test)]
pub(crate) mod tests {
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

    #[test]
    fn a_name_is_known_in_any_case_and_only_then_whatever_its_bytes() {
        // Every byte in every place of names of 4 to 24 bytes (one, two and three words,
        // and short ones), against the plain byte-at-a-time comparison.
        for known in [
            "host",
            "x-request-id",
            "authorization",
            "content-length",
            "transfer-encoding",
            "x-ms-client-request-id",
            "azureml-model-deployment",
        ] {
            let known = HeaderName::from_static(known);
            let lower = known.as_str().as_bytes();
            assert!(named(&lower.to_ascii_uppercase(), &known) && named(lower, &known));
            for at in 0..lower.len() {
                for byte in 0..=255u8 {
                    let mut name = lower.to_vec();
                    name[at] = byte;
                    assert_eq!(named(&name, &known), name.eq_ignore_ascii_case(lower), "{name:?}");
                }
            }
            assert!(!named(&lower[1..], &known) && !named(&[lower, b"s"].concat(), &known));
        }
    }

    /// The fields of `lines` (`name: value`, one a line), as a head's parser would place them.
    pub(crate) fn head_fields(lines: &str) -> HeadFields {
        let head = Bytes::copy_from_slice(lines.as_bytes());
        let mut at = Vec::new();
        for line in head.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let colon = line.iter().position(|b| *b == b':').expect("a colon");
            at.push(FieldAt::of(&head, &line[..colon], line[colon + 1..].trim_ascii()));
        }
        HeadFields::new(head, at)
    }

    #[test]
    fn head_fields_are_read_removed_and_mapped_by_name_in_any_case() {
        let mut fields = head_fields("Content-Type: text/plain\nX-A: 1\nx-a: 2\nX-B: 3\n");
        assert_eq!(fields.all(&HeaderName::from_static("x-a")).collect::<Vec<_>>(), [b"1", b"2"]);
        let names = |f: &HeadFields| f.each().map(|(n, _)| n.to_vec()).collect::<Vec<_>>();
        assert_eq!(names(&fields), [&b"Content-Type"[..], b"X-A", b"x-a", b"X-B"], "as they came");
        assert_eq!(format!("{fields:?}"), r#"["Content-Type", "X-A", "x-a", "X-B"]"#, "names only");
        fields.remove_named(|name| name.eq_ignore_ascii_case(b"x-A"));
        assert_eq!(names(&fields), [&b"Content-Type"[..], b"X-B"]);
        let mut map = HeaderMap::new();
        map.insert(CONNECTION, HeaderValue::from_static("close"));
        fields.append_to(&mut map);
        let mapped: Vec<_> = map.iter().map(|(n, v)| (n.as_str(), v.as_bytes())).collect();
        assert_eq!(mapped, [("connection", &b"close"[..]), ("content-type", b"text/plain"), ("x-b", b"3")]);
        assert_eq!(fields.to_map().len(), 2);
        assert!(!fields.is_empty() && HeadFields::default().is_empty());
    }
}
