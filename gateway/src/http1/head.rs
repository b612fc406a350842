//! Heads on the client side of HTTP/1.1: a request head parsed ([`crate::syntax`]) into the
//! request line, its fields (left in the head's bytes: [`HeadFields`]) and its body's
//! framing, and an answer head written. Pure functions over buffers,
//! so every rule is table-tested here; [`super::connection`] moves the bytes.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Buf, BytesMut};
use http::header::{self, HeaderMap};
use http::{Method, Request, StatusCode, Uri, Version};

use super::BodyFields;
use crate::fields::{FieldAt, Fields, HeadFields, named};
use crate::syntax;
use crate::wire::{BadLength, BodyFraming, Chunked, DeclaredLength, tokens};

/// The most header fields a request head may have (hyper's bound was 100).
const MAX_HEADERS: usize = 128;
/// The longest request target, whatever the head's limit (hyper's bound too).
const MAX_URI_BYTES: usize = 65534;

/// A request head the gateway does not serve: the status it answers with and why (the
/// access line's `error`). The connection closes after the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub status: StatusCode,
    pub reason: String,
}

impl Refused {
    fn new(status: StatusCode, reason: impl Into<String>) -> Refused {
        Refused { status, reason: reason.into() }
    }

    fn bad(reason: impl Into<String>) -> Refused {
        Refused::new(StatusCode::BAD_REQUEST, reason)
    }
}

/// A request head, parsed.
#[derive(Debug)]
pub struct Parsed {
    pub line: RequestLine,
    /// Every header field as it came (hop-by-hop ones included: the forward strips them).
    pub fields: HeadFields,
    pub body: BodyFraming,
    /// The client keeps the connection for another request after this one.
    pub keep_alive: bool,
    /// The client waits for `100 Continue` before it sends the body.
    pub expect_continue: bool,
}

/// A request line. The request is made only when its body is (kept apart until then: the
/// parsed head is moved a few times on its way, and a request's empty header map and
/// extensions would have made each move a third larger).
#[derive(Debug)]
pub struct RequestLine {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
}

impl RequestLine {
    /// The request, with `body`; its header map is empty: the fields are the head's.
    pub fn request<B>(self, body: B) -> Request<B> {
        let mut request = Request::new(body);
        *request.method_mut() = self.method;
        *request.uri_mut() = self.uri;
        *request.version_mut() = self.version;
        request
    }
}

/// Parses a request head off the front of `buf`: `Ok(None)` while more bytes are needed;
/// on success the head's bytes are taken off `buf` (the body's first bytes stay).
pub fn parse_request(buf: &mut BytesMut, max_head: usize) -> Result<Option<Parsed>, Refused> {
    // RFC 9112 §2.2: empty lines before a request line are ignored.
    while buf.first() == Some(&b'\n') || buf.starts_with(b"\r\n") {
        buf.advance(if buf[0] == b'\n' { 1 } else { 2 });
    }
    if buf.is_empty() {
        return Ok(None);
    }
    // Only what the limit allows is looked at: a head reads the same whether its bytes come
    // at once or in pieces, whatever follows past the limit.
    let window = &buf[..buf.len().min(max_head.saturating_add(1))];
    let base = window.as_ptr() as usize;
    // What the framing depends on is noted as the fields are read, and where each lies, so
    // that they can be slices of the head once it is taken off `buf`. The syntax let through
    // only token names and values without CR, LF or other control bytes but tab: what
    // `http`'s names and values take too.
    let mut seen = Seen::default();
    let mut at = Vec::with_capacity(8);
    let read = syntax::request_line(window).and_then(|line| {
        let Some(line) = line else { return Ok(None) };
        let end = syntax::fields(window, line.end, MAX_HEADERS, |name, value| {
            seen.note(name, value);
            at.push(FieldAt::of(window, name, value));
        })?;
        Ok(end.map(|end| (line, end)))
    });
    let (line, used) = match read {
        Ok(Some((_, used))) if used > max_head => return Err(too_large(buf, max_head)),
        Ok(Some(read)) => read,
        Ok(None) if window.len() > max_head => return Err(too_large(buf, max_head)),
        Ok(None) => return Ok(None),
        Err(syntax::Error::TooManyFields) => {
            return Err(Refused::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!("the request head has more than {MAX_HEADERS} header fields"),
            ));
        }
        Err(syntax::Error::Version) => {
            return Err(Refused::bad("the request's HTTP version is not HTTP/1.0 or HTTP/1.1"));
        }
        Err(e) => return Err(Refused::bad(format!("the request head is not HTTP/1.1: {e}"))),
    };
    let method = Method::from_bytes(line.method).map_err(|_| {
        Refused::bad(format!("the request method {:?} is not a method", String::from_utf8_lossy(line.method)))
    })?;
    let version = if line.minor == 0 { Version::HTTP_10 } else { Version::HTTP_11 };
    let target =
        (line.target.as_ptr() as usize - base, line.target.as_ptr() as usize - base + line.target.len());
    // The head's bytes become the request's: the target and values are slices of them.
    let head = buf.split_to(used).freeze();
    if target.1 - target.0 > MAX_URI_BYTES {
        return Err(Refused::new(
            StatusCode::URI_TOO_LONG,
            format!("the request target is over {MAX_URI_BYTES} bytes"),
        ));
    }
    let uri = Uri::from_maybe_shared(head.slice(target.0..target.1))
        .map_err(|e| Refused::bad(format!("the request target is not a URI: {e}")))?;
    let fields = HeadFields::new(head, at);
    let body = framing(&fields, version, &seen)?;
    let keep_alive = if seen.connection { keep_alive(&fields, version) } else { version == Version::HTTP_11 };
    let expect_continue = version == Version::HTTP_11
        && seen.expect
        && fields.first(&header::EXPECT).is_some_and(|v| v.eq_ignore_ascii_case(b"100-continue"));
    let line = RequestLine { method, uri, version };
    Ok(Some(Parsed { line, fields, body, keep_alive, expect_continue }))
}

/// 414 when not even the request line fits within the limit, 431 otherwise.
fn too_large(buf: &[u8], max_head: usize) -> Refused {
    let line_ends = buf[..max_head.min(buf.len())].contains(&b'\n');
    if line_ends {
        Refused::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("the request head is over max_header_bytes ({max_head} bytes)"),
        )
    } else {
        Refused::new(
            StatusCode::URI_TOO_LONG,
            format!("the request line is over max_header_bytes ({max_head} bytes)"),
        )
    }
}

/// The fields a head's framing and persistence depend on, noticed as the fields are listed:
/// the length is read as it comes, and the fields are looked up again only for a
/// `Transfer-Encoding`, `Connection` or `Expect` the head has.
#[derive(Default)]
struct Seen {
    length: DeclaredLength,
    coding: bool,
    connection: bool,
    expect: bool,
}

impl Seen {
    fn note(&mut self, name: &[u8], value: &[u8]) {
        if named(name, &header::CONTENT_LENGTH) {
            self.length.add(value);
        } else if named(name, &header::TRANSFER_ENCODING) {
            self.coding = true;
        } else if named(name, &header::CONNECTION) {
            self.connection = true;
        } else if named(name, &header::EXPECT) {
            self.expect = true;
        }
    }
}

fn keep_alive(fields: &HeadFields, version: Version) -> bool {
    let says = |word: &str| tokens(fields.all(&header::CONNECTION)).any(|t| t.eq_ignore_ascii_case(word));
    if version == Version::HTTP_10 { says("keep-alive") } else { !says("close") }
}

/// RFC 9112 §6.3 for requests, strictly: whatever two servers could read two ways (a length
/// beside a coding, two lengths, a coding that does not end in chunked) is refused, so that
/// no request can be smuggled past moat inside another.
fn framing(fields: &HeadFields, version: Version, seen: &Seen) -> Result<BodyFraming, Refused> {
    if seen.coding {
        if version == Version::HTTP_10 {
            return Err(Refused::bad("an HTTP/1.0 request has a transfer-encoding"));
        }
        if seen.length.seen() {
            return Err(Refused::bad("the request has both a content-length and a transfer-encoding"));
        }
        let mut codings = tokens(fields.all(&header::TRANSFER_ENCODING));
        let chunked = codings.next().is_some_and(|c| c.eq_ignore_ascii_case("chunked"));
        if !chunked || codings.next().is_some() {
            return Err(Refused::new(
                StatusCode::NOT_IMPLEMENTED,
                "the request's transfer-encoding is not chunked alone",
            ));
        }
        return Ok(BodyFraming::Chunked(Chunked::default()));
    }
    let length = seen.length.get().map_err(|e| match e {
        BadLength::NotANumber(part) => {
            Refused::bad(format!("the request's content-length {part:?} is not a number"))
        }
        BadLength::Different => Refused::bad("the request has two different content-lengths"),
    })?;
    Ok(BodyFraming::Length(length.unwrap_or(0)))
}

/// How an answer's body is framed on the client's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all (HEAD, 204, 304); a length is still said when known.
    Bodiless(Option<u64>),
    Length(u64),
    Chunked,
    /// An HTTP/1.0 client's answer of unknown length: it ends when the connection does.
    UntilClose,
}

/// What the answer's `Connection` field says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persist {
    /// HTTP/1.1's default: nothing to say.
    Default,
    Close,
    /// An HTTP/1.0 client asked to keep the connection.
    KeepAlive,
}

/// Writes an answer head into `out`: the status line, the answer's own fields (the map's,
/// then `more`, as they are; its framing fields are this hop's, written from `framing`), the
/// date, the framing and `persist`.
pub fn write_answer_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    more: &impl BodyFields,
    framing: Framing,
    persist: Persist,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    // The container's own `Date` goes through; moat adds one only when it has none (a second
    // one would make the field a list, which `Date` cannot be).
    let mut dated = false;
    let mut field = |name: &[u8], value: &[u8]| {
        // By length first: checked on every field of every answer.
        match name.len() {
            4 => dated |= named(name, &header::DATE),
            10 if named(name, &header::CONNECTION) => return,
            14 if named(name, &header::CONTENT_LENGTH) => return,
            17 if named(name, &header::TRANSFER_ENCODING) => return,
            _ => {}
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    };
    for (name, value) in headers {
        field(name.as_str().as_bytes(), value.as_bytes());
    }
    more.each_field(&mut field);
    match framing {
        Framing::Length(n) | Framing::Bodiless(Some(n)) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::Bodiless(None) | Framing::UntilClose => {}
    }
    match persist {
        Persist::Default => {}
        Persist::Close => out.extend_from_slice(b"connection: close\r\n"),
        Persist::KeepAlive => out.extend_from_slice(b"connection: keep-alive\r\n"),
    }
    if !dated {
        out.extend_from_slice(b"date: ");
        DATE.with_borrow_mut(|date| out.extend_from_slice(date.now()));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The start of a chunk of `len` bytes: its size in hex and CRLF.
pub fn chunk_size_line(out: &mut Vec<u8>, len: usize) {
    let mut digits = [0u8; 16];
    let mut at = digits.len();
    let mut n = len;
    loop {
        at -= 1;
        digits[at] = b"0123456789abcdef"[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
    out.extend_from_slice(b"\r\n");
}

/// The `Date` field's value, formatted once a second per thread.
struct Date {
    second: u64,
    text: [u8; 29],
}

thread_local! {
    static DATE: RefCell<Date> = const { RefCell::new(Date { second: u64::MAX, text: [b' '; 29] }) };
}

impl Date {
    fn now(&mut self) -> &[u8] {
        let now = SystemTime::now();
        let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if second != self.second {
            let text = httpdate::fmt_http_date(now);
            if text.len() == self.text.len() {
                self.text.copy_from_slice(text.as_bytes());
                self.second = second;
            }
        }
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use http::header::{HeaderName, HeaderValue};

    use super::*;

    fn parse(text: &str) -> Result<Option<Parsed>, Refused> {
        parse_request(&mut BytesMut::from(text), 1024)
    }

    fn status(text: &str) -> u16 {
        match parse(text) {
            Err(refused) => refused.status.as_u16(),
            Ok(Some(_)) => 200,
            Ok(None) => 0,
        }
    }

    #[test]
    fn a_request_head_gives_its_request_framing_and_what_the_client_wants() {
        let mut buf = BytesMut::from(
            "\r\nPOST /endpoints/ep/score?x=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nX-A: 1\r\nX-A: 2\r\nConnection: te\r\n\r\n{}GET",
        );
        let parsed = parse_request(&mut buf, 1024).expect("parsed").expect("whole");
        let r = &parsed.line;
        assert_eq!(
            (&r.method, r.uri.path(), r.uri.query()),
            (&Method::POST, "/endpoints/ep/score", Some("x=1"))
        );
        assert_eq!(r.version, Version::HTTP_11);
        let fields = &parsed.fields;
        let x_a = HeaderName::from_static("x-a");
        assert_eq!(fields.all(&x_a).collect::<Vec<_>>(), [b"1", b"2"], "names in any case");
        assert_eq!(
            fields.first(&header::CONNECTION),
            Some(&b"te"[..]),
            "hop-by-hop fields stay for the forward to strip"
        );
        assert_eq!(fields.each().next(), Some((&b"Host"[..], &b"x"[..])), "names as they came");
        let map = fields.to_map();
        assert_eq!(
            (map.len(), &map["x-a"], &map["content-length"]),
            (5, &HeaderValue::from_static("1"), &HeaderValue::from_static("2"))
        );
        assert_eq!(parsed.body, BodyFraming::Length(2));
        assert!(parsed.keep_alive && !parsed.expect_continue);
        let request = parsed.line.request(());
        assert_eq!((request.method(), request.uri().path()), (&Method::POST, "/endpoints/ep/score"));
        assert!(request.headers().is_empty(), "the fields are not in a map");
        assert_eq!(&buf[..], b"{}GET", "the body and what follows stay in the buffer");
    }

    #[test]
    fn every_field_of_a_long_head_is_kept_in_order() {
        let fields: String = (0..MAX_HEADERS).map(|i| format!("X-F{i}: {i}\r\n")).collect();
        let mut buf = BytesMut::from(format!("GET / HTTP/1.1\r\n{fields}\r\n").as_str());
        let parsed = parse_request(&mut buf, 8192).expect("parsed").expect("whole");
        let values: Vec<String> =
            parsed.fields.each().map(|(_, v)| String::from_utf8_lossy(v).into_owned()).collect();
        let expected: Vec<String> = (0..MAX_HEADERS).map(|i| i.to_string()).collect();
        assert_eq!(values, expected);
    }

    #[test]
    fn keep_alive_and_expect_follow_the_version() {
        let cases = [
            ("GET / HTTP/1.1\r\n\r\n", true, false),
            ("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n", false, false),
            ("GET / HTTP/1.0\r\n\r\n", false, false),
            ("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true, false),
            ("POST / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n", true, true),
            ("POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n", false, false),
        ];
        for (text, keep_alive, expect) in cases {
            let parsed = parse(text).expect("parsed").expect("whole");
            assert_eq!((parsed.keep_alive, parsed.expect_continue), (keep_alive, expect), "{text:?}");
        }
    }

    #[test]
    fn bodies_are_framed_one_way_only() {
        let framing = |text: &str| parse(text).map(|p| p.expect("whole").body);
        assert_eq!(framing("GET / HTTP/1.1\r\n\r\n"), Ok(BodyFraming::Length(0)));
        assert_eq!(framing("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n"), Ok(BodyFraming::Length(5)));
        assert_eq!(
            framing("POST / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n"),
            Ok(BodyFraming::Length(5))
        );
        assert_eq!(
            framing("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Ok(BodyFraming::Chunked(Chunked::default()))
        );
        for (text, status) in [
            ("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5, 6\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 501),
            ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        ] {
            assert_eq!(self::status(text), status, "{text:?}");
        }
    }

    #[test]
    fn heads_that_cannot_be_served_are_refused_with_their_status() {
        let long_line = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(2000));
        let long_head = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(2000));
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "X-A: 1\r\n".repeat(MAX_HEADERS + 1));
        // A byte httparse refuses, past the limit: the limit is what the client hears of.
        let bad_past_limit = format!("GET /{}\x01 HTTP/1.1\r\n\r\n", "a".repeat(1100));
        for (text, status) in [
            ("GET / HTTP/1.1\r\nHost: x\r\n", 0),
            ("GET / HTTP/1.1\r\nHost: x\r\n\r\n", 200),
            (long_line.as_str(), 414),
            (&long_line[..1100], 414),
            (long_head.as_str(), 431),
            (&long_head[..1100], 431),
            (many.as_str(), 431),
            (bad_past_limit.as_str(), 414),
            ("NOT A REQUEST\r\n\r\n", 400),
            ("GET / HTTP/2.0\r\n\r\n", 400),
            ("G(T / HTTP/1.1\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", 400),
        ] {
            assert_eq!(self::status(text), status, "{:?}", &text[..text.len().min(60)]);
        }
    }

    #[test]
    fn an_answer_head_says_its_framing_once() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("99"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        let text = |framing, persist| {
            let mut out = Vec::new();
            write_answer_head(&mut out, StatusCode::OK, &headers, &(), framing, persist);
            String::from_utf8(out).expect("text")
        };
        let length = text(Framing::Length(2), Persist::Default);
        assert!(
            length.starts_with(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\ndate: "
            )
        );
        assert!(length.ends_with(" GMT\r\n\r\n") && !length.contains("99") && !length.contains("keep-alive"));
        assert!(
            text(Framing::Chunked, Persist::Close)
                .contains("transfer-encoding: chunked\r\nconnection: close\r\n")
        );
        assert!(text(Framing::UntilClose, Persist::KeepAlive).contains("\r\nconnection: keep-alive\r\n"));
        assert!(!text(Framing::Bodiless(None), Persist::Default).contains("content-length"));
    }

    #[test]
    fn an_answer_keeps_the_containers_date_and_gets_none_of_its_own() {
        let mut headers = HeaderMap::new();
        headers.insert(header::DATE, HeaderValue::from_static("Sun, 06 Dec 2026 18:09:34 GMT"));
        let mut out = Vec::new();
        write_answer_head(&mut out, StatusCode::OK, &headers, &(), Framing::Length(0), Persist::Default);
        let text = String::from_utf8(out).expect("text");
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\ndate: Sun, 06 Dec 2026 18:09:34 GMT\r\ncontent-length: 0\r\n\r\n"
        );
    }

    #[test]
    fn relayed_fields_follow_the_maps_as_they_came_without_their_framing() {
        let mut headers = HeaderMap::new();
        headers.insert(HeaderName::from_static("x-request-id"), HeaderValue::from_static("moat"));
        let relayed = crate::fields::tests::head_fields(
            "Content-Type: text/event-stream\nContent-Length: 9\nDate: Sun, 06 Dec 2026 18:09:34 GMT\n",
        );
        let mut out = Vec::new();
        write_answer_head(&mut out, StatusCode::OK, &headers, &relayed, Framing::Chunked, Persist::Default);
        assert_eq!(
            String::from_utf8(out).expect("text"),
            "HTTP/1.1 200 OK\r\nx-request-id: moat\r\nContent-Type: text/event-stream\r\n\
             Date: Sun, 06 Dec 2026 18:09:34 GMT\r\ntransfer-encoding: chunked\r\n\r\n"
        );
    }

    #[test]
    fn chunk_sizes_are_hex() {
        for (len, line) in
            [(0, "0\r\n"), (10, "a\r\n"), (4096, "1000\r\n"), (usize::MAX, "ffffffffffffffff\r\n")]
        {
            let mut out = Vec::new();
            chunk_size_line(&mut out, len);
            assert_eq!(String::from_utf8(out).expect("text"), line);
        }
    }
}
