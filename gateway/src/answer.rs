//! The body of every answer the gateway gives: moat's own (a JSON error, a health answer), or
//! the container's, relayed piece by piece as it arrives.
//!
//! A relayed answer also carries its header fields beside the answer's map, which then holds
//! only what is rare (a model error's status): moat's own fields and the container's, as it
//! wrote them, go out after the map's ([`BodyFields`]), or into the map for a writer that
//! wants one (HTTP/2). Inserting them into a map (a hash and an entry each) cost more than
//! writing them.
//!
//! A relayed answer owns what the request holds until its last byte: the instance's
//! admission slot (a container streaming an answer is busy), the connection to the container
//! (given back to the idle list once read whole, closed otherwise), and the request's access
//! line, written when the answer ends however it ends. Its clock is the gap between two
//! pieces: `request_timeout_ms` counts only while moat waits for the container, never while
//! a slow client has not taken the last piece (then nothing is read from the container
//! either: the client's pace is the container's). A gap over the limit, or an answer that
//! grows past `max_response_bytes`, cuts the answer: the client's connection is closed
//! without the answer's proper end, so no client mistakes a cut answer for a whole one.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http_body_util::Full;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use crate::access_log::LogSink;
use crate::admission::Slot;
use crate::context::{RequestCtx, RequestId};
use crate::fields::{HeadFields, is_lowered};
use crate::forward::{REQUEST_ID, REQUEST_ID_HEADER};
use crate::http1::BodyFields;
use crate::pick::{DEPLOYMENT, DEPLOYMENT_HEADER};
use crate::timeouts::{Alarm, Serving};
use crate::upstream::{Answer, BodyLost, Streaming};

/// The client's own request id, echoed (see [`crate::request`]).
pub const CLIENT_REQUEST_ID: &str = "x-ms-client-request-id";
pub const CLIENT_REQUEST_ID_HEADER: HeaderName = HeaderName::from_static(CLIENT_REQUEST_ID);

/// An answer's body, whoever made it.
pub struct AnswerBody {
    kind: Kind,
    /// The client connection counts as busy (no idle clock) until the answer is written.
    serving: Option<Serving>,
}

enum Kind {
    Own(Full<Bytes>),
    Relayed(Box<Relay>),
}

/// Why a relayed answer was cut short; the access line's `error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Cut {
    #[error("stream_timeout")]
    StreamTimeout,
    #[error("response_too_large")]
    TooLarge,
    #[error("upstream_lost: {0}")]
    UpstreamLost(String),
    #[error("client_closed")]
    ClientClosed,
}

/// The fields moat sets on an answer: its request id always, the client's own request id
/// when it is echoed, the deployment that answered when there is one. These names are moat's
/// alone: the container's fields of these names never reach the client, set or not (a
/// container's `x-ms-client-request-id` would pass for the client's echo).
pub struct MoatFields {
    pub request_id: RequestId,
    pub client_request_id: Option<HeaderValue>,
    pub deployment: Option<HeaderValue>,
}

impl MoatFields {
    const NAMES: [&str; 3] = [REQUEST_ID, CLIENT_REQUEST_ID, DEPLOYMENT];

    fn each(&self, mut field: impl FnMut(&[u8], &[u8])) {
        field(REQUEST_ID.as_bytes(), self.request_id.as_bytes());
        if let Some(id) = &self.client_request_id {
            field(CLIENT_REQUEST_ID.as_bytes(), id.as_bytes());
        }
        if let Some(name) = &self.deployment {
            field(DEPLOYMENT.as_bytes(), name.as_bytes());
        }
    }

    fn insert_into(self, map: &mut HeaderMap) {
        map.insert(REQUEST_ID_HEADER, self.request_id.header());
        if let Some(id) = self.client_request_id {
            map.insert(CLIENT_REQUEST_ID_HEADER, id);
        }
        if let Some(name) = self.deployment {
            map.insert(DEPLOYMENT_HEADER, name);
        }
    }
}

/// The container's answer on its way to the client.
pub struct Relay {
    /// moat's fields, once the answer has them.
    moat: Option<MoatFields>,
    /// The container's end-to-end header fields, as it wrote them, but those moat sets.
    fields: HeadFields,
    body: Streaming,
    /// Longest wait for the container's next piece.
    gap: Duration,
    /// The clock of the waits for the container's next piece; none until the first wait.
    alarm: Option<Alarm>,
    /// When the current wait must end (none between waits: each piece that comes ends one).
    deadline: Option<Instant>,
    limit: u64,
    sent: u64,
    _slot: Slot,
    /// The access line, until it is written.
    line: Option<Line>,
}

/// What the access line needs, carried until the answer ends.
struct Line {
    sink: LogSink,
    ctx: RequestCtx,
    status: u16,
}

impl AnswerBody {
    pub fn own(body: Full<Bytes>) -> AnswerBody {
        AnswerBody { kind: Kind::Own(body), serving: None }
    }

    /// Boxed where it is made: a relay is large, and moving it through the request's phases
    /// by value cost a measurable share of a small answer's instructions.
    pub fn relayed(relay: Box<Relay>) -> AnswerBody {
        AnswerBody { kind: Kind::Relayed(relay), serving: None }
    }

    /// Keeps the connection's busy mark until the answer is written.
    pub fn hold(&mut self, serving: Serving) {
        self.serving = Some(serving);
    }

    /// The relayed answer, if this is one.
    pub fn relay_mut(&mut self) -> Option<&mut Relay> {
        match &mut self.kind {
            Kind::Relayed(relay) => Some(relay),
            Kind::Own(_) => None,
        }
    }

    /// Sets moat's fields: a relayed answer carries them, and the container's of moat's names
    /// (or of any name `map` has) give way; moat's own answers have them in `map`.
    pub fn set_moat_fields(&mut self, moat: MoatFields, map: &mut HeaderMap) {
        let Some(relay) = self.relay_mut() else { return moat.insert_into(map) };
        let named = |field: &[u8], name: &str| is_lowered(field, name.as_bytes());
        relay.fields.remove_named(|field| {
            MoatFields::NAMES.iter().any(|name| named(field, name))
                || map.keys().any(|name| named(field, name.as_str()))
        });
        relay.moat = Some(moat);
    }

    /// Moves a relayed answer's fields into `map`, for a writer that writes only the map
    /// (HTTP/2).
    pub fn fields_into(&mut self, map: &mut HeaderMap) {
        if let Some(relay) = self.relay_mut() {
            if let Some(moat) = relay.moat.take() {
                moat.insert_into(map);
            }
            std::mem::take(&mut relay.fields).append_to(map);
        }
    }
}

impl BodyFields for AnswerBody {
    fn each_field(&self, mut field: impl FnMut(&[u8], &[u8])) {
        let Kind::Relayed(relay) = &self.kind else { return };
        if let Some(moat) = &relay.moat {
            moat.each(&mut field);
        }
        relay.fields.each_field(field);
    }
}

impl Relay {
    pub fn new(answer: Answer, gap: Duration, limit: u64, slot: Slot) -> Relay {
        let Answer { fields, body } = answer;
        Relay {
            moat: None,
            fields,
            body,
            gap,
            alarm: None,
            deadline: None,
            limit,
            sent: 0,
            _slot: slot,
            line: None,
        }
    }

    /// The access line is written when the answer ends, with what it carried.
    pub fn log_at_end(&mut self, sink: LogSink, ctx: RequestCtx, status: u16) {
        self.line = Some(Line { sink, ctx, status });
    }

    fn end(&mut self, cut: Option<Cut>) {
        if let Some(Line { sink, mut ctx, status }) = self.line.take() {
            if let Some(cut) = cut {
                ctx.error = Some(cut.to_string());
            }
            ctx.log(&sink, status, self.sent);
        }
    }

    fn cut(&mut self, cut: Cut) -> Poll<Option<Result<Frame<Bytes>, Cut>>> {
        self.end(Some(cut.clone()));
        Poll::Ready(Some(Err(cut)))
    }

    fn poll_relay(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Cut>>> {
        match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                self.deadline = None;
                let size = frame.data_ref().map_or(0, |d| d.len() as u64);
                if self.sent + size > self.limit {
                    return self.cut(Cut::TooLarge);
                }
                self.sent += size;
                if self.body.is_end_stream() {
                    self.end(None);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(BodyLost(e)))) => self.cut(Cut::UpstreamLost(e)),
            Poll::Ready(None) => {
                self.end(None);
                Poll::Ready(None)
            }
            Poll::Pending => {
                // A new wait starts the clock; a wait already counting keeps its deadline.
                let gap = self.gap;
                let deadline = *self.deadline.get_or_insert_with(|| Instant::now() + gap);
                let alarm = self.alarm.get_or_insert_with(|| Alarm::new(deadline));
                if alarm.poll_passed(cx, deadline) { self.cut(Cut::StreamTimeout) } else { Poll::Pending }
            }
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // hyper stops polling once the body says it has ended; anything else is a client
        // that went away before the end.
        let cut = (!self.body.is_end_stream()).then_some(Cut::ClientClosed);
        self.end(cut);
    }
}

impl Body for AnswerBody {
    type Data = Bytes;
    type Error = Cut;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Cut>>> {
        match &mut self.kind {
            Kind::Own(full) => Pin::new(full).poll_frame(cx).map_err(|never| match never {}),
            Kind::Relayed(relay) => relay.poll_relay(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Own(full) => full.is_end_stream(),
            Kind::Relayed(relay) => relay.body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Own(full) => full.size_hint(),
            Kind::Relayed(relay) => relay.body.size_hint(),
        }
    }
}
