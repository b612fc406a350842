//! The access log: one JSON line per request, rejected ones included, with the fields of
//! CONTRACT.md (`trace_id` too, null without tracing). Never a key, a token or a body.
//!
//! Every request writes a line, so the line is written by hand ([`AccessRecord::write_line`]):
//! a fixed set of fields, keys that never need escaping, and the time's text made once a
//! second. It cost a tenth of the gateway's instructions per request through serde_json
//! (BENCHMARKS.md). The serde form stays, and a test holds the two to the same JSON.

use std::cell::RefCell;
use std::io::Write;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};

use crate::context::RequestId;

/// Where access lines go; `deploy` writes them to stderr or the log file off the request path.
pub type LogSink = Arc<dyn Fn(&AccessRecord<'_>) + Send + Sync>;

/// One line, borrowing from the request. Durations are in milliseconds, to the microsecond.
#[derive(Debug, Serialize)]
pub struct AccessRecord<'a> {
    #[serde(serialize_with = "rfc3339_millis")]
    pub time: SystemTime,
    #[serde(serialize_with = "request_id")]
    pub request_id: &'a RequestId,
    pub endpoint: Option<&'a str>,
    pub deployment: Option<&'a str>,
    pub instance: Option<&'a str>,
    pub status: u16,
    #[serde(rename = "duration_ms", serialize_with = "millis")]
    pub duration: Duration,
    #[serde(rename = "upstream_ms", serialize_with = "maybe_millis")]
    pub upstream: Option<Duration>,
    #[serde(rename = "queue_ms", serialize_with = "maybe_millis")]
    pub queue: Option<Duration>,
    pub client: Option<IpAddr>,
    pub auth_mode: Option<&'a str>,
    pub auth: Option<&'a str>,
    pub policy: Option<&'a str>,
    pub error: Option<&'a str>,
    /// The W3C trace id, when tracing is on.
    pub trace_id: Option<&'a str>,
}

impl AccessRecord<'_> {
    /// Appends the record to `out` as one JSON line, newline included.
    pub fn write_line(&self, out: &mut Vec<u8>) {
        // Room for a usual line at once, rather than growing piece by piece.
        out.reserve(LINE_BYTES);
        out.extend_from_slice(b"{\"time\":\"");
        timestamp(self.time, out);
        out.extend_from_slice(b"\",\"request_id\":\"");
        // Hex digits and hyphens: nothing to escape (nor to check as text).
        out.extend_from_slice(self.request_id.as_bytes());
        out.push(b'"');
        field(out, b",\"endpoint\":", self.endpoint, string);
        field(out, b",\"deployment\":", self.deployment, string);
        field(out, b",\"instance\":", self.instance, string);
        out.extend_from_slice(b",\"status\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.status).as_bytes());
        out.extend_from_slice(b",\"duration_ms\":");
        milliseconds(out, self.duration);
        field(out, b",\"upstream_ms\":", self.upstream, milliseconds);
        field(out, b",\"queue_ms\":", self.queue, milliseconds);
        field(out, b",\"client\":", self.client, address);
        field(out, b",\"auth_mode\":", self.auth_mode, string);
        field(out, b",\"auth\":", self.auth, string);
        field(out, b",\"policy\":", self.policy, string);
        field(out, b",\"error\":", self.error, string);
        field(out, b",\"trace_id\":", self.trace_id, string);
        out.extend_from_slice(b"}\n");
    }
}

/// What a line of a proxied request takes, about.
const LINE_BYTES: usize = 400;

/// `key` (`,"name":`, written out whole so it is one copy) and the value as `write` puts it,
/// or `null`. Inlined: each key's length is then a constant and its copy a few moves
/// rather than a call to `memcpy` (fourteen a line).
#[inline(always)]
fn field<T>(out: &mut Vec<u8>, key: &[u8], value: Option<T>, write: impl FnOnce(&mut Vec<u8>, T)) {
    out.extend_from_slice(key);
    match value {
        Some(value) => write(out, value),
        None => out.extend_from_slice(b"null"),
    }
}

/// Bytes a JSON string cannot hold as they are: control characters, `"` and `\`.
const ESCAPED: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = true;
        byte += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// Whether any byte of `text` must be escaped in a JSON string. Every line scans a few
/// dozen bytes of ids and names, so eight at a time: a word has a byte below 0x20, a `"` or a
/// `\` when one of the classic zero-byte tests says so (exact as a yes or no).
fn needs_escape(text: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // Some byte of `w` is below `n` (for `n` up to 0x80); a byte with its high bit set never is.
    let below = |w: u64, n: u8| w.wrapping_sub(ONES * u64::from(n)) & !w & HIGHS != 0;
    let has = |w: u64, b: u8| below(w ^ (ONES * u64::from(b)), 1);
    let mut words = text.chunks_exact(8);
    for chunk in &mut words {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(chunk);
        let w = u64::from_ne_bytes(bytes);
        if below(w, 0x20) || has(w, b'"') || has(w, b'\\') {
            return true;
        }
    }
    words.remainder().iter().any(|b| ESCAPED[usize::from(*b)])
}

/// A JSON string: quotes, backslashes and control characters escaped, the rest as it is.
fn string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    if !needs_escape(text.as_bytes()) {
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
        return;
    }
    let mut plain = 0;
    for (at, byte) in text.bytes().enumerate() {
        let escaped: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..0x20 => b"",
            _ => continue,
        };
        out.extend_from_slice(&text.as_bytes()[plain..at]);
        if escaped.is_empty() {
            let _ = write!(out, "\\u{byte:04x}");
        } else {
            out.extend_from_slice(escaped);
        }
        plain = at + 1;
    }
    out.extend_from_slice(&text.as_bytes()[plain..]);
    out.push(b'"');
}

/// Milliseconds with three decimals: microseconds, without float formatting.
fn milliseconds(out: &mut Vec<u8>, duration: Duration) {
    // In u64 (585,000 years of microseconds): u128 division is a call, not an instruction.
    let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
    out.extend_from_slice(itoa::Buffer::new().format(micros / 1000).as_bytes());
    // As serde_json writes an f64: at least one decimal, no trailing zeros after it.
    let fraction = (micros % 1000) as u16;
    let digits = [
        b'.',
        b'0' + (fraction / 100) as u8,
        b'0' + (fraction / 10 % 10) as u8,
        b'0' + (fraction % 10) as u8,
    ];
    let zeros = digits[2..].iter().rev().take_while(|d| **d == b'0').count();
    out.extend_from_slice(&digits[..digits.len() - zeros]);
}

thread_local! {
    /// The text of the last whole second written on this thread, up to its `.`.
    static SECOND: RefCell<(u64, Vec<u8>)> = const { RefCell::new((u64::MAX, Vec::new())) };
}

/// RFC 3339 UTC with milliseconds; the part up to the second is formatted once a second.
fn timestamp(time: SystemTime, out: &mut Vec<u8>) {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (second, millis) = (since_epoch.as_secs(), since_epoch.subsec_millis());
    SECOND.with_borrow_mut(|(cached, text)| {
        if *cached != second {
            text.clear();
            let whole = UNIX_EPOCH + Duration::from_secs(second);
            let _ = write!(text, "{}", humantime::format_rfc3339_seconds(whole));
            text.pop(); // its `Z`
            *cached = second;
        }
        out.extend_from_slice(text);
    });
    let millis = millis as u16;
    out.extend_from_slice(&[
        b'.',
        b'0' + (millis / 100) as u8,
        b'0' + (millis / 10 % 10) as u8,
        b'0' + (millis % 10) as u8,
        b'Z',
    ]);
}

/// An address in quotes; IPv4, the common case, without the formatting machinery.
fn address(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            out.push(b'"');
            for (at, octet) in v4.octets().into_iter().enumerate() {
                if at > 0 {
                    out.push(b'.');
                }
                out.extend_from_slice(itoa::Buffer::new().format(octet).as_bytes());
            }
            out.push(b'"');
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "\"{v6}\"");
        }
    }
}

fn rfc3339_millis<S: Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_rfc3339_millis(*time))
}

fn request_id<S: Serializer>(id: &&RequestId, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(id.as_str())
}

fn millis<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_micros() as f64 / 1000.0)
}

fn maybe_millis<S: Serializer>(duration: &Option<Duration>, serializer: S) -> Result<S::Ok, S::Error> {
    match duration {
        Some(duration) => millis(duration, serializer),
        None => serializer.serialize_none(),
    }
}

/// A sink that drops every line, for tests that do not read the log.
pub fn discard() -> LogSink {
    Arc::new(|_| {})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(
        request_id: &'a RequestId,
        error: Option<&'static str>,
        client: Option<IpAddr>,
        upstream: Option<Duration>,
    ) -> AccessRecord<'a> {
        AccessRecord {
            time: UNIX_EPOCH + Duration::from_millis(1_795_000_123_007),
            request_id,
            endpoint: Some("my-endpoint"),
            deployment: error.is_none().then_some("blue"),
            instance: None,
            status: 200,
            duration: Duration::from_micros(1_234_560),
            upstream,
            queue: Some(Duration::from_nanos(999)),
            client,
            auth_mode: Some("key"),
            auth: Some("ok"),
            policy: None,
            error,
            trace_id: client.map(|_| "4bf92f3577b34da6a3ce929d0e0e4736"),
        }
    }

    #[test]
    fn the_hand_written_line_is_the_serde_line() {
        let id = RequestId::new();
        let cases = [
            record(&id, None, Some("10.0.0.7".parse().expect("ip")), Some(Duration::from_micros(1_000))),
            record(
                &id,
                Some("a \"quoted\" \\ line\nwith\ttabs, \u{1} and é"),
                Some("fe80::1".parse().expect("ip")),
                None,
            ),
            record(&id, Some(""), None, Some(Duration::from_micros(20))),
        ];
        for record in cases {
            let mut line = Vec::new();
            record.write_line(&mut line);
            assert_eq!(line.last(), Some(&b'\n'));
            assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1, "one line");
            let hand: serde_json::Value = serde_json::from_slice(&line).expect("valid JSON");
            let serde = serde_json::to_value(&record).expect("serde");
            assert_eq!(hand, serde, "{}", String::from_utf8_lossy(&line));
            assert_eq!(hand["request_id"], id.as_str());
        }
    }

    #[test]
    fn the_word_scan_finds_every_byte_to_escape_wherever_it_is() {
        for len in 0..20 {
            for at in 0..len {
                for byte in 0..=255u8 {
                    let mut text = vec![b'a'; len];
                    text[at] = byte;
                    assert_eq!(needs_escape(&text), ESCAPED[usize::from(byte)], "{byte:#x} at {at} of {len}");
                    // Among bytes next to the ones looked for, and with their high bit set.
                    let near = [0x20, 0x21, 0x23, 0x5b, 0x5d, 0x7f, 0xa2, 0xdc, 0x9f, 0xff];
                    for (i, other) in text.iter_mut().enumerate().filter(|(i, _)| *i != at) {
                        *other = near[i % near.len()];
                    }
                    assert_eq!(
                        needs_escape(&text),
                        ESCAPED[usize::from(byte)],
                        "{byte:#x} at {at} among others"
                    );
                }
            }
        }
    }

    #[test]
    fn milliseconds_are_written_as_serde_json_writes_them() {
        let micros = [0, 1, 10, 100, 999, 1_000, 1_001, 1_010, 1_234_560, 20_000, 987_654_321, u64::MAX];
        for micros in micros {
            let duration = Duration::from_micros(micros);
            let mut hand = Vec::new();
            milliseconds(&mut hand, duration);
            let serde = serde_json::to_string(&(micros as f64 / 1000.0)).expect("f64");
            let hand = String::from_utf8_lossy(&hand);
            if micros < 1 << 53 {
                assert_eq!(hand, serde, "{micros} µs");
            }
            let parsed: f64 = hand.parse().expect("a number");
            assert!((parsed - micros as f64 / 1000.0).abs() <= parsed * 1e-15, "{micros} µs: {hand}");
        }
        let mut most = Vec::new();
        milliseconds(&mut most, Duration::MAX);
        assert_eq!(String::from_utf8_lossy(&most), "18446744073709551.615");
    }

    #[test]
    fn times_keep_their_milliseconds_across_seconds() {
        let mut out = Vec::new();
        for ms in [1_795_000_123_007, 1_795_000_123_999, 1_795_000_124_000] {
            timestamp(UNIX_EPOCH + Duration::from_millis(ms), &mut out);
            out.push(b' ');
        }
        assert_eq!(
            String::from_utf8_lossy(&out),
            "2026-11-18T11:08:43.007Z 2026-11-18T11:08:43.999Z 2026-11-18T11:08:44.000Z "
        );
    }
}
