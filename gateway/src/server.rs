//! The scoring listener: accepts connections, serves HTTP/1.1 on each, and on shutdown stops
//! accepting and lets in-flight requests finish within the grace period.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::Config;
use crate::access_log::LogSink;
use crate::auth::aad::Aad;
use crate::forward::{self, Client};
use crate::request;
use crate::table::Routes;
use crate::timeouts::{Activity, TimedIo};

/// Everything a request needs, shared by all connections.
pub struct Gateway {
    pub config: Config,
    /// The OpenID issuer's key set, when `auth.aad` is configured.
    pub aad: Option<Arc<Aad>>,
    pub routes: Routes,
    pub client: Client,
    pub log: LogSink,
    pub mirror_budget: Arc<Semaphore>,
}

impl Gateway {
    pub fn new(config: Config, routes: Routes, log: LogSink) -> Arc<Gateway> {
        let mirror_budget = Arc::new(Semaphore::new(config.mirror_max_in_flight));
        let aad = config.aad.clone().map(|c| Arc::new(Aad::new(c)));
        Arc::new(Gateway { config, aad, routes, client: forward::client(), log, mirror_budget })
    }
}

/// Serves `listener` until `shutdown` resolves, then waits up to `grace` for open requests.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let graceful = GracefulShutdown::new();
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
        let gw = gateway.clone();
        let activity = Activity::new();
        let io = TimedIo::new(
            stream,
            activity.clone(),
            gateway.config.idle_timeout,
            gateway.config.header_read_timeout,
        );
        let service = service_fn(move |req| {
            let gw = gw.clone();
            let serving = activity.serving();
            async move {
                let response = request::handle(&gw, req, Some(peer)).await;
                drop(serving);
                Ok::<_, Infallible>(response)
            }
        });
        // A header section beyond this buffer gets 431 from hyper itself.
        let connection = hyper::server::conn::http1::Builder::new()
            .max_buf_size(gateway.config.max_header_bytes.max(8192))
            .serve_connection(TokioIo::new(io), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(client = %peer, error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!("shutdown grace period over with requests still open");
    }
}
