//! The Prometheus endpoint: installs the process's metrics recorder and serves `/metrics` on
//! `metrics_listen`. The series themselves are recorded where things happen (gateway,
//! supervisor).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use moat_gateway::health::Health;
use tokio::net::TcpListener;

use crate::error::Error;

/// Request latencies in seconds, from half a millisecond to the longest request timeout.
const BUCKETS: [f64; 16] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 180.0];

/// Installs the recorder once per process; the handle renders what it holds.
pub fn install() -> Result<PrometheusHandle, Error> {
    let mut builder = PrometheusBuilder::new();
    for name in moat_gateway::metrics::HISTOGRAMS {
        builder = builder
            .set_buckets_for_metric(Matcher::Full(name.to_string()), &BUCKETS)
            .map_err(|e| Error::other("setting up metrics", e))?;
    }
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| Error::other("installing the metrics recorder", e))?;
    Ok(handle)
}

/// Serves `GET /metrics`, and `/healthz` and `/readyz` as the scoring listeners do, until
/// `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut upkeep = tokio::time::interval(Duration::from_secs(5));
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
            _ = upkeep.tick() => {
                handle.run_upkeep();
                continue;
            }
            _ = &mut shutdown => return,
        };
        let (handle, health) = (handle.clone(), health.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let (handle, health) = (handle.clone(), health.clone());
                async move {
                    if let Some(answer) = health.answer(req.method(), req.uri().path()) {
                        return Ok::<_, Infallible>(answer);
                    }
                    let (status, body) = if req.uri().path() == "/metrics" {
                        (StatusCode::OK, handle.render())
                    } else {
                        (StatusCode::NOT_FOUND, "metrics are at /metrics\n".to_string())
                    };
                    let mut response = Response::new(Full::new(Bytes::from(body)));
                    *response.status_mut() = status;
                    response.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
                    );
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
