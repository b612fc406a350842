//! Streamed answers through the daemon, from a real container: events reach the client as the
//! container sends them, a stream longer than `request_timeout_ms` passes while its gaps are
//! shorter, and with `tracing` configured the container's `traceparent` names moat's span,
//! which reaches the OTLP receiver (a plain server of the test's own that decodes the
//! protobuf).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moat_test_support::{Daemon, require_test_image, scorer_deployment, wait_until};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde_json::Value;

const MOAT: &str = env!("CARGO_BIN_EXE_moat");

/// (trace id, span id) in hex, of every span the receiver got.
type Received = Arc<Mutex<Vec<(String, String)>>>;

/// An OTLP/HTTP receiver on a thread, and what it received.
fn receiver() -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let spans = Arc::new(Mutex::new(Vec::new()));
    let got = spans.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = Vec::new();
            let mut chunk = [0u8; 65536];
            // One request per connection is enough for the exporter's client to go on.
            let body = loop {
                let Ok(n) = stream.read(&mut chunk) else { break None };
                if n == 0 {
                    break None;
                }
                request.extend_from_slice(&chunk[..n]);
                let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                let head = String::from_utf8_lossy(&request[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if request.len() >= end + 4 + length {
                    break Some(request[end + 4..end + 4 + length].to_vec());
                }
            };
            if let Some(export) = body.and_then(|b| ExportTraceServiceRequest::decode(b.as_slice()).ok()) {
                let mut got = got.lock().expect("spans");
                for span in export.resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans) {
                    got.push((hex(&span.trace_id), hex(&span.span_id)));
                }
            }
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (format!("http://{addr}"), spans)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Scores with a raw HTTP/1.1 client; each piece of the answer with the time it came.
fn score_streaming(addr: SocketAddr, path: &str, key: &str, body: &str) -> Vec<(Instant, String)> {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: moat\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("request");
    let mut pieces = Vec::new();
    let mut chunk = [0u8; 8192];
    while let Ok(n) = stream.read(&mut chunk) {
        if n == 0 {
            break;
        }
        pieces.push((Instant::now(), String::from_utf8_lossy(&chunk[..n]).into_owned()));
    }
    pieces
}

#[test]
fn a_containers_event_stream_reaches_the_client_as_it_is_sent_with_moats_span_in_between() {
    require_test_image();
    let (otlp, spans) = receiver();
    let d = Daemon::start_with_config(MOAT, &format!("tracing: {{otlp_endpoint: \"{otlp}\"}}\n"));
    d.cli("online-endpoint create -n stream-ep -f examples/model-1/endpoint.yml").ok();
    // request_timeout_ms 1000; the stream lasts 2 s with 400 ms gaps.
    let spec = scorer_deployment("stream-ep", "blue", 1)
        .replace("path: /score}", "path: /stream}")
        .replace("request_timeout_ms: 5000", "request_timeout_ms: 1000");
    let file = d.home.join("blue.yml");
    std::fs::write(&file, spec).expect("spec");
    d.cli(&format!("online-deployment create -f {} --all-traffic", file.display())).ok();
    let key = d.cli("online-endpoint get-credentials -n stream-ep -o tsv --query primaryKey").ok().stdout;
    let uri = d.cli("online-endpoint show -n stream-ep -o tsv --query scoring_uri").ok().stdout;
    let rest = uri.trim().strip_prefix("http://").expect("http");
    let (authority, path) = rest.split_once('/').expect("path");

    let started = Instant::now();
    let pieces = score_streaming(
        authority.parse().expect("addr"),
        &format!("/{path}"),
        key.trim(),
        "{\"events\": 6, \"gap_ms\": 400}",
    );
    let all: String = pieces.iter().map(|(_, p)| p.as_str()).collect();
    assert!(all.starts_with("HTTP/1.1 200"), "{all}");
    assert!(all.to_ascii_lowercase().contains("content-type: text/event-stream"), "{all}");
    let events: Vec<Value> = all
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|e| serde_json::from_str(e).expect("event"))
        .collect();
    assert_eq!(events.len(), 6, "the whole stream passed: {all}");
    let first = pieces.iter().find(|(_, p)| p.contains("data: ")).expect("an event").0;
    let last = pieces.last().expect("pieces").0;
    assert!(
        last.duration_since(first) >= Duration::from_millis(1500),
        "the first event came {:?} after the request, the last {:?}",
        first.duration_since(started),
        last.duration_since(started)
    );

    // The container's traceparent names moat's span, which was exported.
    let traceparent = events[0]["traceparent"].as_str().expect("traceparent").to_string();
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    let (trace, span) = (parts[1].to_string(), parts[2].to_string());
    wait_until(Duration::from_secs(15), "moat's span at the OTLP receiver", || {
        let got = spans.lock().expect("spans");
        if got.contains(&(trace.clone(), span.clone())) { Ok(()) } else { Err(format!("{got:?}")) }
    });
    assert!(d.log().contains(&format!("\"trace_id\":\"{trace}\"")), "the access line names the trace");
}
