//! What one request has learnt so far, phase by phase; the log phase reads it. Only
//! [`crate::request`] writes it: the phases return what they learn.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::HeaderValue;

use crate::access_log::{AccessRecord, LogSink};
use crate::auth::Verdict;
use crate::metrics;
use crate::table::DeploymentRoute;
use crate::trace::{Outcome, Trace};

#[derive(Debug)]
pub struct RequestCtx {
    pub request_id: RequestId,
    pub started: Instant,
    pub client: Option<IpAddr>,
    pub policy: Option<&'static str>,
    pub endpoint: Option<Arc<str>>,
    pub deployment: Option<Arc<DeploymentRoute>>,
    pub instance: Option<Arc<str>>,
    pub auth_mode: Option<&'static str>,
    pub auth: Option<Verdict>,
    pub upstream: Option<Duration>,
    pub queue: Option<Duration>,
    pub error: Option<String>,
    /// The request body's bytes, once read.
    pub bytes_in: u64,
    /// The request's server span, when tracing is on.
    pub trace: Option<Trace>,
}

impl RequestCtx {
    pub fn new(client: Option<IpAddr>) -> Self {
        RequestCtx {
            request_id: RequestId::new(),
            started: Instant::now(),
            client,
            policy: None,
            endpoint: None,
            deployment: None,
            instance: None,
            auth_mode: None,
            auth: None,
            upstream: None,
            queue: None,
            error: None,
            bytes_in: 0,
            trace: None,
        }
    }

    pub fn deployment_name(&self) -> Option<&str> {
        self.deployment.as_deref().map(|d| &*d.name)
    }

    /// The log phase: the access line and the request's metrics, once the answer has ended
    /// (`bytes_out` of its body sent).
    pub fn log(&self, sink: &LogSink, status: u16, bytes_out: u64) {
        let duration = self.started.elapsed();
        let (endpoint, deployment) =
            (self.endpoint.as_deref().unwrap_or(""), self.deployment_name().unwrap_or(""));
        let finished = metrics::Finished {
            code: status,
            duration,
            upstream: self.upstream,
            bytes_in: self.bytes_in,
            bytes_out,
        };
        metrics::request(endpoint, deployment, finished);
        if let Some(trace) = &self.trace {
            trace.end(Outcome {
                endpoint: self.endpoint.as_deref(),
                deployment: self.deployment_name(),
                instance: self.instance.as_deref(),
                status,
                error: self.error.as_deref(),
            });
        }
        sink(&AccessRecord {
            time: SystemTime::now(),
            request_id: &self.request_id,
            endpoint: self.endpoint.as_deref(),
            deployment: self.deployment_name(),
            instance: self.instance.as_deref(),
            status,
            duration,
            upstream: self.upstream,
            queue: self.queue,
            client: self.client,
            auth_mode: self.auth_mode,
            auth: self.auth.map(Verdict::as_str),
            policy: self.policy,
            error: self.error.as_deref(),
            trace_id: self.trace.as_ref().map(Trace::trace_id),
        });
    }
}

/// A request's id (a random UUID) as its 36 bytes of text: it goes to the container and back
/// to the client as `x-request-id`, and into the log and error bodies. Kept inline rather than
/// as a header value: a shared header value cost an allocation and reference counts on each
/// request's path, and only the client's copy needs one.
#[derive(Debug, Clone)]
pub struct RequestId([u8; ID_LENGTH]);

/// A hyphenated UUID's length: 8-4-4-4-12 hex digits.
const ID_LENGTH: usize = 36;

impl RequestId {
    pub fn new() -> RequestId {
        RequestId::random(fastrand::u128(..).to_le_bytes())
    }

    /// The version 4 (random) UUID of these random bytes, as `uuid` makes it, in lower-case
    /// hex digits: four bytes at a time (`uuid`'s formatting, a byte at a time, was most of an
    /// id's cost, and every request makes one).
    fn random(mut bytes: [u8; 16]) -> RequestId {
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        let mut digits = [0u8; 32];
        for (four, out) in bytes.chunks_exact(4).zip(digits.chunks_exact_mut(8)) {
            let mut word = [0u8; 4];
            word.copy_from_slice(four);
            out.copy_from_slice(&hex_digits(u32::from_le_bytes(word)).to_le_bytes());
        }
        let mut text = [b'-'; ID_LENGTH];
        text[..8].copy_from_slice(&digits[..8]);
        text[9..13].copy_from_slice(&digits[8..12]);
        text[14..18].copy_from_slice(&digits[12..16]);
        text[19..23].copy_from_slice(&digits[16..20]);
        text[24..].copy_from_slice(&digits[20..]);
        RequestId(text)
    }

    pub fn as_str(&self) -> &str {
        // Hex digits and hyphens: always text.
        std::str::from_utf8(&self.0).unwrap_or("-")
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn header(&self) -> HeaderValue {
        HeaderValue::from_bytes(&self.0).unwrap_or(HeaderValue::from_static("-"))
    }
}

/// The four bytes of `word` (its low byte first) as eight lower-case hex digits, in the same
/// order, the high digit of each byte first.
fn hex_digits(word: u32) -> u64 {
    const LOW_NIBBLES: u64 = 0x000f_000f_000f_000f;
    const BYTES: u64 = u64::from_ne_bytes([1; 8]);
    // Each byte alone in a 16-bit lane, then its high digit in the lane's low byte.
    let mut lanes = u64::from(word);
    lanes = (lanes | (lanes << 16)) & 0x0000_ffff_0000_ffff;
    lanes = (lanes | (lanes << 8)) & 0x00ff_00ff_00ff_00ff;
    let nibbles = ((lanes >> 4) & LOW_NIBBLES) | ((lanes & LOW_NIBBLES) << 8);
    // '0' + n, and 'a' - '0' - 10 more where n is over 9 (n + 6 carries into bit 4 then).
    let letters = ((nibbles + 6 * BYTES) >> 4) & BYTES;
    nibbles + u64::from(b'0') * BYTES + letters * u64::from(b'a' - b'0' - 10)
}

impl Default for RequestId {
    fn default() -> Self {
        RequestId::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_id_is_a_fresh_uuid_as_text_and_as_a_header() {
        let (a, b) = (RequestId::new(), RequestId::new());
        assert_ne!(a.as_str(), b.as_str());
        let parsed = uuid::Uuid::parse_str(a.as_str()).expect("a uuid");
        assert_eq!(parsed.hyphenated().to_string(), a.as_str(), "lower case, hyphenated");
        assert_eq!((a.header().as_bytes(), a.as_bytes()), (a.as_str().as_bytes(), a.as_str().as_bytes()));
    }

    #[test]
    fn an_id_is_the_uuid_that_uuid_makes_of_the_same_random_bytes() {
        // Every value of every byte, in every place, and random ones.
        let patterned = (0..=255u8).flat_map(|b| (0..16).map(move |at| (b, at))).map(|(b, at)| {
            let mut bytes = [0x5a; 16];
            bytes[at] = b;
            bytes
        });
        let random = (0..10_000).map(|_| fastrand::u128(..).to_le_bytes());
        for bytes in patterned.chain(random).chain([[0; 16], [0xff; 16]]) {
            let expected = uuid::Builder::from_random_bytes(bytes).into_uuid().hyphenated().to_string();
            assert_eq!(RequestId::random(bytes).as_str(), expected, "{bytes:02x?}");
        }
    }
}
