//! The call to an instance, up to the head of its answer: the wait for the head runs under
//! the deployment's `request_timeout_ms`; when it passes, the upstream connection is dropped
//! so the container is not left working for nobody. The body then streams (see
//! [`crate::answer`]), unless its announced length is over `max_response_bytes`. A connect
//! failure (nothing was sent) is retried once on another instance; any other failure is the
//! container's loss.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use hyper::body::Body;

use crate::admission::Slot;
use crate::context::RequestId;
use crate::fields::{Fields, is_lowered, named};
use crate::reject::Reject;
use crate::table::{DeploymentRoute, Upstream};
use crate::trace::Trace;
use crate::upstream::{self, Answer, Failure};
use crate::wire::{Outgoing, RequestHead, hop_by_hop, tokens};

/// The header the request id travels in, to the container and back to the client.
pub const REQUEST_ID: &str = "x-request-id";
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static(REQUEST_ID);

/// The client's fields that moat replaces (the container's address as `Host`, the body's
/// length, its own request id) or keeps (the credential, `Expect`: the body was read already).
fn moat_sets(name: &[u8]) -> bool {
    // By length first, as `hop_by_hop`: checked on every field of every request.
    let is = |known: &HeaderName| named(name, known);
    match name.len() {
        4 => is(&header::HOST),
        6 => is(&header::EXPECT),
        12 => is(&REQUEST_ID_HEADER),
        13 => is(&header::AUTHORIZATION),
        14 => is(&header::CONTENT_LENGTH),
        _ => false,
    }
}

/// The trace context the client sent, replaced by moat's when the request has a span.
fn trace_context(name: &[u8]) -> bool {
    is_lowered(name, b"traceparent") || is_lowered(name, b"tracestate")
}

/// The names a request's `Connection` header lists (usually none: no allocation then).
fn connection_listed(fields: &impl Fields) -> Vec<&str> {
    tokens(fields.all(&header::CONNECTION)).collect()
}

/// What a call to the deployment learnt: the instance that took it last, how long it took
/// the answer's head to come (when it did; after a failed connect, counting that attempt
/// too), and the answer.
pub struct Forwarded {
    pub instance: Arc<str>,
    pub upstream: Option<Duration>,
    pub answer: Result<Response<Answer>, Reject>,
}

/// Sends the request to an instance of `deployment` (the one `slot` holds, or another if it
/// cannot be reached) and returns the container's answer as soon as its head has come, with a
/// non-2xx answer already turned into moat's 424.
pub async fn forward<F: Fields>(
    deployment: &DeploymentRoute,
    slot: &mut Slot,
    call: Call<'_, F>,
    id: &RequestId,
) -> Forwarded {
    // One reading of the clock for the deadline, the idle connections and the upstream time.
    let now = tokio::time::Instant::now();
    let (deadline, started) = (now + deployment.request_timeout, now.into_std());
    let mut first = true;
    loop {
        let upstream = slot.upstream();
        let instance = upstream.instance.clone();
        let ended = move |answer| Forwarded { instance, upstream: None, answer };
        let request = upstream_request(upstream, &call, id);
        let (mut parts, body) = match upstream::call(upstream.addr, &request, started, deadline).await {
            Ok(response) => response.into_parts(),
            Err(Failure::TimedOut) => {
                return ended(Err(Reject::Timeout(deployment.request_timeout.as_millis())));
            }
            Err(Failure::Connect(e)) if first => {
                // Nothing reached the container; another instance may take it.
                tracing::debug!(instance = %upstream.instance, error = %e, "connect failed, retrying");
                first = false;
                if slot.switch() {
                    continue;
                }
                return ended(Err(Reject::InstanceLost(e)));
            }
            Err(Failure::Connect(e) | Failure::Lost(e)) => return ended(Err(Reject::InstanceLost(e))),
        };
        let upstream_time = body.body.arrived().saturating_duration_since(started);
        let announced = body.body.size_hint().exact();
        if announced.is_some_and(|n| n > call.max_response_bytes) {
            let answer = Err(Reject::ResponseTooLarge(call.max_response_bytes));
            return Forwarded { upstream: Some(upstream_time), ..ended(answer) };
        }
        if !parts.status.is_success() {
            model_error(&mut parts.headers, parts.status);
            parts.status = StatusCode::FAILED_DEPENDENCY;
        }
        let answer = Ok(Response::from_parts(parts, body));
        return Forwarded { upstream: Some(upstream_time), ..ended(answer) };
    }
}

/// A container's non-2xx answer becomes 424; its status and reason travel in headers.
fn model_error(headers: &mut HeaderMap, status: StatusCode) {
    headers.insert("ms-azureml-model-error-statuscode", HeaderValue::from(status.as_u16()));
    let reason = status.canonical_reason().unwrap_or("Unknown");
    headers.insert("ms-azureml-model-error-reason", HeaderValue::from_static(reason));
}

/// What goes to the container: the client's request, minus what is moat's.
pub struct Call<'a, F> {
    pub method: &'a Method,
    pub path: &'a str,
    pub fields: &'a F,
    /// Read whole already, so a retry or a mirror copy can send it again.
    pub body: Bytes,
    /// An answer announcing more is refused (502); one that grows past it is cut.
    pub max_response_bytes: u64,
    /// The request's span: the container's `traceparent` names it.
    pub trace: Option<&'a Trace>,
}

/// The request for the instance, as its bytes on the wire: the path alone as its target
/// (origin form, as HTTP/1.1 asks of a request to a server that is not a proxy), the client's
/// headers but the credential and this hop's own, the container's address as `Host`.
fn upstream_request<F: Fields>(upstream: &Upstream, call: &Call<'_, F>, request_id: &RequestId) -> Outgoing {
    let mut head = RequestHead::new(call.method, call.path);
    let listed = connection_listed(call.fields);
    for (name, value) in call.fields.each() {
        // The body was read whole: the container gets it at once, with its length.
        let dropped = hop_by_hop(name)
            || listed.iter().any(|listed| name.eq_ignore_ascii_case(listed.as_bytes()))
            || moat_sets(name)
            || (call.trace.is_some() && trace_context(name));
        if !dropped {
            head.field(name, value);
        }
    }
    head.header(&header::HOST, &upstream.host);
    head.field(REQUEST_ID.as_bytes(), request_id.as_bytes());
    if let Some(trace) = call.trace {
        let mut context = HeaderMap::with_capacity(2);
        trace.inject(&mut context);
        for (name, value) in &context {
            head.header(name, value);
        }
    }
    head.finish(call.body.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fields_moat_sets_itself_are_known_in_any_case() {
        for name in ["authorization", "Authorization", "HOST", "content-length", "Expect", "X-Request-ID"] {
            assert!(moat_sets(name.as_bytes()), "{name}");
        }
        for name in ["authorizations", "hosts", "x-request", "content-type", "x-ms-client-request-id", ""] {
            assert!(!moat_sets(name.as_bytes()), "{name}");
        }
        for name in ["traceparent", "TraceState"] {
            assert!(trace_context(name.as_bytes()), "{name}");
        }
        assert!(!trace_context(b"traceparents"));
    }

    #[test]
    fn a_model_error_carries_its_status_and_reason() {
        let mut h = HeaderMap::new();
        model_error(&mut h, StatusCode::BAD_REQUEST);
        assert_eq!(h["ms-azureml-model-error-statuscode"], "400");
        assert_eq!(h["ms-azureml-model-error-reason"], "Bad Request");
    }
}
