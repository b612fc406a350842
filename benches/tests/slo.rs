//! moat-bench for SLO testing, against servers of the test's own that answer slowly, send
//! their first byte early, or fail a share of requests: the percentiles and the first-byte
//! distribution, the rate ladder, the SLO exit codes, bodies in turn, the timeline, the
//! wrk2-style distribution and several HTTP/2 streams per connection.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::Value;
use tokio::net::TcpListener;

const BENCH: &str = env!("CARGO_BIN_EXE_moat-bench");

/// What the server saw: bodies by count, requests in flight now and at most.
#[derive(Default)]
struct Seen {
    bodies: Mutex<HashMap<String, u64>>,
    requests: AtomicU64,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
}

/// Paths: `/fast` answers at once; `/slow` after 20 ms; `/early` sends its head and first
/// byte at once and the rest 20 ms later; `/flaky` fails every other request with 503;
/// `/held` holds each request 100 ms (for streams in flight).
async fn server() -> (SocketAddr, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Seen::default());
    let service = {
        let seen = seen.clone();
        move |request: hyper::Request<hyper::body::Incoming>| {
            let seen = seen.clone();
            async move {
                let n = seen.requests.fetch_add(1, Ordering::SeqCst);
                let now = seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                seen.peak.fetch_max(now, Ordering::SeqCst);
                let path = request.uri().path().to_string();
                let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                *seen
                    .bodies
                    .lock()
                    .expect("bodies")
                    .entry(String::from_utf8_lossy(&body).into_owned())
                    .or_default() += 1;
                let whole = |text: &'static str| {
                    http_body_util::Full::new(Bytes::from_static(text.as_bytes())).boxed()
                };
                let response = match path.as_str() {
                    "/slow" => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        hyper::Response::new(whole("[1.0]"))
                    }
                    "/held" => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        hyper::Response::new(whole("[1.0]"))
                    }
                    "/early" => {
                        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(2);
                        tokio::spawn(async move {
                            let _ = tx.send(Bytes::from_static(b"data: 1\n\n")).await;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            let _ = tx.send(Bytes::from_static(b"data: 2\n\n")).await;
                        });
                        let stream = futures_util::stream::poll_fn(move |cx| {
                            rx.poll_recv(cx).map(|piece| piece.map(|b| Ok::<_, Infallible>(Frame::data(b))))
                        });
                        hyper::Response::new(BodyExt::boxed(StreamBody::new(stream)))
                    }
                    "/flaky" if n % 2 == 1 => {
                        let mut r = hyper::Response::new(whole("busy"));
                        *r.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
                        r
                    }
                    _ => hyper::Response::new(whole("[1.0]")),
                };
                seen.in_flight.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, Infallible>(response)
            }
        }
    };
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let service = service.clone();
            tokio::spawn(async move {
                let builder = auto::Builder::new(TokioExecutor::new());
                drop(builder.serve_connection(TokioIo::new(stream), service_fn(service)).await)
            });
        }
    });
    (addr, seen)
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn bench(args: &[&str]) -> Run {
    let out = tokio::process::Command::new(BENCH).args(args).output().await.expect("moat-bench runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn json(args: &[&str]) -> Value {
    let run = bench(&[&["--json"], args].concat()).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
}

fn us(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn percentiles_and_the_first_byte_show_a_stream_that_starts_early_and_ends_late() {
    let (addr, _) = server().await;
    let url = format!("http://{addr}/early");
    let r = json(&["-c", "2", "-n", "40", &url]).await;
    let (latency, first) = (&r["latency_us"], &r["first_byte_us"]);
    for p in [latency, first] {
        let order = [us(p, "min"), us(p, "p50"), us(p, "p90"), us(p, "p95"), us(p, "p99"), us(p, "max")];
        assert!(order.windows(2).all(|w| w[0] <= w[1]), "percentiles in order: {p}");
        let mean = p["mean"].as_f64().expect("mean");
        assert!(mean >= us(p, "min") as f64 && mean <= us(p, "max") as f64, "{p}");
    }
    assert!(us(latency, "p50") >= 20_000, "the last byte comes after 20 ms: {latency}");
    assert!(us(first, "p50") < 10_000, "the first byte comes at once: {first}");
    assert!(us(latency, "p50") - us(first, "p50") >= 15_000, "the gap shows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_ladder_runs_each_step_at_its_rate() {
    let (addr, seen) = server().await;
    let url = format!("http://{addr}/fast");
    let r = json(&["-c", "4", "-z", "1s", "--rates", "50,100,200", &url]).await;
    let steps = r["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 3);
    let mut total = 0;
    for (step, rate) in steps.iter().zip([50.0, 100.0, 200.0]) {
        assert_eq!(step["offered_rps"].as_f64(), Some(rate));
        let achieved = step["achieved_rps"].as_f64().expect("achieved");
        assert!((rate * 0.8..=rate * 1.2).contains(&achieved), "{rate}/s asked, {achieved}/s done");
        total += step["requests"].as_u64().expect("requests");
    }
    assert_eq!(seen.requests.load(Ordering::SeqCst), total);

    let human = bench(&["-c", "4", "-z", "500ms", "--rates", "20,40", &url]).await;
    assert_eq!(human.code, 0, "{}", human.stderr);
    assert!(human.stdout.contains("offered/s") && human.stdout.lines().count() >= 4, "{}", human.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slo_bounds_pass_or_fail_the_run_with_their_own_exit_codes() {
    let (addr, _) = server().await;
    let fast = format!("http://{addr}/fast");
    let slow = format!("http://{addr}/slow");
    let flaky = format!("http://{addr}/flaky");
    let kept = bench(&["-n", "50", "--slo", "p99<5s,p50<=5s,errors<1%", &fast]).await;
    assert_eq!(kept.code, 0, "{}", kept.stderr);
    let late = bench(&["-n", "20", "-c", "2", "--slo", "p50<1s,p99<5ms", &slow]).await;
    assert_eq!(late.code, 3, "{}", late.stderr);
    assert!(late.stderr.contains("p99<5ms") && !late.stderr.contains("p50<1s"), "{}", late.stderr);
    let failing = bench(&["-n", "40", "-c", "1", "--slo", "errors<10%", &flaky]).await;
    assert_eq!(failing.code, 3, "{}", failing.stderr);
    assert!(failing.stderr.contains("errors<10% (measured 50.000%)"), "{}", failing.stderr);
    let ladder = bench(&["-z", "500ms", "--rates", "20,40", "--slo", "p99<5ms", &slow]).await;
    assert_eq!(ladder.code, 3);
    assert!(ladder.stderr.contains("at 20/s") && ladder.stderr.contains("at 40/s"), "{}", ladder.stderr);
    for bad in ["p99<soon", "p42<1ms", "errors<lots", "p99"] {
        let run = bench(&["-n", "1", "--slo", bad, &fast]).await;
        assert_eq!(run.code, 2, "{bad}: {}", run.stderr);
        assert!(run.stderr.contains("--slo"), "{}", run.stderr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_sent_in_turn() {
    let (addr, seen) = server().await;
    let dir = moat_test_support::TempDir::new("moat-bench-bodies");
    let file = dir.path().join("bodies.jsonl");
    std::fs::write(&file, "{\"data\": [1]}\n{\"data\": [2]}\n\n{\"data\": [3]}\n").expect("bodies");
    let url = format!("http://{addr}/fast");
    let r = json(&["-c", "3", "-n", "30", "--bodies", file.to_str().expect("path"), &url]).await;
    assert_eq!(r["status"]["200"], 30);
    let bodies = seen.bodies.lock().expect("bodies").clone();
    let expected: HashMap<String, u64> = ["{\"data\": [1]}", "{\"data\": [2]}", "{\"data\": [3]}"]
        .iter()
        .map(|b| (b.to_string(), 10))
        .collect();
    assert_eq!(bodies, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeline_has_one_line_per_second_and_the_distribution_prints_as_wrk2_does() {
    let (addr, _) = server().await;
    let dir = moat_test_support::TempDir::new("moat-bench-timeline");
    let file = dir.path().join("timeline.jsonl");
    let url = format!("http://{addr}/flaky");
    let r =
        json(&["-c", "2", "-z", "3s", "-q", "100", "--timeline", file.to_str().expect("path"), &url]).await;
    let text = std::fs::read_to_string(&file).expect("timeline written");
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(lines.len(), 3, "{text}");
    let (mut requests, mut errors) = (0, 0);
    for (t, line) in lines.iter().enumerate() {
        assert_eq!(line["t"], t);
        assert!(line["p50_us"].as_u64().expect("p50") <= line["p99_us"].as_u64().expect("p99"));
        requests += line["requests"].as_u64().expect("requests");
        errors += line["errors"].as_u64().expect("errors");
    }
    assert_eq!(requests, r["requests"].as_u64().expect("requests"));
    assert_eq!(errors, r["status"]["503"].as_u64().expect("503s"));

    let run = bench(&["-n", "200", "--hist", &format!("http://{addr}/fast")]).await;
    assert_eq!(run.code, 0);
    assert!(run.stdout.contains("Detailed Percentile spectrum:"), "{}", run.stdout);
    assert!(run.stdout.contains("Value   Percentile   TotalCount 1/(1-Percentile)"));
    assert!(
        run.stdout.contains("#[Max     =") && run.stdout.contains("Total count    =          200]"),
        "{}",
        run.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_streams_share_one_http2_connection() {
    let (addr, seen) = server().await;
    let url = format!("http://{addr}/held");
    let r = json(&["--http2", "--streams", "4", "-c", "1", "-n", "12", &url]).await;
    assert_eq!(r["status"]["200"], 12);
    assert_eq!(seen.peak.load(Ordering::SeqCst), 4, "four requests in flight on the one connection");
    let run = bench(&["--streams", "4", &url]).await;
    assert_eq!(run.code, 2, "--streams needs --http2");
}
