//! The Prometheus endpoint: installs the process's metrics recorder and serves `/metrics` on
//! `metrics_listen`. The series themselves are recorded where things happen (gateway,
//! supervisor); the gateway's latency histograms are its own and rendered after the
//! recorder's series.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use moat_gateway::health::Health;
use tokio::net::TcpListener;

use crate::error::Error;
use crate::usage;

/// Installs the recorder once per process; the handle renders what it holds.
pub fn install() -> Result<PrometheusHandle, Error> {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| Error::other("installing the metrics recorder", e))?;
    describe();
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(handle)
}

/// Always 1; its `version` label says which moat answers (CONTRACT.md "Metrics and logs").
pub const BUILD_INFO: &str = "moat_build_info";

/// The `# HELP` line of every series moat records: what it counts, for the SRE reading it.
fn describe() {
    use metrics::{describe_counter, describe_gauge};
    use moat_egress_guard::{decision_log, guard, scope};
    use moat_gateway::metrics as gateway;

    describe_gauge!(BUILD_INFO, "Always 1; the version label is the running moat's");
    describe_counter!(
        gateway::REQUESTS,
        "Scoring requests answered, by endpoint, deployment and status code"
    );
    describe_gauge!(
        gateway::IN_FLIGHT,
        "Scoring requests of a deployment being answered now, queued ones included"
    );
    describe_gauge!(
        gateway::QUEUE_DEPTH,
        "Scoring requests of a deployment waiting for a free instance slot"
    );
    describe_counter!(
        gateway::MIRROR,
        "Mirrored copies of scoring requests, by result (sent, failed, dropped)"
    );
    describe_counter!(
        gateway::INGRESS_DENIED,
        "Requests refused (enforce) or that would have been (report) by the endpoint's network access rule"
    );
    describe_counter!(
        moat_supervisor::RESTARTS,
        "Restarts of a deployment's instances after an exit or failed liveness"
    );
    describe_counter!(
        decision_log::DECISIONS,
        "Egress decisions for a private deployment's containers, by decision and reason (kernel: packets the kernel rules dropped)"
    );
    describe_counter!(
        decision_log::BYTES,
        metrics::Unit::Bytes,
        "Bytes relayed by the egress guard, by direction"
    );
    describe_gauge!(scope::OPEN_GAUGE, "Connections a deployment's containers hold open to the egress guard");
    describe_counter!(
        scope::SUPPRESSED,
        "Egress log lines left out by the per-kind rate limit (the decisions are still counted)"
    );
    describe_counter!(
        guard::RULES_RESTORED,
        "Times the home's nftables table was found changed from outside moat and rebuilt"
    );
    describe_counter!(
        gateway::SCORING_BYTES,
        metrics::Unit::Bytes,
        "Scoring body bytes by endpoint: in, read from clients; out, answered to them"
    );
    describe_gauge!(
        gateway::OPEN_CONNECTIONS,
        "Client connections a scoring listener (http, https) holds open"
    );
    describe_gauge!(usage::CAPACITY, "Instances of a deployment this node is asked to run (instance_count)");
    describe_gauge!(usage::READY, "Instances of a deployment ready to score on this node");
    describe_gauge!(
        usage::CPU,
        "CPU cores an instance's container uses (Docker's stats; 1.5 is one and a half cores)"
    );
    describe_gauge!(
        usage::MEMORY,
        metrics::Unit::Bytes,
        "Memory an instance's container uses, reclaimable page cache left out"
    );
    describe_gauge!(usage::MEMORY_LIMIT, metrics::Unit::Bytes, "An instance's container memory limit");
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
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
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
                        let mut text = handle.render();
                        moat_gateway::histogram::REGISTRY.render(&mut text);
                        (StatusCode::OK, text)
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
