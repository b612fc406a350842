//! HTTP/1.1 to the containers, on the wire: the request encoded once into the bytes that go
//! out, the answer's head parsed (by [`crate::syntax`]), and the answer's body framing (RFC
//! 9112 §6): a length, chunks, or until the container closes. Pure functions over buffers, so
//! every rule is table-tested here; [`crate::upstream`] moves the bytes.
//!
//! Why not hyper's client: per proxied request, its codec and dispatch cost more instructions
//! than the rest of the container side together (BENCHMARKS.md), for a peer that is always a
//! plain HTTP/1.1 server on a private network.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};

use crate::fields::{FieldAt, HeadFields, is_lowered, named};
use crate::syntax;

/// The most a container's answer head may take.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The most header fields an answer head may have.
const MAX_HEADERS: usize = 128;
/// A chunk-size line (with its extensions) or a trailer line, at most.
const MAX_LINE_BYTES: usize = 4 * 1024;
/// A body up to this size goes out in the same write as the head.
const INLINE_BODY_BYTES: usize = 16 * 1024;

/// A request for a container, as the bytes that go on the wire.
pub struct Outgoing {
    /// The head, and the body too when it is small.
    pub head: Vec<u8>,
    /// The body when it did not go into `head`.
    pub body: Bytes,
    /// A HEAD request: the answer has no body, whatever its head says.
    pub head_only: bool,
}

/// Writes a request head field by field: `new`, `header`s, then `finish` with the body.
pub struct RequestHead {
    bytes: Vec<u8>,
    head_only: bool,
    bodiless: bool,
}

impl RequestHead {
    /// The request line; `path` is the origin form (path and query).
    pub fn new(method: &Method, path: &str) -> RequestHead {
        let mut bytes = Vec::with_capacity(512);
        bytes.extend_from_slice(method.as_str().as_bytes());
        bytes.push(b' ');
        bytes.extend_from_slice(path.as_bytes());
        bytes.extend_from_slice(b" HTTP/1.1\r\n");
        let bodiless = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE);
        RequestHead { bytes, head_only: *method == Method::HEAD, bodiless }
    }

    /// One field. `http` guarantees neither holds CR or LF.
    pub fn header(&mut self, name: &HeaderName, value: &HeaderValue) {
        self.field(name.as_str().as_bytes(), value.as_bytes());
    }

    /// One field of a client's request, as it came (its parser let through neither CR nor LF).
    pub fn field(&mut self, name: &[u8], value: &[u8]) {
        self.bytes.extend_from_slice(name);
        self.bytes.extend_from_slice(b": ");
        self.bytes.extend_from_slice(value);
        self.bytes.extend_from_slice(b"\r\n");
    }

    /// The framing (a Content-Length: the body is whole) and the body.
    pub fn finish(mut self, body: Bytes) -> Outgoing {
        if !(body.is_empty() && self.bodiless) {
            self.bytes.extend_from_slice(b"content-length: ");
            self.bytes.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
            self.bytes.extend_from_slice(b"\r\n");
        }
        self.bytes.extend_from_slice(b"\r\n");
        let body = if body.len() <= INLINE_BODY_BYTES {
            self.bytes.extend_from_slice(&body);
            Bytes::new()
        } else {
            body
        };
        Outgoing { head: self.bytes, body, head_only: self.head_only }
    }
}

/// Whether `name` describes one hop, not the message (its framing included): such fields are
/// never passed on, in either direction. Checked on every field of every message, so by
/// length first, which sets most names apart at once, then name by name (an array of names
/// costs more to walk: BENCHMARKS.md). On the name's bytes, in any case: a client's fields
/// are not lowered into a map.
pub fn hop_by_hop(name: &[u8]) -> bool {
    let is = |known: &str| is_lowered(name, known.as_bytes());
    match name.len() {
        2 => is("te"),
        7 => is("trailer") || is("upgrade"),
        10 => is("connection") || is("keep-alive"),
        17 => is("transfer-encoding"),
        18 => is("proxy-authenticate"),
        19 => is("proxy-authorization"),
        _ => false,
    }
}

/// The comma-separated tokens of a list header's values (`Connection`, `Transfer-Encoding`),
/// trimmed; values that are not text are skipped.
pub fn tokens<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> impl Iterator<Item = &'a str> {
    values.into_iter().filter_map(|v| std::str::from_utf8(v).ok()).flat_map(|v| v.split(',')).map(str::trim)
}

/// The head of a container's answer and how its body is framed.
#[derive(Debug)]
pub struct Head {
    pub status: StatusCode,
    pub version: Version,
    /// The end-to-end fields only, as the container wrote them: hop-by-hop ones, those
    /// `Connection` lists, and the framing (`Content-Length`, `Transfer-Encoding`) are this
    /// hop's, said by `body` and `keep_alive`.
    pub fields: HeadFields,
    pub body: BodyFraming,
    /// The connection may carry another request once this answer is read whole.
    pub keep_alive: bool,
}

/// Parses an answer head from the front of `buf`: `Ok(None)` when more bytes are needed;
/// on success the head's bytes are taken off `buf` (after an error `buf` is left as it comes,
/// since the connection is not used again). Informational answers (1xx) are skipped.
pub fn parse_head(buf: &mut BytesMut, head_only: bool) -> Result<Option<Head>, String> {
    loop {
        if buf.is_empty() {
            return Ok(None);
        }
        let Some(line) = read(syntax::status_line(buf), buf)? else { return Ok(None) };
        let status = StatusCode::from_u16(line.code)
            .map_err(|_| format!("the answer's status {} is not a status", line.code))?;
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err("the container switched protocols, which a scoring request cannot".into());
        }
        if status.is_informational() {
            let Some(used) = read(syntax::fields(buf, line.end, MAX_HEADERS, |_, _| {}), buf)? else {
                return Ok(None);
            };
            buf.advance(used);
            continue;
        }
        let version = if line.minor == 0 { Version::HTTP_10 } else { Version::HTTP_11 };
        // Each field goes where it belongs as it is read: no list, no map, no removals
        // afterwards but those `Connection` names.
        let mut length = DeclaredLength::default();
        let (mut codings, mut connection) = (Vec::new(), Vec::new());
        let mut end_to_end = Vec::with_capacity(8);
        let parsed = syntax::fields(buf, line.end, MAX_HEADERS, |name, value| {
            let at = FieldAt::of(buf, name, value);
            if named(name, &header::CONTENT_LENGTH) {
                length.add(value);
            } else if named(name, &header::TRANSFER_ENCODING) {
                codings.push(at);
            } else if named(name, &header::CONNECTION) {
                connection.push(at);
            } else if !hop_by_hop(name) {
                end_to_end.push(at);
            }
        });
        let Some(used) = read(parsed, buf)? else { return Ok(None) };
        // The head's bytes become the answer's: its fields are slices of them, not copies.
        let head = buf.split_to(used).freeze();
        let values = |list: &[FieldAt]| list.iter().map(|at| &head[at.value()]).collect::<Vec<_>>();
        let hop = HopFields { length, codings: values(&codings), connection: values(&connection) };
        let mut fields = HeadFields::new(head.clone(), end_to_end);
        let listed: Vec<&str> = tokens(hop.connection.iter().copied()).collect();
        if !listed.is_empty() {
            fields.remove_named(|name| listed.iter().any(|l| name.eq_ignore_ascii_case(l.as_bytes())));
        }
        let (body, framed) = framing(&hop, status, head_only)?;
        let keep_alive = framed && hop.keep_alive(version);
        return Ok(Some(Head { status, version, fields, body, keep_alive }));
    }
}

/// What a part of the head in `buf` read as, in this module's words: a head cut short waits
/// for more bytes unless it is already over the limit.
fn read<T>(parse: syntax::Parse<T>, buf: &[u8]) -> Result<Option<T>, String> {
    match parse {
        Ok(None) if buf.len() >= MAX_HEAD_BYTES => {
            Err(format!("the answer's head is over {} KiB", MAX_HEAD_BYTES / 1024))
        }
        Ok(read) => Ok(read),
        Err(e) => Err(format!("the answer's head is not HTTP/1.1: {e}")),
    }
}

/// The fields of an answer head that are about this hop: their values.
struct HopFields<'a> {
    length: DeclaredLength,
    codings: Vec<&'a [u8]>,
    connection: Vec<&'a [u8]>,
}

impl HopFields<'_> {
    fn keep_alive(&self, version: Version) -> bool {
        let says = |word: &str| tokens(self.connection.iter().copied()).any(|t| t.eq_ignore_ascii_case(word));
        if version == Version::HTTP_10 { says("keep-alive") } else { !says("close") }
    }
}

/// What a head's `Content-Length` fields say together, read as they come (every message has
/// one, so they are not kept): RFC 9110 §8.6, digits only, and a list of one length repeated
/// (`5, 5`, or two fields) is that length. The same reading for requests and answers.
#[derive(Debug, Default)]
pub struct DeclaredLength(Option<Result<u64, BadLength>>);

/// What is wrong with a head's `Content-Length` fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadLength {
    /// This part of a value is not a length.
    NotANumber(String),
    /// Two parts say different lengths.
    Different,
}

impl DeclaredLength {
    /// Adds one field's value; after an error, the first error stays.
    pub fn add(&mut self, value: &[u8]) {
        self.0 = Some(match self.0.take() {
            Some(Err(e)) => Err(e),
            known => read_lengths(value, known.and_then(Result::ok)),
        });
    }

    /// Whether the head had a `Content-Length` field at all.
    pub fn seen(&self) -> bool {
        self.0.is_some()
    }

    /// The length, if the head declared one.
    pub fn get(&self) -> Result<Option<u64>, BadLength> {
        self.0.clone().transpose()
    }
}

fn read_lengths(value: &[u8], mut known: Option<u64>) -> Result<u64, BadLength> {
    // On the bytes: the usual value, one length, is read without making text of it first.
    for part in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
        let n = digits(part)
            .ok_or_else(|| BadLength::NotANumber(std::str::from_utf8(part).unwrap_or("?").to_string()))?;
        if known.is_some_and(|l| l != n) {
            return Err(BadLength::Different);
        }
        known = Some(n);
    }
    // `split` yields at least one part, so a value that got here said a length.
    known.ok_or_else(|| BadLength::NotANumber(String::new()))
}

/// A length of decimal digits only (no sign, no space), if it fits in a u64.
fn digits(part: &[u8]) -> Option<u64> {
    if part.is_empty() {
        return None;
    }
    part.iter().try_fold(0u64, |n, d| {
        d.is_ascii_digit().then_some(())?;
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// The body's framing, and whether it ends before the connection does (RFC 9112 §6.3).
fn framing(hop: &HopFields, status: StatusCode, head_only: bool) -> Result<(BodyFraming, bool), String> {
    if head_only || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok((BodyFraming::Length(0), true));
    }
    if !hop.codings.is_empty() {
        let chunked =
            tokens(hop.codings.iter().copied()).last().is_some_and(|c| c.eq_ignore_ascii_case("chunked"));
        // With a Content-Length beside it, the connection cannot be trusted with another
        // request (§6.1): the body is framed by its coding, then the connection closes.
        let alone = !hop.length.seen();
        return Ok(if chunked {
            (BodyFraming::Chunked(Chunked::default()), alone)
        } else {
            (BodyFraming::UntilClose, false)
        });
    }
    let length = hop.length.get().map_err(|e| match e {
        BadLength::NotANumber(part) => format!("the answer's content-length {part:?} is not a number"),
        BadLength::Different => "the answer has two different content-lengths".to_string(),
    })?;
    Ok(match length {
        Some(n) => (BodyFraming::Length(n), true),
        None => (BodyFraming::UntilClose, false),
    })
}

/// How much of the body is left, and in what form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyFraming {
    /// This many bytes are left.
    Length(u64),
    Chunked(Chunked),
    /// Everything until the container closes the connection.
    UntilClose,
}

/// What the body's next step is.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Data(Bytes),
    /// The body has ended.
    End,
    /// More bytes must be read first.
    More,
}

impl BodyFraming {
    /// Takes the body's next piece off the front of `buf`.
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Next, String> {
        match self {
            BodyFraming::Length(0) => Ok(Next::End),
            BodyFraming::Length(left) => {
                if buf.is_empty() {
                    return Ok(Next::More);
                }
                let n = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                *left -= n as u64;
                Ok(Next::Data(buf.split_to(n).freeze()))
            }
            BodyFraming::Chunked(chunked) => chunked.next(buf),
            BodyFraming::UntilClose if buf.is_empty() => Ok(Next::More),
            BodyFraming::UntilClose => Ok(Next::Data(buf.split().freeze())),
        }
    }

    /// The body's end is known to have come.
    pub fn ended(&self) -> bool {
        matches!(self, BodyFraming::Length(0) | BodyFraming::Chunked(Chunked { state: ChunkState::Done, .. }))
    }

    /// Bytes left when the framing says so.
    pub fn exact(&self) -> Option<u64> {
        match self {
            BodyFraming::Length(n) => Some(*n),
            _ => None,
        }
    }
}

/// The chunked coding's decoder: sizes, data, the CRLF after each chunk, trailers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chunked {
    state: ChunkState,
    /// Trailer bytes read so far (bounded).
    trailer_bytes: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

impl Chunked {
    fn next(&mut self, buf: &mut BytesMut) -> Result<Next, String> {
        loop {
            match self.state {
                ChunkState::Size => {
                    let Some(line) = take_line(buf)? else { return Ok(Next::More) };
                    let digits = line.split(|b| *b == b';').next().unwrap_or_default();
                    let digits =
                        std::str::from_utf8(digits).map_err(|_| "a chunk size is not hex".to_string())?;
                    let size = u64::from_str_radix(digits.trim_matches([' ', '\t']), 16)
                        .map_err(|_| format!("the chunk size {digits:?} is not hex"))?;
                    self.state = if size == 0 { ChunkState::Trailers } else { ChunkState::Data(size) };
                }
                ChunkState::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Next::More);
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    self.state = if n as u64 == left {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - n as u64)
                    };
                    return Ok(Next::Data(buf.split_to(n).freeze()));
                }
                ChunkState::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Next::More);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err("a chunk does not end with CRLF".into());
                    }
                    buf.advance(2);
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    let before = buf.len();
                    let Some(line) = take_line(buf)? else { return Ok(Next::More) };
                    self.trailer_bytes += before - buf.len();
                    if self.trailer_bytes > MAX_HEAD_BYTES {
                        return Err("the answer's trailers are too large".into());
                    }
                    if line.is_empty() {
                        self.state = ChunkState::Done;
                    }
                }
                ChunkState::Done => return Ok(Next::End),
            }
        }
    }
}

/// A line ending in CRLF, taken off `buf` (without the CRLF); `None` until it is whole.
fn take_line(buf: &mut BytesMut) -> Result<Option<Bytes>, String> {
    match buf.windows(2).position(|w| w == b"\r\n") {
        Some(at) => {
            let line = buf.split_to(at).freeze();
            buf.advance(2);
            Ok(Some(line))
        }
        None if buf.len() > MAX_LINE_BYTES => Err("a chunk-size or trailer line is too long".into()),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fields::Fields;

    fn head(text: &str) -> Result<Option<Head>, String> {
        parse_head(&mut BytesMut::from(text), false)
    }

    /// The whole body, fed in pieces of `step` bytes.
    fn body(mut framing: BodyFraming, wire: &[u8], step: usize) -> Result<(Vec<u8>, usize), String> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut fed = 0;
        loop {
            match framing.next(&mut buf)? {
                Next::Data(d) => out.extend_from_slice(&d),
                Next::End => return Ok((out, buf.len() + wire.len() - fed)),
                Next::More if fed == wire.len() => return Err("ran out".into()),
                Next::More => {
                    let n = step.min(wire.len() - fed);
                    buf.extend_from_slice(&wire[fed..fed + n]);
                    fed += n;
                }
            }
        }
    }

    #[test]
    fn hop_by_hop_fields_are_named_by_rfc_9110() {
        let hop = ["connection", "Keep-Alive", "proxy-authenticate", "Proxy-Authorization", "te", "TE"];
        let hop = hop.into_iter().chain(["Trailer", "transfer-encoding", "upgrade", "CONNECTION"]);
        for name in hop {
            assert!(hop_by_hop(name.as_bytes()), "{name}");
        }
        for name in ["content-type", "content-length", "keep-alive-x", "x-te", "authorization", "t"] {
            assert!(!hop_by_hop(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn a_request_goes_out_as_one_write_with_its_length() {
        let mut r = RequestHead::new(&Method::POST, "/score?x=1");
        r.header(&header::HOST, &HeaderValue::from_static("172.17.0.2:5001"));
        let out = r.finish(Bytes::from_static(b"{\"data\":1}"));
        let text = String::from_utf8(out.head).expect("text");
        assert_eq!(
            text,
            "POST /score?x=1 HTTP/1.1\r\nhost: 172.17.0.2:5001\r\ncontent-length: 10\r\n\r\n{\"data\":1}"
        );
        assert!(out.body.is_empty() && !out.head_only);

        let out = RequestHead::new(&Method::GET, "/").finish(Bytes::new());
        assert_eq!(out.head, b"GET / HTTP/1.1\r\n\r\n");
        let out = RequestHead::new(&Method::POST, "/").finish(Bytes::new());
        assert_eq!(out.head, b"POST / HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
        let big = Bytes::from(vec![b'x'; INLINE_BODY_BYTES + 1]);
        let out = RequestHead::new(&Method::PUT, "/").finish(big.clone());
        assert!(out.head.ends_with(b"content-length: 16385\r\n\r\n") && out.body == big);
        assert!(RequestHead::new(&Method::HEAD, "/").finish(Bytes::new()).head_only);
    }

    #[test]
    fn answer_heads_parse_with_their_framing_and_keep_alive() {
        let cases: [(&str, BodyFraming, bool); 10] = [
            ("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", BodyFraming::Length(5), true),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 18446744073709551615\r\n\r\n",
                BodyFraming::Length(u64::MAX),
                true,
            ),
            ("HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\n", BodyFraming::Length(5), true),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
                BodyFraming::Chunked(Chunked::default()),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\ncontent-length: 3\r\n\r\n",
                BodyFraming::Chunked(Chunked::default()),
                false,
            ),
            ("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n", BodyFraming::UntilClose, false),
            ("HTTP/1.1 200 OK\r\n\r\n", BodyFraming::UntilClose, false),
            ("HTTP/1.1 204 No Content\r\ncontent-length: 9\r\n\r\n", BodyFraming::Length(0), true),
            (
                "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\n",
                BodyFraming::Length(1),
                false,
            ),
            ("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n", BodyFraming::Length(1), false),
        ];
        for (text, framing, keep) in cases {
            let h = head(text).expect("parses").expect("whole");
            assert_eq!((&h.body, h.keep_alive), (&framing, keep), "{text}");
        }
        let h = head("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\ncontent-length: 1\r\n\r\n")
            .expect("ok")
            .expect("whole");
        assert!(h.keep_alive && h.version == Version::HTTP_10);
        let mut buf = BytesMut::from("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n");
        assert_eq!(
            parse_head(&mut buf, true).expect("ok").expect("whole").body,
            BodyFraming::Length(0),
            "HEAD"
        );
    }

    #[test]
    fn only_end_to_end_headers_are_kept_from_an_answer_head() {
        let h = head(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Secret-Hop\r\nx-secret-hop: 1\r\n\
             Keep-Alive: timeout=5\r\nContent-Type: application/json\r\ntrailer: x-t\r\n\
             transfer-encoding: chunked\r\nupgrade: h2c\r\nX-Secret-HOP: 2\r\n\r\n",
        )
        .expect("parses")
        .expect("whole");
        let names = |h: &Head| {
            h.fields.each().map(|(n, _)| String::from_utf8_lossy(n).into_owned()).collect::<Vec<_>>()
        };
        assert_eq!(names(&h), ["Content-Type"], "as the container spelt it");
        assert_eq!((h.body, h.keep_alive), (BodyFraming::Chunked(Chunked::default()), true));
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-a: 1\r\n\r\n").expect("ok").expect("whole");
        assert_eq!(
            (names(&h), h.body),
            (vec!["x-a".to_string()], BodyFraming::Length(2)),
            "the length is the framing's"
        );
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 2, 2\r\nContent-Length: 2\r\n\r\n").expect("ok");
        assert_eq!(h.expect("whole").body, BodyFraming::Length(2), "lengths that agree are one length");
    }

    #[test]
    fn informational_answers_are_skipped_and_partial_heads_wait() {
        let mut buf = BytesMut::from(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nx-a: 1\r\ncontent-length: 2\r\n\r\nok",
        );
        let h = parse_head(&mut buf, false).expect("ok").expect("whole");
        assert_eq!(
            (h.status, h.fields.first(&HeaderName::from_static("x-a")), &buf[..]),
            (StatusCode::CREATED, Some(&b"1"[..]), &b"ok"[..])
        );
        assert!(head("HTTP/1.1 200 OK\r\ncontent-le").expect("ok").is_none());
    }

    #[test]
    fn bad_heads_are_refused_by_what_is_wrong() {
        let huge = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX_HEAD_BYTES));
        let cases = [
            ("SMTP ready\r\n\r\n", "not HTTP/1.1"),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
                "two different content-lengths",
            ),
            ("HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n", "is not a number"),
            ("HTTP/1.1 200 OK\r\ncontent-length: x\r\ncontent-length: 1\r\n\r\n", "\"x\" is not a number"),
            ("HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\n", "\"+5\" is not a number"),
            ("HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n", "is not a number"),
            ("HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 1, 2\r\n\r\n", "two different"),
            ("HTTP/1.1 101 Switching Protocols\r\n\r\n", "switched protocols"),
            (huge.as_str(), "over 64 KiB"),
        ];
        for (text, want) in cases {
            let e = head(text).expect_err("refused");
            assert!(e.contains(want), "{text:.40}: {e}");
        }
    }

    #[test]
    fn bodies_are_read_whole_in_any_split_and_leave_what_follows() {
        let chunked = b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        for step in [1, 2, 3, 7, 64] {
            let (out, left) = body(BodyFraming::Chunked(Chunked::default()), chunked, step).expect("chunked");
            assert_eq!((out.as_slice(), left), (&b"hello, world"[..], 4), "step {step}");
            let (out, left) = body(BodyFraming::Length(5), b"helloNEXT", step).expect("length");
            assert_eq!((out.as_slice(), left), (&b"hello"[..], 4), "step {step}");
        }
        let mut framing = BodyFraming::UntilClose;
        let mut buf = BytesMut::from("all of it");
        assert_eq!(framing.next(&mut buf), Ok(Next::Data(Bytes::from_static(b"all of it"))));
        assert_eq!(framing.next(&mut buf), Ok(Next::More));
        assert!(!framing.ended() && BodyFraming::Length(0).ended());
    }

    #[test]
    fn broken_chunks_are_refused() {
        let cases: [(&[u8], &str); 3] = [
            (b"zz\r\n", "is not hex"),
            (b"2\r\nabXY", "does not end with CRLF"),
            (&[b'1'; MAX_LINE_BYTES + 1], "too long"),
        ];
        for (wire, want) in cases {
            let e = body(BodyFraming::Chunked(Chunked::default()), wire, 64).expect_err("refused");
            assert!(e.contains(want), "{e}");
        }
    }
}
