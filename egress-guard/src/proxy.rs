//! The explicit proxy on the deployment's gateway address (HTTP_PROXY/HTTPS_PROXY point here):
//! `CONNECT host:port` and absolute-form `GET http://host/...`, both judged by the same
//! allowlist as everything else. An allowed target is dialled at its endpoint's listed
//! address; the name in the request is never resolved.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

use crate::acl::{self, Reason, Verdict};
use crate::decision_log::{Kind, record};
use crate::forward;
use crate::scope::Scope;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

type Body = BoxBody<Bytes, hyper::Error>;

pub async fn serve(listener: TcpListener, scope: Arc<Scope>) {
    loop {
        let Ok((stream, from)) = listener.accept().await else { continue };
        let scope = scope.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let scope = scope.clone();
                async move { Ok::<_, Infallible>(handle(req, from, scope).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let mut response =
        Response::new(Full::new(Bytes::from(format!("{text}\n"))).map_err(|never| match never {}).boxed());
    *response.status_mut() = status;
    response
}

/// The host and port a proxy request names.
fn destination(req: &Request<Incoming>) -> Option<(String, u16, Kind)> {
    let uri = req.uri();
    if req.method() == Method::CONNECT {
        let authority = uri.authority()?;
        return Some((authority.host().to_string(), authority.port_u16()?, Kind::Connect));
    }
    if uri.scheme_str() != Some("http") {
        return None;
    }
    Some((uri.host()?.to_string(), uri.port_u16().unwrap_or(80), Kind::Http))
}

async fn handle(req: Request<Incoming>, from: SocketAddr, scope: Arc<Scope>) -> Response<Body> {
    let who = scope.who(from.ip());
    let Some((host, port, kind)) = destination(&req) else {
        return plain(
            StatusCode::BAD_REQUEST,
            "send CONNECT host:port, or a request with an absolute http:// URI",
        );
    };
    let target = format!("{host}:{port}");
    let verdict = match acl::judge(&scope.endpoints, &host, port) {
        Verdict::Allow { dial, .. } => scope.dialable(dial).map(|()| dial),
        Verdict::Deny(reason) => Err(reason),
    };
    let dial = match verdict {
        Ok(dial) => dial,
        Err(reason) => {
            record(&scope.sink, &who, kind, &target, reason, (0, 0), true);
            return plain(
                StatusCode::FORBIDDEN,
                &format!("{target} is not an allowed private endpoint ({})", reason.as_str()),
            );
        }
    };
    let upstream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(dial)).await {
        Ok(Ok(stream)) => stream,
        _ => {
            record(&scope.sink, &who, kind, &target, Reason::Allowlisted, (0, 0), true);
            return plain(StatusCode::BAD_GATEWAY, &format!("{target} did not answer"));
        }
    };
    if kind == Kind::Connect {
        tokio::spawn(async move {
            let Ok(upgraded) = hyper::upgrade::on(req).await else { return };
            let mut upgraded = TokioIo::new(upgraded);
            let mut upstream = upstream;
            let bytes = forward::relay(&mut upgraded, &mut upstream).await;
            record(&scope.sink, &who, kind, &target, Reason::Allowlisted, bytes, true);
        });
        return plain(StatusCode::OK, "");
    }
    match forward(req, upstream).await {
        Ok(response) => {
            record(&scope.sink, &who, kind, &target, Reason::Allowlisted, (0, 0), true);
            response
        }
        Err(e) => {
            record(&scope.sink, &who, kind, &target, Reason::Allowlisted, (0, 0), true);
            plain(StatusCode::BAD_GATEWAY, &format!("{target}: {e}"))
        }
    }
}

/// Sends an absolute-form request on to the endpoint in origin form, Host kept.
async fn forward(req: Request<Incoming>, upstream: TcpStream) -> Result<Response<Body>, hyper::Error> {
    let (mut parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    if let Some(host) = parts.uri.authority().map(|a| a.to_string())
        && !parts.headers.contains_key(http::header::HOST)
        && let Ok(value) = host.parse()
    {
        parts.headers.insert(http::header::HOST, value);
    }
    parts.headers.remove("proxy-connection");
    parts.headers.remove("proxy-authorization");
    parts.uri = path.parse::<Uri>().unwrap_or_else(|_| Uri::from_static("/"));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(upstream)).await?;
    tokio::spawn(connection);
    let response = sender.send_request(Request::from_parts(parts, body)).await?;
    Ok(response.map(|b| b.boxed()))
}
