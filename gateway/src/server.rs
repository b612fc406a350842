//! The scoring listeners: accept connections (plain HTTP/1.1, or TLS with HTTP/2 or HTTP/1.1
//! by ALPN), serve each with the gateway's request life (HTTP/1.1 through moat's own codec,
//! [`crate::http1`]; HTTP/2 through hyper), and on shutdown stop accepting and let in-flight
//! requests finish within the grace period.
//!
//! An HTTP/1.1 keep-alive client whose idle connection is closed may be sending its next
//! request at that moment, and lose it. So at shutdown, for [`CLOSE_WINDOW`], every answer on
//! an open connection carries `Connection: close` and the client comes back on a new one (to
//! the daemon that took over, in an upgrade); only connections still idle after it are
//! closed. HTTP/2 connections get GOAWAY, which clients retry safely.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Body;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::answer::AnswerBody;
use crate::drain::{Drain, Phase};
use crate::fields::{Fields, HeadFields};
use crate::http1::{self, RequestBody};
use crate::ingress::Mode;
use crate::ingress::accept::{self, Refused};
use crate::ingress::origin::Connection;
use crate::shared::Gateway;
use crate::timeouts::{Activity, TimedIo};
use crate::workers::Workers;
use crate::{metrics, request};

/// How long, at shutdown, open HTTP/1.1 connections get answers marked `Connection: close`
/// before the idle ones are closed.
pub const CLOSE_WINDOW: Duration = Duration::from_secs(2);

/// Serves plain HTTP/1.1 on `listener` until `shutdown` resolves, then waits up to `grace`
/// for open requests.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    accept(listener, None, gateway, shutdown, grace).await
}

/// Serves TLS on `listener`: HTTP/2 or HTTP/1.1, as ALPN settles.
pub async fn serve_tls(
    listener: TcpListener,
    tls: TlsAcceptor,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    accept(listener, Some(tls), gateway, shutdown, grace).await
}

async fn accept(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let workers = Workers::start(gateway.config.workers).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot start the gateway's worker threads: serving on the accept loop's");
        Workers::none()
    });
    let drain = Drain::new();
    let open = metrics::open_connections(if tls.is_some() { "https" } else { "http" });
    let slots = Arc::new(Semaphore::new(gateway.config.max_connections.max(1)));
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        // The socket leaves this runtime's reactor for the worker's.
        let Ok(stream) = stream.into_std() else { continue };
        let (gateway, tls, drain) = (gateway.clone(), tls.clone(), drain.clone());
        let open = open.clone();
        open.increment(1.0);
        workers.hand_over(async move {
            if let Ok(stream) = TcpStream::from_std(stream) {
                connection(gateway, stream, peer, tls, drain).await;
            }
            open.decrement(1.0);
            drop(slot);
        });
    }
    drop(listener);
    let deadline = tokio::time::Instant::now() + grace;
    drain.close();
    let window_end = tokio::time::Instant::now() + CLOSE_WINDOW.min(grace);
    while drain.count() > 0 && tokio::time::Instant::now() < window_end {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if tokio::time::timeout_at(deadline, drain.drain()).await.is_err() {
        tracing::warn!("shutdown grace period over with requests still open");
    }
    drop(workers);
}

/// One client connection, from the TLS handshake (if any) to its last request.
async fn connection(
    gateway: Arc<Gateway>,
    mut stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    drain: Drain,
) {
    let config = &gateway.config;
    let ingress = &config.ingress;
    let start = match accept::proxy_header(&mut stream, ingress, config.header_read_timeout).await {
        Ok(start) => start,
        Err(Refused::UntrustedProxyHeader) => {
            tracing::warn!(client = %peer, "closed: a PROXY header from a peer not in ingress.trusted_proxies");
            metrics::ingress_denied("", "untrusted_proxy_header", Mode::Enforce.as_str());
            return;
        }
        Err(Refused::MalformedProxyHeader) => {
            return tracing::warn!(client = %peer, "closed: a malformed PROXY header");
        }
        Err(Refused::Gone) => return,
    };
    if start.untrusted_header {
        tracing::warn!(client = %peer, "a PROXY header from a peer not in ingress.trusted_proxies (report mode: served, not believed)");
        metrics::ingress_denied("", "untrusted_proxy_header", Mode::Report.as_str());
    }
    let activity = Activity::new();
    let io = TimedIo::new(stream, activity.clone(), config.idle_timeout, config.header_read_timeout);
    let max_head_bytes = config.max_header_bytes;
    let service = Service {
        gateway: gateway.clone(),
        conn: Connection { peer, proxy: start.header },
        activity,
        drain: drain.clone(),
    };
    let ended = match tls {
        None => drain.watch(http1::serve_connection(io, service, max_head_bytes)).await,
        Some(acceptor) => {
            // A handshake gets no longer than a header section would.
            let stream = match tokio::time::timeout(config.header_read_timeout, acceptor.accept(io)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => return tracing::debug!(client = %peer, error = %e, "TLS handshake failed"),
                Err(_) => return tracing::debug!(client = %peer, "TLS handshake timed out"),
            };
            if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                let service = Arc::new(service);
                let h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX))
                    .max_concurrent_streams(config.max_streams_per_connection)
                    .serve_connection(
                        TokioIo::new(stream),
                        service_fn(move |mut req: Request<hyper::body::Incoming>| {
                            let service = service.clone();
                            let fields = std::mem::take(req.headers_mut());
                            async move {
                                let response = service.answer(req, fields).await;
                                // hyper writes HTTP/2 heads from the map alone.
                                let (mut head, mut body) = response.into_parts();
                                body.fields_into(&mut head.headers);
                                let response = Response::from_parts(head, body);
                                Ok::<_, Infallible>(response)
                            }
                        }),
                    );
                if let Err(e) = drain.watch(h2).await {
                    tracing::debug!(client = %peer, error = %e, "HTTP/2 connection ended with an error");
                }
                return;
            }
            drain.watch(http1::serve_connection(stream, service, max_head_bytes)).await
        }
    };
    if let Err(e) = ended {
        tracing::debug!(client = %peer, error = %e, "connection ended with an error");
    }
}

/// A connection's requests go through the gateway's request life; each holds the
/// connection's busy mark until its answer is written, and in the shutdown's close window
/// an HTTP/1.1 answer says `Connection: close`.
struct Service {
    gateway: Arc<Gateway>,
    conn: Connection,
    activity: Arc<Activity>,
    /// The listener's shutdown: in its close window, answers say `Connection: close`.
    drain: Drain,
}

impl Service {
    async fn answer<B, F>(&self, req: Request<B>, fields: F) -> Response<AnswerBody>
    where
        B: Body<Data = Bytes> + Send + Unpin,
        B::Error: std::fmt::Display,
        F: Fields + Sync,
    {
        let http1 = req.version() < http::Version::HTTP_2;
        // moat's HTTP/1.1 codec reads the next request only after this answer is written.
        let serving = self.activity.serving(http1);
        let mut response = request::handle(&self.gateway, req, fields, &self.conn).await;
        if http1 && self.drain.phase() >= Phase::Closing {
            response.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
        }
        // Busy until the answer's last byte is written, not only its head.
        response.body_mut().hold(serving);
        response
    }
}

impl http1::Serve for Service {
    type Body = AnswerBody;

    fn serve<'a>(
        &'a self,
        request: Request<RequestBody<'a>>,
        fields: HeadFields,
    ) -> impl Future<Output = Response<AnswerBody>> + Send + 'a {
        self.answer(request, fields)
    }

    fn refused(&self, refused: &http1::head::Refused) {
        request::refused_head(&self.gateway, &self.conn, refused.status.as_u16(), &refused.reason);
    }
}
