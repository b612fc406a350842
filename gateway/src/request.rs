//! The life of one scoring request, phase by phase:
//!
//! 1. target: which endpoint and operation the URL names;
//! 2. credential: the bearer key against the endpoint's keys;
//! 3. route: the deployment, by header or traffic weight (and whether to mirror a copy);
//! 4. body: read whole, within `max_body_bytes`, its deadline and the node's body budget; a
//!    mirror copy leaves here;
//! 5. admit: a slot on an instance, or a wait in the queue;
//! 6. forward: an instance of the deployment sends the answer's head within
//!    `request_timeout_ms`;
//! 7. respond: moat's headers on whatever answer there is; the container's body streams on
//!    to the client ([`crate::answer`]), holding the slot until its last byte;
//! 8. log: exactly once, rejects included, with its metrics: at once for moat's own answers,
//!    when a relayed answer ends (or is cut) for the container's.
//!
//! A phase that ends the request returns a [`Reject`]; only [`handle`] turns it into a response.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue};
use http::{Request, Response};
use hyper::body::Body;

use crate::admission::{Refusal, Slot};
use crate::answer::{AnswerBody, CLIENT_REQUEST_ID_HEADER, MoatFields, Relay};
use crate::auth;
use crate::context::RequestCtx;
use crate::fields::Fields;
use crate::forward::{self, Call, Forwarded};
use crate::ingress::Mode;
use crate::ingress::origin::{self, Connection, Origin};
use crate::ingress::policy::{self, Decision};
use crate::intake;
use crate::pick;
use crate::reject::Reject;
use crate::shared::Gateway;
use crate::table::EndpointRoute;
use crate::target::{self, Operation};
use crate::{metrics, mirror};

/// `req`'s header fields are `fields` (its own map may be empty: see [`crate::fields`]).
pub async fn handle<B, F>(gw: &Gateway, req: Request<B>, fields: F, conn: &Connection) -> Response<AnswerBody>
where
    B: Body<Data = Bytes> + Send + Unpin,
    B::Error: std::fmt::Display,
    F: Fields + Sync,
{
    // A balancer's probe: no policy, no credential, no access line.
    if let Some(answer) = gw.health.answer(req.method(), req.uri().path()) {
        return answer.map(AnswerBody::own);
    }
    let fields = &fields;
    let origin = origin::origin(conn, fields, &gw.config.ingress);
    let mut ctx = RequestCtx::new(origin.client);
    ctx.trace = gw.tracing.as_ref().map(|tracing| tracing.begin(fields));
    let client_request_id = client_request_id(fields);
    let (mut head, mut body) = match life(gw, req, fields, &origin, &mut ctx).await {
        Ok(response) => {
            let (head, relay) = response.into_parts();
            (head, AnswerBody::relayed(relay))
        }
        Err(reject) => {
            ctx.error = Some(reject.log_text());
            let (head, own) = reject.into_response(ctx.request_id.as_str()).into_parts();
            (head, AnswerBody::own(own))
        }
    };
    respond(&mut head.headers, &mut body, &ctx, client_request_id);
    let status = head.status.as_u16();
    match body.relay_mut() {
        Some(relay) => relay.log_at_end(gw.log.clone(), ctx, status),
        None => ctx.log(&gw.log, status, body.size_hint().exact().unwrap_or(0)),
    }
    Response::from_parts(head, body)
}

async fn life<B, F>(
    gw: &Gateway,
    req: Request<B>,
    fields: &F,
    origin: &Origin,
    ctx: &mut RequestCtx,
) -> Result<Response<Box<Relay>>, Reject>
where
    B: Body<Data = Bytes> + Send + Unpin,
    B::Error: std::fmt::Display,
    F: Fields + Sync,
{
    // One table for the whole request: a swap mid-request does not change its route.
    let table = gw.routes.load();
    let target = target::resolve(&req, fields, gw.config.domain.as_deref())?;
    let endpoint = table
        .endpoints
        .get(&target.endpoint)
        .ok_or_else(|| Reject::UnknownEndpoint(target.endpoint.clone()))?;
    ctx.endpoint = Some(endpoint.name.clone());

    access_policy(gw, endpoint, &table.moat_networks, origin, ctx)?;

    ctx.auth_mode = Some(endpoint.credentials.mode());
    let (verdict, allowed) = auth::check(&endpoint.credentials, gw.aad.as_deref(), fields).await;
    ctx.auth = Some(verdict);
    allowed?;

    let deployment = pick::deployment(endpoint, fields)?;
    ctx.deployment = Some(deployment.clone());
    // Only scoring is mirrored, never a read of the OpenAPI document.
    let mirror = pick::mirror(endpoint, fields).filter(|_| target.operation == Operation::Score);

    let (parts, body) = req.into_parts();
    let limits =
        intake::Limits { max_bytes: gw.config.max_body_bytes, deadline: gw.config.header_read_timeout };
    let body = intake::read(body, limits, &gw.body_budget).await?;
    ctx.bytes_in = body.len() as u64;

    let path = match target.operation {
        Operation::Score => &deployment.scoring_path,
        Operation::Swagger => &deployment.swagger_path,
    };
    if let Some(mirror_to) = mirror {
        let copy = mirror::Copy {
            endpoint: endpoint.name.to_string(),
            method: parts.method.clone(),
            path: mirror_to.scoring_path.clone(),
            headers: fields.to_map(),
            body: body.clone(),
            request_id: ctx.request_id.clone(),
            max_response_bytes: gw.config.max_response_bytes,
        };
        mirror::send(&gw.mirror_budget, mirror_to, copy);
    }

    let admitted = deployment.admission.admit().await;
    ctx.queue = Some(admitted.as_ref().map_or_else(Refusal::waited, Slot::waited));
    let mut slot = admitted.map_err(|refusal| {
        let name = deployment.name.to_string();
        match refusal {
            Refusal::NoInstance => Reject::NoReadyInstance(name),
            Refusal::Overflow => Reject::TooManyRequests(name),
            Refusal::QueueTimeout(waited) => Reject::QueueTimeout(name, waited.as_millis()),
        }
    })?;
    let max_response_bytes = gw.config.max_response_bytes;
    let call =
        Call { method: &parts.method, path, fields, body, max_response_bytes, trace: ctx.trace.as_ref() };
    let Forwarded { instance, upstream, answer } =
        forward::forward(&deployment, &mut slot, call, &ctx.request_id).await;
    (ctx.instance, ctx.upstream) = (Some(instance), upstream);
    let gap = deployment.request_timeout;
    Ok(answer?.map(|answer| Box::new(Relay::new(answer, gap, max_response_bytes, slot))))
}

/// A request head the HTTP/1.1 codec refused (400 malformed, 414 a request line too long,
/// 431 a header section over the limit, 501 a body coding moat does not take): it gets its
/// access line and its metric all the same, with the reason as the error.
pub fn refused_head(gw: &Gateway, conn: &Connection, status: u16, reason: &str) {
    let mut ctx = RequestCtx::new(origin::origin(conn, &HeaderMap::new(), &gw.config.ingress).client);
    ctx.error = Some(reason.to_string());
    ctx.log(&gw.log, status, 0);
}

/// The ingress policy, before the credential is even looked at. In report mode a refusal
/// is only counted and logged.
fn access_policy(
    gw: &Gateway,
    endpoint: &EndpointRoute,
    moat_networks: &[ipnet::IpNet],
    origin: &Origin,
    ctx: &mut RequestCtx,
) -> Result<(), Reject> {
    let mode = gw.config.ingress.mode;
    match (policy::decide(endpoint.public_access, origin, &gw.config.ingress, moat_networks), mode) {
        (Decision::Allow, _) => {
            ctx.policy = Some("allow");
            Ok(())
        }
        (Decision::Deny(reason), Mode::Report) => {
            ctx.policy = Some("would_deny");
            metrics::ingress_denied(&endpoint.name, reason.as_str(), mode.as_str());
            Ok(())
        }
        (Decision::Deny(reason), Mode::Enforce) => {
            ctx.policy = Some("deny");
            metrics::ingress_denied(&endpoint.name, reason.as_str(), mode.as_str());
            Err(Reject::PublicAccessDisabled(endpoint.name.to_string()))
        }
    }
}

/// `x-ms-client-request-id` is echoed only when short and plain.
fn client_request_id(headers: &impl Fields) -> Option<HeaderValue> {
    let bytes = headers.first(&CLIENT_REQUEST_ID_HEADER)?;
    let clean = !bytes.is_empty()
        && bytes.len() <= 40
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_');
    if !clean {
        return None;
    }
    HeaderValue::from_bytes(bytes).ok()
}

/// moat's own fields on the answer; the container's of the same names give way.
fn respond(
    headers: &mut HeaderMap,
    body: &mut AnswerBody,
    ctx: &RequestCtx,
    client_request_id: Option<HeaderValue>,
) {
    let moat = MoatFields {
        // Always the server's own, whatever the client or the container said.
        request_id: ctx.request_id.clone(),
        client_request_id,
        deployment: ctx.deployment.as_ref().and_then(|d| d.name_header.clone()),
    };
    body.set_moat_fields(moat, headers);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_plain_client_request_ids_are_echoed() {
        for (value, echoed) in [
            ("abc-DEF_123", true),
            (&"a".repeat(40), true),
            (&"a".repeat(41), false),
            ("has space", false),
            ("semi;colon", false),
        ] {
            let mut h = HeaderMap::new();
            h.insert(CLIENT_REQUEST_ID_HEADER, HeaderValue::from_str(value).expect("header"));
            assert_eq!(client_request_id(&h).is_some(), echoed, "{value}");
        }
    }
}
