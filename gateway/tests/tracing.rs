//! Traces end to end: a client's W3C trace context, moat's server span exported over
//! OTLP/HTTP to a receiver of the test's own (decoding the protobuf as a collector does), and
//! the `traceparent` the container sees naming moat's span.

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use moat_gateway::trace::{Tracing, TracingConfig};
use moat_gateway::{AccessRecord, Config, Credentials, Gateway, Routes};
use moat_test_support::{Reply, http};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::net::TcpListener;

const KEY: &str = "tracing-test-key";

/// An OTLP/HTTP receiver: every span of every export it gets, with its service name.
async fn receiver() -> (String, Arc<Mutex<Vec<(String, Span)>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let spans = Arc::new(Mutex::new(Vec::new()));
    let got = spans.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let got = got.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<Incoming>| {
                    let got = got.clone();
                    async move {
                        assert_eq!(req.uri().path(), "/v1/traces");
                        assert_eq!(req.headers()["content-type"], "application/x-protobuf");
                        let body = req.into_body().collect().await.expect("export body").to_bytes();
                        let export =
                            ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf export");
                        for resource in export.resource_spans {
                            let service = resource
                                .resource
                                .iter()
                                .flat_map(|r| &r.attributes)
                                .find(|a| a.key == "service.name")
                                .and_then(|a| text(a.value.as_ref()?.value.as_ref()?))
                                .unwrap_or_default();
                            for scope in resource.scope_spans {
                                for span in scope.spans {
                                    got.lock().expect("spans").push((service.clone(), span));
                                }
                            }
                        }
                        let answer = ExportTraceServiceResponse::default().encode_to_vec();
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(answer))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (format!("http://{addr}"), spans)
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(i) => Some(i.to_string()),
        _ => None,
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes.iter().find(|a| a.key == key).and_then(|a| text(a.value.as_ref()?.value.as_ref()?))
}

struct Traced {
    addr: SocketAddr,
    logs: Arc<Mutex<Vec<serde_json::Value>>>,
    spans: Arc<Mutex<Vec<(String, Span)>>>,
}

/// The gateway, tracing at `sample_ratio`, in front of a container that echoes its headers.
async fn traced_gateway(sample_ratio: f64) -> Traced {
    let (endpoint, spans) = receiver().await;
    let up = echo().await;
    let routes = Routes::default();
    let credentials = Credentials::Keys(vec![KEY.as_bytes().to_vec()]);
    routes.publish(common::table_of_one(up, credentials));
    let config =
        TracingConfig { otlp_endpoint: Some(endpoint), service_name: "moat-under-test".into(), sample_ratio };
    let tracing = Tracing::start(&config, tokio::runtime::Handle::current()).expect("the pipeline starts");
    let logs = Arc::new(Mutex::new(Vec::new()));
    let sink = {
        let logs = logs.clone();
        Arc::new(move |r: &AccessRecord| {
            logs.lock().expect("logs").push(serde_json::to_value(r).expect("json"))
        })
    };
    let gw = Gateway::traced(Config::default(), routes, sink, tracing);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(moat_gateway::serve(listener, gw, std::future::pending(), Duration::from_secs(1)));
    Traced { addr, logs, spans }
}

/// A container that answers with the headers it got, as JSON.
async fn echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|req: hyper::Request<Incoming>| async move {
                    let headers: HashMap<String, String> = req
                        .headers()
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                        .collect();
                    let body = serde_json::json!(headers).to_string();
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(body))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

async fn score(addr: SocketAddr, traceparent: Option<&str>) -> Reply {
    let traceparent = traceparent.map(str::to_string);
    tokio::task::spawn_blocking(move || {
        let auth = format!("Bearer {KEY}");
        let mut headers = vec![("Authorization", auth.as_str())];
        if let Some(tp) = traceparent.as_deref() {
            headers.push(("traceparent", tp));
            headers.push(("tracestate", "vendor=client"));
        }
        http(addr, "POST", "/endpoints/ep/score", &headers, "{}")
    })
    .await
    .expect("join")
    .expect("reply")
}

/// The `traceparent` the container saw, split into (trace id, parent span id, flags).
fn seen_by_container(reply: &Reply) -> (String, String, String) {
    let headers: serde_json::Value = serde_json::from_str(&reply.body).expect("echoed headers");
    let tp = headers["traceparent"].as_str().expect("the container got a traceparent").to_string();
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!((parts.len(), parts[0]), (4, "00"), "{tp}");
    (parts[1].to_string(), parts[2].to_string(), parts[3].to_string())
}

fn access_line(t: &Traced, request_id: &str) -> serde_json::Value {
    let logs = t.logs.lock().expect("logs");
    logs.iter().find(|l| l["request_id"] == request_id).cloned().expect("access line")
}

/// Waits for the exported span of `trace_id` (hex).
async fn exported(t: &Traced, trace_id: &str) -> (String, Span) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let found =
            t.spans.lock().expect("spans").iter().find(|(_, s)| hex(&s.trace_id) == trace_id).cloned();
        if let Some(found) = found {
            return found;
        }
        assert!(Instant::now() < deadline, "no span of trace {trace_id} reached the receiver");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_span_tree_runs_from_the_client_through_moat_to_the_container() {
    let t = traced_gateway(1.0).await;
    let reply = score(t.addr, Some(&format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))).await;
    assert_eq!(reply.status, 200);
    let (trace, parent, flags) = seen_by_container(&reply);
    assert_eq!((trace.as_str(), flags.as_str()), (CLIENT_TRACE, "01"), "the client's trace, sampled");
    assert_ne!(parent, CLIENT_SPAN, "the container's parent is moat's span, not the client's");

    let (service, span) = exported(&t, CLIENT_TRACE).await;
    assert_eq!(service, "moat-under-test");
    assert_eq!(hex(&span.parent_span_id), CLIENT_SPAN, "moat's span is the client span's child");
    assert_eq!(hex(&span.span_id), parent, "the span id the container saw is moat's");
    assert_eq!(span.kind, 2, "a server span");
    assert_eq!(attribute(&span, "endpoint").as_deref(), Some("ep"));
    assert_eq!(attribute(&span, "deployment").as_deref(), Some("blue"));
    assert_eq!(attribute(&span, "instance").as_deref(), Some("ep-0"));
    assert_eq!(attribute(&span, "status").as_deref(), Some("200"));

    let request_id = reply.header("x-request-id").expect("request id");
    assert_eq!(access_line(&t, request_id)["trace_id"], CLIENT_TRACE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_valid_traceparent_moat_starts_the_trace() {
    let t = traced_gateway(1.0).await;
    for incoming in
        [None, Some("00-not-a-trace-01"), Some(&*format!("00-{}-{CLIENT_SPAN}-01", "0".repeat(32)))]
    {
        let reply = score(t.addr, incoming).await;
        let (trace, parent, flags) = seen_by_container(&reply);
        assert_ne!(trace, CLIENT_TRACE);
        assert_eq!(flags, "01");
        let (_, span) = exported(&t, &trace).await;
        assert!(span.parent_span_id.is_empty(), "a root span for {incoming:?}");
        assert_eq!(hex(&span.span_id), parent);
        let request_id = reply.header("x-request-id").expect("request id");
        assert_eq!(access_line(&t, request_id)["trace_id"], trace.as_str());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsampled_requests_export_nothing() {
    // sample_ratio 0: new traces are not sampled, nor is a client's unsampled one; a client's
    // sampled trace still is (its parent decides), and arrives after the others were done.
    let t = traced_gateway(0.0).await;
    let new = score(t.addr, None).await;
    let unsampled_trace = "11111111111111111111111111111111";
    let unsampled = score(t.addr, Some(&format!("00-{unsampled_trace}-{CLIENT_SPAN}-00"))).await;
    for reply in [&new, &unsampled] {
        assert_eq!(reply.status, 200);
        assert_eq!(seen_by_container(reply).2, "00", "the container learns the trace is not sampled");
    }
    let sampled = score(t.addr, Some(&format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))).await;
    assert_eq!(sampled.status, 200);
    exported(&t, CLIENT_TRACE).await;
    let spans = t.spans.lock().expect("spans");
    let traces: Vec<String> = spans.iter().map(|(_, s)| hex(&s.trace_id)).collect();
    assert_eq!(traces, vec![CLIENT_TRACE.to_string()], "only the sampled request was exported");
}
