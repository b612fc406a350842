//! The explicit proxy on the deployment's gateway address (HTTP_PROXY/HTTPS_PROXY point here):
//! `CONNECT host:port` and absolute-form `GET http://host/...`, both judged by the same
//! allowlist as everything else. An allowed target is dialled at its endpoint's listed
//! address; the name in the request is never resolved. A tunnel to a TLS port opens with a
//! ClientHello naming the endpoint, as a forwarder's connection does; a forwarded request
//! carries the target's own Host. Each connection takes one of the deployment's places; its
//! request head must come within the handshake limit and it ends when idle.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::acl::{self, Reason, Verdict};
use crate::decision_log::{Kind, Who};
use crate::forward::CONNECT_TIMEOUT;
use crate::hello;
use crate::relay::{self, Activity, Tracked, within_idle};
use crate::scope::{Admitted, Scope};

type Body = BoxBody<Bytes, hyper::Error>;

pub async fn serve(listener: TcpListener, scope: Arc<Scope>) {
    let at = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    loop {
        let (stream, from) = crate::sockets::accept(&listener).await;
        let Some(admitted) = scope.admit(from, Kind::Connect, &at) else { continue };
        let scope = scope.clone();
        tokio::spawn(async move {
            let activity = Arc::new(Activity::new());
            let idle = scope.limits.idle;
            let handshake = scope.limits.handshake;
            // A tunnel outlives the request that made it: it holds the place too.
            let admitted = Arc::new(admitted);
            let service = {
                let admitted = admitted.clone();
                service_fn(move |req| {
                    let (scope, admitted) = (scope.clone(), admitted.clone());
                    async move { Ok::<_, Infallible>(handle(req, from, scope, admitted).await) }
                })
            };
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(handshake)
                .serve_connection(TokioIo::new(Tracked::new(stream, activity.clone())), service)
                .with_upgrades();
            let _ = within_idle(&activity, idle, connection).await;
        });
    }
}

fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let mut response =
        Response::new(Full::new(Bytes::from(format!("{text}\n"))).map_err(|never| match never {}).boxed());
    *response.status_mut() = status;
    response
}

/// The host and port a proxy request names (`CONNECT host:port`, or `GET http://host/...`).
pub fn destination(method: &Method, uri: &Uri) -> Option<(String, u16, Kind)> {
    if method == Method::CONNECT {
        let authority = uri.authority()?;
        return Some((authority.host().to_string(), authority.port_u16()?, Kind::Connect));
    }
    if uri.scheme_str() != Some("http") {
        return None;
    }
    Some((uri.host()?.to_string(), uri.port_u16().unwrap_or(80), Kind::Http))
}

async fn handle(
    req: Request<Incoming>,
    from: SocketAddr,
    scope: Arc<Scope>,
    admitted: Arc<Admitted>,
) -> Response<Body> {
    let who = scope.who(from.ip());
    let Some((host, port, kind)) = destination(req.method(), req.uri()) else {
        return plain(
            StatusCode::BAD_REQUEST,
            "send CONNECT host:port, or a request with an absolute http:// URI",
        );
    };
    let target = format!("{host}:{port}");
    let verdict = match acl::judge(&scope.endpoints, &host, port) {
        Verdict::Allow { endpoint, dial } => scope.dialable(dial).map(|()| (endpoint, dial)),
        Verdict::Deny(reason) => Err(reason),
    };
    let (endpoint, dial) = match verdict {
        Ok(allowed) => allowed,
        Err(reason) => {
            scope.record(&who, kind, &target, reason, (0, 0));
            return plain(
                StatusCode::FORBIDDEN,
                &format!("{target} is not an allowed private endpoint ({})", reason.as_str()),
            );
        }
    };
    let upstream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(dial)).await {
        Ok(Ok(stream)) => stream,
        _ => {
            scope.record(&who, kind, &target, Reason::Allowlisted, (0, 0));
            return plain(StatusCode::BAD_GATEWAY, &format!("{target} did not answer"));
        }
    };
    if kind == Kind::Connect {
        tokio::spawn(async move {
            let Ok(upgraded) = hyper::upgrade::on(req).await else { return };
            tunnel(TokioIo::new(upgraded), upstream, &scope, &who, endpoint, port, &target).await;
            drop(admitted);
        });
        return plain(StatusCode::OK, "");
    }
    let answered = tokio::time::timeout(scope.limits.idle, forward(req, &host, port, upstream)).await;
    scope.record(&who, kind, &target, Reason::Allowlisted, (0, 0));
    match answered {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => plain(StatusCode::BAD_GATEWAY, &format!("{target}: {e}")),
        Err(_) => plain(StatusCode::GATEWAY_TIMEOUT, &format!("{target} did not answer in time")),
    }
}

/// A CONNECT tunnel, once the client has its 200: to a TLS port only after a ClientHello that
/// names the endpoint.
async fn tunnel<C>(
    mut client: C,
    mut upstream: TcpStream,
    scope: &Scope,
    who: &Who,
    endpoint: usize,
    port: u16,
    target: &str,
) where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let Some(listed) = scope.endpoints.get(endpoint) else { return };
    let mut opened = 0;
    if listed.is_tls(port) {
        match hello::read(&mut client, listed, scope.limits.handshake).await {
            Ok(opening) => {
                if upstream.write_all(&opening.bytes).await.is_err() {
                    return scope.record(who, Kind::Connect, target, Reason::Allowlisted, (0, 0));
                }
                opened = opening.bytes.len() as u64;
            }
            Err(refused) => {
                let target = refused.name.map_or_else(|| target.to_string(), |name| format!("{name}:{port}"));
                return scope.record(who, Kind::Connect, &target, refused.reason, (0, 0));
            }
        }
    }
    let (out, back) = relay::relay(&mut client, &mut upstream, scope.limits.idle).await;
    scope.record(who, Kind::Connect, target, Reason::Allowlisted, (out + opened, back));
}

/// Sends an absolute-form request on to the endpoint in origin form, with the target's own
/// Host: another one would ask a shared front end for a host the allowlist did not judge.
async fn forward(
    req: Request<Incoming>,
    host: &str,
    port: u16,
    upstream: TcpStream,
) -> Result<Response<Body>, hyper::Error> {
    let (mut parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let authority = if port == 80 { host.to_string() } else { format!("{host}:{port}") };
    match authority.parse() {
        Ok(value) => parts.headers.insert(http::header::HOST, value),
        Err(_) => parts.headers.remove(http::header::HOST),
    };
    parts.headers.remove("proxy-connection");
    parts.headers.remove("proxy-authorization");
    parts.uri = path.parse::<Uri>().unwrap_or_else(|_| Uri::from_static("/"));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(upstream)).await?;
    tokio::spawn(connection);
    let response = sender.send_request(Request::from_parts(parts, body)).await?;
    Ok(response.map(|b| b.boxed()))
}
