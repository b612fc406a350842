//! The syntax of an HTTP/1.1 head (RFC 9112 §2-5): a request line or a status line, then
//! field lines up to an empty line. Both of moat's HTTP/1.1 sides read heads with it: the
//! gateway a client's request ([`crate::http1::head`]), the upstream a container's answer
//! ([`crate::wire`]). Only the grammar: what a field means is the caller's.
//!
//! Why not httparse, which read them before: its byte-at-a-time walk, then a second walk of
//! the list it filled, cost about 1,500 instructions per proxied request (7 %, BENCHMARKS.md);
//! here the bytes are taken eight at a time (a word's bytes are classed together: a value's,
//! a target's, a name's usual letters and hyphens), and each field goes to the caller as it
//! is read. What is accepted is exactly what httparse's default configuration accepts, read
//! the same way (LF alone ends a line too; no obsolete line folding; trailing blanks are not
//! part of a value), and what is refused is refused for the same reason: the differential
//! test below and the fuzz target `head_syntax` hold the two to it, byte for byte, whole and
//! cut short.

use std::fmt;

/// Why a head is not HTTP/1.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The request method is empty or not a token, or no single space follows it.
    Method,
    /// The request target is empty, has a byte a target cannot have, is not UTF-8, or no
    /// single space follows it.
    Target,
    /// The version is not `HTTP/1.0` or `HTTP/1.1`, or no single space follows it in a
    /// status line.
    Version,
    /// A line ends in CR without LF, or the request line has more after its version.
    NewLine,
    /// A status line's code is not three digits, or its reason has a control byte.
    Status,
    /// A field name is empty or not a token, or no colon follows it.
    FieldName,
    /// A field value has a control byte other than tab, or a CR without LF.
    FieldValue,
    /// More fields than the caller takes.
    TooManyFields,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::Method => "the method is not a token followed by one space",
            Error::Target => "the request target is not visible characters followed by one space",
            Error::Version => "the version is not HTTP/1.0 or HTTP/1.1",
            Error::NewLine => "a line does not end in CRLF",
            Error::Status => "the status line is not a version, a three-digit code and a reason",
            Error::FieldName => "a field name is not a token followed by a colon",
            Error::FieldValue => "a field value has a control character",
            Error::TooManyFields => "too many header fields",
        })
    }
}

/// What a parse came to: `Ok(None)` while the head is cut short and more bytes may complete
/// it.
pub type Parse<T> = Result<Option<T>, Error>;

/// A request line: slices of the head.
#[derive(Debug, PartialEq, Eq)]
pub struct RequestLine<'a> {
    pub method: &'a [u8],
    pub target: &'a [u8],
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    /// Where the field lines start.
    pub end: usize,
}

/// A status line (its reason phrase is not kept: nothing reads it).
#[derive(Debug, PartialEq, Eq)]
pub struct StatusLine {
    /// Three digits: 000 to 999.
    pub code: u16,
    pub minor: u8,
    pub end: usize,
}

/// The request line at the front of `buf`, after any empty lines.
pub fn request_line(buf: &[u8]) -> Parse<RequestLine<'_>> {
    let Some(start) = skip_empty_lines(buf)? else { return Ok(None) };
    let at = token_end(buf, start);
    let method = &buf[start..at];
    match buf.get(at) {
        None => return Ok(None),
        Some(b' ') if !method.is_empty() => {}
        Some(_) => return Err(Error::Method),
    }
    let target_start = at + 1;
    let at = first_stop(buf, target_start, target_stops);
    let target = &buf[target_start..at];
    match buf.get(at) {
        None => return Ok(None),
        Some(b' ') if !target.is_empty() => {}
        Some(_) => return Err(Error::Target),
    }
    if !target.is_ascii() && std::str::from_utf8(target).is_err() {
        return Err(Error::Target);
    }
    let Some(minor) = version(buf, at + 1)? else { return Ok(None) };
    let Some(end) = line_end(buf, at + 9, Error::NewLine)? else { return Ok(None) };
    Ok(Some(RequestLine { method, target, minor, end }))
}

/// The status line at the front of `buf`, after any empty lines.
pub fn status_line(buf: &[u8]) -> Parse<StatusLine> {
    let Some(start) = skip_empty_lines(buf)? else { return Ok(None) };
    let Some(minor) = version(buf, start)? else { return Ok(None) };
    let mut at = start + 8;
    match buf.get(at) {
        None => return Ok(None),
        Some(b' ') => at += 1,
        Some(_) => return Err(Error::Version),
    }
    let mut code = 0u16;
    for _ in 0..3 {
        match buf.get(at) {
            None => return Ok(None),
            Some(d @ b'0'..=b'9') => code = code * 10 + u16::from(d - b'0'),
            Some(_) => return Err(Error::Status),
        }
        at += 1;
    }
    // The reason phrase is optional, and so is the space before it.
    match buf.get(at) {
        None => return Ok(None),
        Some(b' ') => at = value_end(buf, at + 1),
        Some(b'\r' | b'\n') => {}
        Some(_) => return Err(Error::Status),
    }
    let Some(end) = line_end(buf, at, Error::Status)? else { return Ok(None) };
    Ok(Some(StatusLine { code, minor, end }))
}

/// The field lines from `at` to the empty line that ends the head, each given to `field` as
/// its name and its value (without the blanks around it) as it is read; at most `max` of
/// them. `Ok(Some(end))`: the head ends before `end`, where the body starts.
pub fn fields<'a>(
    buf: &'a [u8],
    mut at: usize,
    max: usize,
    mut field: impl FnMut(&'a [u8], &'a [u8]),
) -> Parse<usize> {
    let mut count = 0;
    loop {
        let name_start = at;
        at = token_end(buf, at);
        match buf.get(at) {
            None => return Ok(None),
            Some(b':') if at > name_start => {}
            // The empty line: the head's end.
            Some(b'\r' | b'\n') if at == name_start => {
                return line_end(buf, at, Error::NewLine);
            }
            Some(_) => return Err(Error::FieldName),
        }
        let name = &buf[name_start..at];
        at += 1;
        while let Some(b' ' | b'\t') = buf.get(at) {
            at += 1;
        }
        let value_start = at;
        at = value_end(buf, at);
        let value = buf[value_start..at].trim_ascii_end();
        let Some(next) = line_end(buf, at, Error::FieldValue)? else { return Ok(None) };
        if count == max {
            return Err(Error::TooManyFields);
        }
        count += 1;
        field(name, value);
        at = next;
    }
}

/// Past the empty lines at the front of `buf` (RFC 9112 §2.2: a server ignores them).
fn skip_empty_lines(buf: &[u8]) -> Parse<usize> {
    let mut at = 0;
    while let Some(b'\r' | b'\n') = buf.get(at) {
        let Some(next) = line_end(buf, at, Error::NewLine)? else { return Ok(None) };
        at = next;
    }
    Ok((at < buf.len()).then_some(at))
}

/// `HTTP/1.0` or `HTTP/1.1` at `at`: its minor version. Cut short, it is refused as soon as
/// what came cannot begin either.
fn version(buf: &[u8], at: usize) -> Parse<u8> {
    let rest = buf.get(at..).unwrap_or_default();
    match rest.first_chunk::<8>() {
        Some(b"HTTP/1.1") => Ok(Some(1)),
        Some(b"HTTP/1.0") => Ok(Some(0)),
        Some(_) => Err(Error::Version),
        None if b"HTTP/1.".starts_with(rest) => Ok(None),
        None => Err(Error::Version),
    }
}

/// The line's end at `at`, CRLF or LF alone: where the next line starts. Any other byte
/// there, or a CR followed by anything but LF, is `error`.
fn line_end(buf: &[u8], at: usize, error: Error) -> Parse<usize> {
    match buf.get(at) {
        None => Ok(None),
        Some(b'\n') => Ok(Some(at + 1)),
        Some(b'\r') => match buf.get(at + 1) {
            None => Ok(None),
            Some(b'\n') => Ok(Some(at + 2)),
            Some(_) => Err(error),
        },
        Some(_) => Err(error),
    }
}

/// RFC 9110 §5.6.2: the bytes of a token (a method, a field name).
const fn is_token_byte(b: u8) -> bool {
    matches!(b, b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'!' | b'#' | b'$' | b'%' | b'&' | b'\''
        | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~')
}

static TOKEN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = is_token_byte(b as u8);
        b += 1;
    }
    table
};

/// Past the token bytes from `at`. Names are mostly letters and hyphens: those are stepped
/// over eight at a time, and any other byte is looked up alone.
#[inline]
fn token_end(buf: &[u8], mut at: usize) -> usize {
    loop {
        at = first_stop(buf, at, name_stops);
        match buf.get(at) {
            Some(&b) if TOKEN[usize::from(b)] => at += 1,
            _ => return at,
        }
    }
}

/// Past the value bytes from `at`.
#[inline]
fn value_end(buf: &[u8], mut at: usize) -> usize {
    loop {
        // A tab stops the word scan (it is a control byte) but not the value: rare, so
        // stepped over here rather than tested for in every word.
        at = first_stop(buf, at, value_stops);
        if buf.get(at) != Some(&b'\t') {
            return at;
        }
        at += 1;
    }
}

const ONES: u64 = u64::from_le_bytes([0x01; 8]);
const HIGHS: u64 = ONES * 0x80;

/// The high bit of each byte of `w` below `n` (`n` at most 0x80). Borrows only run upward,
/// so the lowest flagged byte is always a byte below `n`; bytes above it may be flagged
/// wrongly, which is why only the lowest is ever read.
#[inline(always)]
const fn below(w: u64, n: u8) -> u64 {
    w.wrapping_sub(ONES * n as u64) & !w & HIGHS
}

/// Flags the bytes of a name's word that are not letters or hyphens. Every byte's flag is
/// exact (no carry crosses a byte), since the bytes before the first flag are all taken.
const fn name_stops(w: u64) -> u64 {
    // A letter of either case, with 0x20 set, is a lower-case letter; no other byte becomes
    // one, and bytes from 0x80 keep their high bit.
    let lower = w | (ONES * 0x20);
    let low = lower & !HIGHS;
    let from_a = low + ONES * (0x80 - b'a' as u64);
    let past_z = low + ONES * (0x80 - b'z' as u64 - 1);
    let letters = from_a & !past_z & !lower & HIGHS;
    let not_hyphen = w ^ (ONES * b'-' as u64);
    let hyphens = !(((not_hyphen & !HIGHS) + !HIGHS) | not_hyphen) & HIGHS;
    !(letters | hyphens) & HIGHS
}

/// Flags the bytes of a request target's word that end it: control bytes, space, DEL.
const fn target_stops(w: u64) -> u64 {
    below(w, 0x21) | below(w ^ (ONES * 0x7f), 1)
}

/// Flags the bytes of a value's word that end it, or that need a look: control bytes
/// (tab too), DEL.
const fn value_stops(w: u64) -> u64 {
    below(w, 0x20) | below(w ^ (ONES * 0x7f), 1)
}

/// The first byte from `at` that `stops` flags, eight bytes at a time, or `buf.len()`. The
/// last few bytes are a word padded with NUL, a byte every class stops at: the padding's
/// first byte is `buf.len()`.
#[inline(always)]
fn first_stop(buf: &[u8], mut at: usize, stops: impl Fn(u64) -> u64) -> usize {
    while at < buf.len() {
        let mut word = [0u8; 8];
        match buf.get(at..at + 8) {
            Some(bytes) => word.copy_from_slice(bytes),
            None => word[..buf.len() - at].copy_from_slice(&buf[at..]),
        }
        let flagged = stops(u64::from_le_bytes(word));
        if flagged != 0 {
            return at + (flagged.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    buf.len()
}

/// This module's reading of a head against httparse's: the unit tests below and the fuzz
/// target `head_syntax` (which turns on the `differential` feature) compare the two.
#[cfg(any(test, feature = "differential"))]
pub mod differential {
    use super::*;

    type Fields = Vec<(Vec<u8>, Vec<u8>)>;

    /// A head as either parser reads it: the request line's method and target or the status
    /// line's code, the minor version, every field, the length; or more bytes wanted; or the
    /// refusal, by httparse's name for it.
    #[derive(Debug, PartialEq, Eq)]
    pub enum Read {
        Head { line: (Vec<u8>, Vec<u8>, u16, u8), fields: Fields, len: usize },
        Partial,
        Refused(httparse::Error),
    }

    fn kind(e: Error) -> httparse::Error {
        match e {
            Error::Method | Error::Target => httparse::Error::Token,
            Error::Version => httparse::Error::Version,
            Error::NewLine => httparse::Error::NewLine,
            Error::Status => httparse::Error::Status,
            Error::FieldName => httparse::Error::HeaderName,
            Error::FieldValue => httparse::Error::HeaderValue,
            Error::TooManyFields => httparse::Error::TooManyHeaders,
        }
    }

    /// `buf` read by this module as a request (or an answer), with at most `max` fields.
    pub fn ours(buf: &[u8], max: usize, request: bool) -> Read {
        let mut fields = Vec::new();
        let line = if request {
            request_line(buf).map(|l| l.map(|l| ((l.method.to_vec(), l.target.to_vec(), 0, l.minor), l.end)))
        } else {
            status_line(buf).map(|l| l.map(|l| ((Vec::new(), Vec::new(), l.code, l.minor), l.end)))
        };
        let read = line.and_then(|line| {
            let Some((line, end)) = line else { return Ok(None) };
            let len = super::fields(buf, end, max, |n, v| fields.push((n.to_vec(), v.to_vec())))?;
            Ok(len.map(|len| (line, len)))
        });
        match read {
            Ok(Some((line, len))) => Read::Head { line, fields, len },
            Ok(None) => Read::Partial,
            Err(e) => Read::Refused(kind(e)),
        }
    }

    /// `buf` read by httparse's default configuration, the same way.
    pub fn theirs(buf: &[u8], max: usize, request: bool) -> Read {
        let mut headers = vec![httparse::EMPTY_HEADER; max];
        let fields = |h: &[httparse::Header]| {
            h.iter().map(|h| (h.name.as_bytes().to_vec(), h.value.to_vec())).collect()
        };
        let status = |parsed, line, headers: &[httparse::Header]| match parsed {
            Ok(httparse::Status::Complete(len)) => Read::Head { line, fields: fields(headers), len },
            Ok(httparse::Status::Partial) => Read::Partial,
            Err(e) => Read::Refused(e),
        };
        if request {
            let mut r = httparse::Request::new(&mut headers);
            let parsed = r.parse(buf);
            let method = r.method.unwrap_or_default().as_bytes().to_vec();
            let line = (method, r.path.unwrap_or_default().as_bytes().to_vec(), 0, r.version.unwrap_or(9));
            status(parsed, line, r.headers)
        } else {
            let mut r = httparse::Response::new(&mut headers);
            let parsed = r.parse(buf);
            status(
                parsed,
                (Vec::new(), Vec::new(), r.code.unwrap_or(1000), r.version.unwrap_or(9)),
                r.headers,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::differential::{ours, theirs};
    use super::*;

    const MAX: usize = 4;

    /// Both readings of `head` and of every part of it cut short agree.
    fn agree(head: &[u8]) {
        for cut in 0..=head.len() {
            let part = &head[..cut];
            for request in [true, false] {
                let (ours, theirs) = (ours(part, MAX, request), theirs(part, MAX, request));
                assert_eq!(ours, theirs, "request {request}: {:?}", String::from_utf8_lossy(part));
            }
        }
    }

    #[test]
    fn heads_read_as_httparse_reads_them() {
        let heads: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\n\r\n",
            b"POST /score?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
            b"\r\n\nGET / HTTP/1.0\nHost:a\n\n",
            b"\rGET / HTTP/1.1\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1 \r\n\r\n",
            b"GET / HTTP/1.2\r\n\r\n",
            b"GET / http/1.1\r\n\r\n",
            b"G@T / HTTP/1.1\r\n\r\n",
            b" / HTTP/1.1\r\n\r\n",
            b"GET /\x7f HTTP/1.1\r\n\r\n",
            b"GET /caf\xc3\xa9/\xe2\x82\xac HTTP/1.1\r\n\r\n",
            b"GET /\xff HTTP/1.1\r\n\r\n",
            b"GET /a\tb HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nA: b\rc\r\n\r\n",
            b"GET / HTTP/1.1\r\nA: b\x00c\r\n\r\n",
            b"GET / HTTP/1.1\r\nA: b\x7fc\r\n\r\n",
            b"GET / HTTP/1.1\r\nA:\t b\tc \t\r\n\r\n",
            b"GET / HTTP/1.1\r\nA: \xe2\x82\xac\x80\xff\r\n\r\n",
            b"GET / HTTP/1.1\r\nA:\r\nB: \t \r\n\r\n",
            b"GET / HTTP/1.1\r\nA : b\r\n\r\n",
            b"GET / HTTP/1.1\r\n A: b\r\n\r\n",
            b"GET / HTTP/1.1\r\n: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\r\nA\r\n\r\n",
            b"GET / HTTP/1.1\r\nA: b\r\n\rx",
            b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n",
            b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n\r\n",
            b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE\x01: 5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            b"HTTP/1.1 200\r\n\r\n",
            b"HTTP/1.1 200\nA: b\n\n",
            b"HTTP/1.0 404 Not\tFound \xff\r\n\r\n",
            b"HTTP/1.1 20 OK\r\n\r\n",
            b"HTTP/1.1  200 OK\r\n\r\n",
            b"HTTP/1.1 200OK\r\n\r\n",
            b"HTTP/1.1 200 O\x01K\r\n\r\n",
            b"HTTP/1.1 200 OK\rX\r\n\r\n",
            b"HTTP/1.1\t200 OK\r\n\r\n",
            b"HTTP/1.1 999 \r\n\r\n",
            b"SMTP ready\r\n\r\n",
        ];
        for head in heads {
            agree(head);
        }
    }

    /// Heads made of pieces near the edges of the grammar, pseudo-randomly (the seed fixed,
    /// so a failure repeats), each compared whole and cut at every byte.
    #[test]
    fn made_up_heads_read_as_httparse_reads_them() {
        const PIECES: &[&[u8]] = &[
            b"GET",
            b"POST",
            b"HTTP/1.1",
            b"HTTP/1.0",
            b"HTTP/1.",
            b"200",
            b"20",
            b" ",
            b"  ",
            b"\t",
            b"\r\n",
            b"\n",
            b"\r",
            b":",
            b": ",
            b"/",
            b"/score?a=b",
            b"Host",
            b"Content-Length",
            b"x",
            b"0123456789abcdef",
            b"\x00",
            b"\x01",
            b"\x1f",
            b"\x7f",
            b"\x80",
            b"\xc3\xa9",
            b"\xff",
            b"\"",
            b"(",
            b"@",
            b",",
            b"~",
            b"application/json; charset=utf-8",
        ];
        let mut rng = fastrand::Rng::with_seed(0x6d6f6174);
        for _ in 0..5_000 {
            let mut head = Vec::new();
            // Mostly well-formed starts, whole lines or cut anywhere, so that what follows
            // each part of a start line is tried and the fields are reached.
            const STARTS: &[&[u8]] = &[
                b"POST /score HTTP/1.1\r\n",
                b"GET / HTTP/1.0\n",
                b"HTTP/1.1 200 OK\r\n",
                b"HTTP/1.0 404\n",
            ];
            let start = STARTS[rng.usize(..STARTS.len())];
            head.extend_from_slice(&start[..rng.usize(0..=start.len())]);
            for _ in 0..rng.usize(1..24) {
                head.extend_from_slice(PIECES[rng.usize(..PIECES.len())]);
                if rng.u8(0..6) == 0 {
                    head.extend_from_slice(b"\r\n");
                }
            }
            head.extend_from_slice(b"\r\n\r\n");
            agree(&head);
        }
    }

    /// The bytes each class takes, a byte at a time: what the words' flags are checked against.
    fn is_name_byte(b: u8) -> bool {
        b.is_ascii_alphabetic() || b == b'-'
    }

    /// A request target's bytes: visible ASCII, and bytes of UTF-8 beyond it.
    fn is_target_byte(b: u8) -> bool {
        b > b' ' && b != 0x7f
    }

    /// A field value's bytes, which a scan steps over (a tab is one, but stops the scan).
    fn is_value_byte(b: u8) -> bool {
        b >= b' ' && b != 0x7f
    }

    #[test]
    fn a_names_word_flags_exactly_its_bytes_that_are_not_letters_or_hyphens() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..20_000 {
            // Bytes near the edges of the classes, and any byte.
            let bytes: [u8; 8] = std::array::from_fn(|_| match rng.u8(0..4) {
                0 => *rng.choice(b"-,.@AZ[`az{\x7f\x80\xc1\xda\xe1\xfa\x0d\x2d\xad").unwrap_or(&0),
                _ => rng.u8(..),
            });
            let flags = name_stops(u64::from_le_bytes(bytes));
            for (i, b) in bytes.iter().enumerate() {
                assert_eq!(flags >> (i * 8 + 7) & 1 == 1, !is_name_byte(*b), "{bytes:?} at {i}");
            }
        }
    }

    #[test]
    fn words_stop_at_their_first_stop_byte() {
        // Every byte value in every place of a word, then a stop further on, or the buffer's
        // end right after it (the last bytes read as a padded word): the scan finds the first
        // stop exactly, whatever follows it.
        type Class = (fn(u64) -> u64, fn(u8) -> bool);
        let classes: [Class; 3] =
            [(value_stops, is_value_byte), (target_stops, is_target_byte), (name_stops, is_name_byte)];
        for b in 0..=255u8 {
            for place in 0..16 {
                let mut bytes = vec![b'a'; 24];
                bytes[place] = b;
                bytes[place + 3] = 0x00;
                for (stops, takes) in classes {
                    let (long, short) = if takes(b) { (place + 3, place + 1) } else { (place, place) };
                    assert_eq!(first_stop(&bytes, 0, stops), long, "{b:#x} at {place}");
                    assert_eq!(first_stop(&bytes[..place + 1], 0, stops), short, "{b:#x} last, at {place}");
                }
            }
        }
    }
}
