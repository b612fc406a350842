//! The gateway in front of an in-process upstream: credentials, routing, status codes and
//! headers as a client sees them.

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::harness::{MIRRORED, PEAK, PRIMARY, SECONDARY, bearer, call, gateway, score_on};
use moat_gateway::Config;
use moat_test_support::http;

#[tokio::test]
async fn both_keys_score_and_the_key_never_reaches_the_container() {
    let h = gateway(Config::default()).await;
    for key in [PRIMARY, SECONDARY] {
        let auth = bearer(key);
        let r = call(h.addr, "POST", "/endpoints/ep/score", &[("Authorization", &auth)], "{}").await;
        assert_eq!(r.status, 200, "{}", r.body);
        let seen: HashMap<String, String> = serde_json::from_str(&r.body).expect("echo");
        assert!(!seen.contains_key("authorization"), "credential forwarded: {seen:?}");
        // moat's own headers replace the container's of the same names (in any case); the
        // container's other fields arrive as it wrote them.
        let all = |name: &str| r.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).count();
        assert_eq!((all("x-request-id"), all("azureml-model-deployment")), (1, 1), "{:?}", r.headers);
        assert_eq!(r.header("azureml-model-deployment"), Some("blue"));
        let id = r.header("x-request-id").expect("request id");
        assert_ne!(id, "container-made-this");
        assert_eq!(r.header("x-model-output"), Some("kept"));
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        assert_eq!(seen.get("x-request-id").map(String::as_str), Some(id), "container sees the same id");
    }
    let logs = h.logs.lock().expect("logs").join("\n");
    assert!(!logs.contains(PRIMARY) && !logs.contains(SECONDARY), "a key in the access log");
}

#[tokio::test]
async fn a_plain_client_request_id_is_echoed_once_on_every_answer() {
    let h = gateway(Config::default()).await;
    let auth = bearer(PRIMARY);
    let all = |r: &http::Reply, name: &str| {
        r.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>()
    };
    let sent = [("Authorization", auth.as_str()), ("x-ms-client-request-id", "run-7_a")];
    let relayed = call(h.addr, "POST", "/endpoints/ep/score", &sent, "{}").await;
    let own = call(h.addr, "POST", "/endpoints/ep/score", &sent[1..], "{}").await;
    for (r, status) in [(&relayed, 200), (&own, 401)] {
        assert_eq!(r.status, status, "{}", r.body);
        assert_eq!(all(r, "x-ms-client-request-id"), ["run-7_a"], "{status}: {:?}", r.headers);
        assert_eq!(all(r, "x-request-id").len(), 1, "{status}: {:?}", r.headers);
    }
    // Not plain: not echoed, and the container's own never passes for it.
    let odd = [("Authorization", auth.as_str()), ("x-ms-client-request-id", "has space")];
    let r = call(h.addr, "POST", "/endpoints/ep/score", &odd, "{}").await;
    assert!(all(&r, "x-ms-client-request-id").is_empty(), "{:?}", r.headers);
}

#[tokio::test]
async fn the_container_gets_the_clients_headers_without_this_hops_own() {
    let h = gateway(Config::default()).await;
    let auth = bearer(PRIMARY);
    let headers = [
        ("Authorization", auth.as_str()),
        ("Host", "client.example"),
        ("Connection", "x-hop"),
        ("X-Hop", "1"),
        ("Keep-Alive", "timeout=5"),
        ("X-Model-Input", "kept"),
        ("X-Request-ID", "client-made-this"),
        ("X-Model-Input", "twice"),
    ];
    let r = call(h.addr, "POST", "/endpoints/ep/score", &headers, "{}").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let seen: HashMap<String, String> = serde_json::from_str(&r.body).expect("echo");
    // Names in any case: the client's request id is replaced, not sent beside moat's.
    assert_eq!(seen.get("x-request-id").map(String::as_str), r.header("x-request-id"));
    for gone in ["authorization", "x-hop", "keep-alive", "connection"] {
        assert!(!seen.contains_key(gone), "{gone} forwarded: {seen:?}");
    }
    assert_eq!(seen.get("x-model-input").map(String::as_str), Some("kept, twice"), "both, in order");
    assert_eq!(seen.get("content-length").map(String::as_str), Some("2"));
    let host = seen.get("host").expect("a Host header");
    assert!(host.starts_with("127.0.0.1:"), "Host {host} is not the container's address");
}

#[tokio::test]
async fn wrong_or_missing_credentials_get_401_and_are_logged() {
    let h = gateway(Config::default()).await;
    for headers in [vec![("Authorization", "Bearer nope")], vec![("Authorization", "Basic x")], vec![]] {
        let r = call(h.addr, "POST", "/endpoints/ep/score", &headers, "{}").await;
        assert_eq!(r.status, 401, "{headers:?}");
        let body: serde_json::Value = serde_json::from_str(&r.body).expect("json error");
        assert_eq!(body["request_id"].as_str(), r.header("x-request-id"));
    }
    let logs = h.logs.lock().expect("logs").clone();
    assert_eq!(logs.len(), 3);
    assert!(logs[0].contains("\"auth\":\"invalid\"") && logs[2].contains("\"auth\":\"missing\""), "{logs:?}");
}

#[tokio::test]
async fn routing_by_header_and_the_404s_that_name_what_is_missing() {
    let h = gateway(Config::default()).await;
    let auth = bearer(PRIMARY);
    let r = score_on(&h, "nosuch").await;
    assert_eq!(r.status, 404);
    assert!(r.body.contains("nosuch"), "{}", r.body);
    let r = call(h.addr, "POST", "/endpoints/missing/score", &[("Authorization", &auth)], "{}").await;
    assert_eq!(r.status, 404);
    assert!(r.body.contains("missing"), "{}", r.body);
    let r = call(h.addr, "POST", "/endpoints/idle/score", &[("Authorization", &auth)], "{}").await;
    assert_eq!(r.status, 404);
    assert!(r.body.contains("positive traffic"), "{}", r.body);
    let r = call(h.addr, "GET", "/endpoints/ep/swagger.json", &[("Authorization", &auth)], "").await;
    assert_eq!((r.status, r.body.as_str()), (200, "{\"swagger\":\"2.0\"}"));
}

#[tokio::test]
async fn container_errors_become_424_with_the_containers_body() {
    let h = gateway(Config::default()).await;
    let r = score_on(&h, "bad").await;
    assert_eq!(r.status, 424);
    assert_eq!(r.header("ms-azureml-model-error-statuscode"), Some("400"));
    assert_eq!(r.header("ms-azureml-model-error-reason"), Some("Bad Request"));
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(r.body, "{\"detail\":\"bad input\"}");
}

#[tokio::test]
async fn no_ready_instance_is_503_with_retry_after_and_a_dead_one_is_502() {
    let h = gateway(Config::default()).await;
    let r = score_on(&h, "empty").await;
    assert_eq!(r.status, 503);
    assert!(r.header("retry-after").is_some());
    let r = score_on(&h, "gone").await;
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(r.body.contains("lost the connection to the model container"), "{}", r.body);
    assert!(!r.body.contains("127.0.0.1"), "the client learns no container address: {}", r.body);
}

#[tokio::test]
async fn a_connect_failure_is_retried_once_on_another_instance() {
    let h = gateway(Config::default()).await;
    for _ in 0..4 {
        let r = score_on(&h, "half").await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
}

#[tokio::test]
async fn a_slow_model_gets_408_and_its_connection_is_closed() {
    let mut h = gateway(Config::default()).await;
    let r = score_on(&h, "slow").await;
    assert_eq!(r.status, 408, "{}", r.body);
    let closed = tokio::time::timeout(Duration::from_secs(5), h.closed.recv()).await;
    assert!(matches!(closed, Ok(Some(()))), "the upstream connection stayed open");
}

#[tokio::test]
async fn a_slow_model_on_a_reused_connection_gets_408_at_its_own_deadline() {
    // The upstream connection's timer was set for the deadline of the request before: once
    // passed while the connection sat idle in the pool, once still ahead when the slow
    // request takes the connection. Neither cuts the slow request early, nor lets it go on.
    let h = gateway(Config::default()).await;
    for idle in [Duration::from_millis(400), Duration::ZERO] {
        assert_eq!(score_on(&h, "blue").await.status, 200);
        tokio::time::sleep(idle).await;
        let started = std::time::Instant::now();
        let r = score_on(&h, "slow").await;
        assert_eq!(r.status, 408, "{}", r.body);
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(300), "408 after {took:?}, before the 300 ms deadline");
    }
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let h = gateway(Config { max_body_bytes: 1000, ..Config::default() }).await;
    let auth = bearer(PRIMARY);
    let r = call(h.addr, "POST", "/endpoints/ep/score", &[("Authorization", &auth)], &"x".repeat(1001)).await;
    assert_eq!(r.status, 413);
    let r = call(h.addr, "POST", "/endpoints/ep/score", &[("Authorization", &auth)], &"x".repeat(1000)).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn an_instance_never_runs_more_than_its_limit_and_the_rest_get_429_with_retry_after() {
    let h = gateway(Config::default()).await;
    let calls: Vec<_> = (0..3)
        .map(|i| {
            let h_addr = h.addr;
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(i * 30)).await;
                let auth = bearer(PRIMARY);
                let headers = [("Authorization", auth.as_str()), ("azureml-model-deployment", "tight")];
                call(h_addr, "POST", "/endpoints/ep/score", &headers, "{}").await
            })
        })
        .collect();
    let mut replies = Vec::new();
    for c in calls {
        replies.push(c.await.expect("join"));
    }
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    // One runs; one waits 100 ms in the queue and gives up; one finds the queue full.
    assert_eq!(statuses, [200, 429, 429], "{replies:?}");
    assert!(replies[1].body.contains("max_queue_wait_ms"), "{}", replies[1].body);
    assert!(replies[2].body.contains("too many requests"), "{}", replies[2].body);
    assert!(replies[1..].iter().all(|r| r.header("retry-after").is_some()));
    assert_eq!(PEAK.load(Ordering::SeqCst), 1, "the instance never had two in flight");
    let logs = h.logs.lock().expect("logs").clone();
    assert!(logs.iter().any(|l| l.contains("\"queue_ms\":1")), "queue time is logged: {logs:?}");
}

#[tokio::test]
async fn mirror_copies_never_touch_the_live_answer_and_targeted_requests_are_not_copied() {
    let h = gateway(Config::default()).await;
    let auth = bearer(PRIMARY);
    let before = MIRRORED.load(Ordering::SeqCst);
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let r = call(h.addr, "POST", "/endpoints/mirrored/score", &[("Authorization", &auth)], "{}").await;
        assert_eq!(r.status, 200, "the mirror's 500 stays out of the live answer");
        assert_eq!(r.header("azureml-model-deployment"), Some("live"));
        assert!(started.elapsed() < Duration::from_secs(1), "the mirror's 2 s never delay the live answer");
    }
    let targeted = [("Authorization", auth.as_str()), ("azureml-model-deployment", "live")];
    call(h.addr, "POST", "/endpoints/mirrored/score", &targeted, "{}").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(MIRRORED.load(Ordering::SeqCst) - before, 3, "three copies, none of the targeted request");
}

#[tokio::test]
async fn live_traffic_follows_the_split_within_a_statistical_bound() {
    let h = gateway(Config::default()).await;
    let addr = h.addr;
    let green = tokio::task::spawn_blocking(move || {
        let auth = bearer(PRIMARY);
        (0..1000)
            .filter(|_| {
                let r = http(addr, "POST", "/endpoints/split/score", &[("Authorization", &auth)], "{}")
                    .expect("call");
                assert_eq!(r.status, 200);
                r.header("azureml-model-deployment") == Some("green")
            })
            .count()
    })
    .await
    .expect("join");
    // Binomial(1000, 0.1): mean 100, standard deviation 9.5; five deviations either side.
    assert!((52..=148).contains(&green), "green took {green} of 1000 at a 10 % share");
}
