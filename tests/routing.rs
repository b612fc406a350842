//! Routing through moat with real containers: the traffic split and mirror set with
//! `online-endpoint update`, the metrics that count them, and no secret anywhere a user can
//! read (logs, metrics, error bodies).

use std::net::SocketAddr;

use std::time::Duration;

use moat_test_support::{Daemon, http, require_test_image, scorer_deployment, wait_until};
use serde_json::Value;

const MOAT: &str = env!("CARGO_BIN_EXE_moat");

fn deployment(d: &Daemon, endpoint: &str, name: &str) {
    let file = d.home.join(format!("{name}.yml"));
    std::fs::write(&file, scorer_deployment(endpoint, name, 1)).expect("spec");
    d.cli(&format!("online-deployment create -f {}", file.display())).ok();
}

fn tsv(d: &Daemon, line: &str) -> String {
    d.cli(&format!("{line} -o tsv")).ok().stdout.trim().to_string()
}

fn scoring(uri: &str) -> (SocketAddr, String) {
    let rest = uri.strip_prefix("http://").expect("http");
    let (authority, path) = rest.split_once('/').expect("path");
    (authority.parse().expect("addr"), format!("/{path}"))
}

/// Sends `bytes` as they are and returns the first line of the answer.
fn raw(addr: SocketAddr, bytes: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.write_all(bytes.as_bytes()).expect("write");
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.lines().next().unwrap_or_default().to_string()
}

fn metrics(d: &Daemon) -> String {
    http(d.metrics_addr(), "GET", "/metrics", &[], "").expect("metrics").body
}

/// The value of the first series whose line contains every part.
fn series(text: &str, parts: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#') && parts.iter().all(|p| l.contains(p)))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn traffic_and_mirror_follow_endpoint_updates_and_the_metrics_count_them() {
    require_test_image();
    let d = Daemon::start(MOAT);
    d.cli("online-endpoint create -n route-ep -f examples/model-1/endpoint.yml").ok();
    deployment(&d, "route-ep", "blue");
    deployment(&d, "route-ep", "green");
    let key = tsv(&d, "online-endpoint get-credentials -n route-ep --query primaryKey");
    let (addr, path) = scoring(&tsv(&d, "online-endpoint show -n route-ep --query scoring_uri"));
    let auth = format!("Bearer {key}");
    let score = |headers: &[(&str, &str)]| {
        let mut all = vec![("Authorization", auth.as_str())];
        all.extend_from_slice(headers);
        http(addr, "POST", &path, &all, "{}").expect("score")
    };
    assert_eq!(score(&[]).status, 404, "no traffic yet");

    let view: Value = serde_json::from_str(
        &d.cli("online-endpoint update -n route-ep --traffic blue=50,green=50").ok().stdout,
    )
    .expect("json");
    assert_eq!(view["traffic"], serde_json::json!({"blue": 50, "green": 50}));
    let green = (0..200).filter(|_| score(&[]).header("azureml-model-deployment") == Some("green")).count();
    // Binomial(200, 0.5): standard deviation 7; five deviations either side.
    assert!((65..=135).contains(&green), "green took {green} of 200 at 50 %");

    for (words, why) in [
        ("--traffic blue=50,green=60", "add up to 110"),
        ("--traffic blue=100 --mirror-traffic green=10", ""),
        ("--traffic blue=50,green=50 --mirror-traffic green=10", "must take none"),
        ("--traffic blue=100 --mirror-traffic green=60", "at most 50 percent"),
        ("--traffic red=100", "deployment red not found"),
    ] {
        let run = d.cli(&format!("online-endpoint update -n route-ep {words}"));
        if why.is_empty() {
            run.ok();
        } else {
            assert_eq!(run.code, 1, "{words}: {run:?}");
            assert!(run.stderr.contains(why), "{words}: {}", run.stderr);
        }
    }
    let shown: Value =
        serde_json::from_str(&d.cli("online-endpoint show -n route-ep").ok().stdout).expect("json");
    assert_eq!(shown["traffic"], serde_json::json!({"blue": 100}));
    assert_eq!(shown["mirror_traffic"], serde_json::json!({"green": 10}));

    d.cli("online-endpoint update -n route-ep --mirror-traffic green=50").ok();
    for _ in 0..40 {
        let r = score(&[]);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("azureml-model-deployment"), Some("blue"), "a mirror never answers");
    }
    // Targeted requests reach a deployment at 0 % and are never mirrored.
    assert_eq!(
        score(&[("azureml-model-deployment", "green")]).header("azureml-model-deployment"),
        Some("green")
    );
    // Requests hyper answers itself are counted and logged like any other.
    let big = "x".repeat(80 * 1024);
    assert_eq!(http(addr, "POST", &path, &[("X-Big", &big)], "{}").expect("431").status, 431);
    assert_eq!(raw(addr, "NOT A REQUEST\r\n\r\n").split(' ').nth(1), Some("400"));

    let mirrored =
        |text: &str| series(text, &["moat_mirror_requests_total", "deployment=\"green\"", "result=\"sent\""]);
    // Copies finish off the request path: wait for the first few to be counted.
    let text = wait_until(Duration::from_secs(10), "mirror copies counted", || {
        let text = metrics(&d);
        if mirrored(&text) >= 5.0 { Ok(text) } else { Err(text) }
    });
    let sent = mirrored(&text);
    assert!((5.0..=40.0).contains(&sent), "about half of 40 requests mirrored, got {sent}\n{text}");
    for code in ["431", "400"] {
        assert!(
            series(&text, &["moat_requests_total", &format!("code=\"{code}\"")]) >= 1.0,
            "{code}: {text}"
        );
        let logged = d
            .log()
            .lines()
            .any(|l| l.contains(&format!("\"status\":{code},")) && l.contains("\"request_id\""));
        assert!(logged, "an access line for the {code}");
    }
    let ok = series(&text, &["moat_requests_total", "deployment=\"blue\"", "code=\"200\""]);
    assert!(ok >= 40.0, "{text}");
    assert!(series(&text, &["moat_requests_total", "code=\"404\""]) >= 1.0, "{text}");
    for histogram in ["moat_request_duration_seconds", "moat_upstream_duration_seconds"] {
        let blue = |part: &str| series(&text, &[&format!("{histogram}{part}"), "deployment=\"blue\""]);
        assert_eq!(blue("_count{"), ok, "every blue answer timed: {text}");
        assert_eq!(series(&text, &[&format!("{histogram}_bucket{{"), "blue", "le=\"+Inf\""]), ok, "{text}");
        assert!(blue("_sum{") > 0.0, "{text}");
    }
    assert!(text.contains("moat_requests_in_flight{"), "{text}");
    assert!(text.contains("moat_queue_depth{"), "{text}");
    assert!(
        text.contains(&format!("moat_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    for direction in ["in", "out"] {
        let bytes = series(
            &text,
            &["moat_scoring_bytes_total{", "endpoint=\"route-ep\"", &format!("direction=\"{direction}\"")],
        );
        assert!(bytes > 0.0, "{direction}: {text}");
    }
    assert!(text.contains("moat_open_connections{listener=\"http\"}"), "{text}");
    // Azure ML's capacity and utilization, per deployment and instance, from Docker's stats.
    let text = wait_until(Duration::from_secs(20), "container usage sampled", || {
        let text = metrics(&d);
        let memory =
            series(&text, &["moat_container_memory_bytes{", "deployment=\"blue\"", "instance=\"blue-"]);
        if memory > 0.0 { Ok(text) } else { Err(text) }
    });
    assert_eq!(series(&text, &["moat_deployment_capacity{", "deployment=\"blue\""]), 1.0, "{text}");
    assert_eq!(series(&text, &["moat_deployment_ready_instances{", "deployment=\"blue\""]), 1.0, "{text}");
    assert!(text.contains("moat_container_cpu_cores{"), "{text}");
    assert!(series(&text, &["moat_container_memory_limit_bytes{", "deployment=\"blue\""]) > 0.0, "{text}");
    // Every series says what it counts.
    for name in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next()) {
        let help = text.lines().find_map(|l| l.strip_prefix(&format!("# HELP {name} ")));
        assert!(help.is_some_and(|h| h.len() > 20), "no # HELP for {name}:\n{text}");
    }

    // Nothing a user can read holds a key: not the log, not the metrics, not an error body.
    let wrong =
        http(addr, "POST", &path, &[("Authorization", &format!("Bearer {key}x"))], "{}").expect("score");
    assert_eq!(wrong.status, 401);
    let secondary = tsv(&d, "online-endpoint get-credentials -n route-ep --query secondaryKey");
    for place in [d.log(), metrics(&d), wrong.body] {
        assert!(!place.contains(&key) && !place.contains(&secondary), "a key leaked into: {place}");
    }
}

#[test]
fn an_aml_token_endpoint_scores_with_the_token_get_credentials_gives() {
    require_test_image();
    let d = Daemon::start(MOAT);
    let file = d.home.join("aml.yml");
    std::fs::write(&file, "name: aml-ep\nauth_mode: aml_token\n").expect("spec");
    d.cli(&format!("online-endpoint create -f {}", file.display())).ok();
    deployment(&d, "aml-ep", "blue");
    d.cli("online-endpoint update -n aml-ep --traffic blue=100").ok();

    let creds: Value =
        serde_json::from_str(&d.cli("online-endpoint get-credentials -n aml-ep").ok().stdout).expect("json");
    assert_eq!(creds["tokenType"], "Bearer");
    let (expiry, refresh) = (
        creds["expiryTimeUtc"].as_u64().expect("expiry"),
        creds["refreshAfterTimeUtc"].as_u64().expect("refresh"),
    );
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    assert!(refresh < expiry && expiry > now + 3000 && expiry <= now + 3601, "{creds}");
    let token = creds["accessToken"].as_str().expect("token").to_string();

    let (addr, path) = scoring(&tsv(&d, "online-endpoint show -n aml-ep --query scoring_uri"));
    let ok =
        http(addr, "POST", &path, &[("Authorization", &format!("Bearer {token}"))], "{}").expect("score");
    assert_eq!(ok.status, 200, "{}", ok.body);
    let forged = format!("{}x", &token[..token.len() - 1]);
    assert_eq!(
        http(addr, "POST", &path, &[("Authorization", &format!("Bearer {forged}"))], "{}")
            .expect("score")
            .status,
        401
    );
    d.cli("online-endpoint invoke -n aml-ep --request-file examples/model-1/sample-request.json").ok();
    let run = d.cli("online-endpoint regenerate-keys -n aml-ep --key-type primary");
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("uses tokens, not keys"), "{}", run.stderr);
    assert!(!d.log().contains(&token), "a token in the log");
}

#[test]
fn with_tls_on_the_scoring_uri_is_https_and_invoke_trusts_ssl_cert_file() {
    require_test_image();
    let dir = moat_test_support::TempDir::new("moat-tls-e2e");
    let (cert, key) =
        moat_test_support::self_signed_certificate(dir.path(), "moat-test", "DNS:localhost,IP:127.0.0.1");
    let config = format!("tls: {{listen: 127.0.0.1:0, cert: {}, key: {}}}\n", cert.display(), key.display());
    let d = Daemon::start_with_config(MOAT, &config);
    d.cli("online-endpoint create -n tls-ep -f examples/model-1/endpoint.yml").ok();
    deployment(&d, "tls-ep", "blue");
    d.cli("online-endpoint update -n tls-ep --traffic blue=100").ok();
    let uri = tsv(&d, "online-endpoint show -n tls-ep --query scoring_uri");
    assert!(uri.starts_with("https://127.0.0.1:") && uri.ends_with("/endpoints/tls-ep/score"), "{uri}");

    let invoke = |home: &std::path::Path, trust: Option<&std::path::Path>| {
        let mut cmd = std::process::Command::new(MOAT);
        cmd.arg("--home").arg(home).current_dir(moat_test_support::repo_root());
        cmd.args([
            "online-endpoint",
            "invoke",
            "-n",
            "tls-ep",
            "--request-file",
            "examples/model-1/sample-request.json",
        ]);
        match trust {
            Some(file) => cmd.env("SSL_CERT_FILE", file),
            None => cmd.env_remove("SSL_CERT_FILE"),
        };
        cmd.output().expect("moat")
    };
    let trusted = invoke(&d.home, Some(&cert));
    assert!(trusted.status.success(), "{}", String::from_utf8_lossy(&trusted.stderr));
    assert!(String::from_utf8_lossy(&trusted.stdout).contains("\"version\":\"blue\""));
    let untrusted = invoke(&d.home, None);
    assert_eq!(untrusted.status.code(), Some(1), "an unknown certificate is not trusted");

    // serve --upgrade takes the TLS listener over too, with its certificate.
    let mut d = d;
    let _new = moat_test_support::Killed(d.upgrade_command("127.0.0.1:0").spawn().expect("serve --upgrade"));
    assert_eq!(d.wait_exit(), Some(0));
    let after = invoke(&d.home, Some(&cert));
    assert!(after.status.success(), "after the upgrade: {}", String::from_utf8_lossy(&after.stderr));
}

/// SIGTERM drains: `/readyz` says 503 at once on every listener while scoring still answers
/// for `shutdown_delay_s`, so a balancer takes the node out before it stops accepting; then
/// the listeners close and what is in flight (a request sent during the delay) is answered.
#[test]
fn sigterm_drains_readyz_first_then_stops_accepting_and_finishes_in_flight_requests() {
    require_test_image();
    let mut d = Daemon::start_with_config(MOAT, "shutdown_delay_s: 3\n");
    d.cli("online-endpoint create -n drain-ep -f examples/model-1/endpoint.yml").ok();
    deployment(&d, "drain-ep", "blue");
    d.cli("online-endpoint update -n drain-ep --traffic blue=100").ok();
    let key = tsv(&d, "online-endpoint get-credentials -n drain-ep --query primaryKey");
    let (addr, path) = scoring(&tsv(&d, "online-endpoint show -n drain-ep --query scoring_uri"));
    let auth = format!("Bearer {key}");
    let score = |body: &str| http(addr, "POST", &path, &[("Authorization", &auth)], body);
    let listeners = [addr, d.metrics_addr()];
    for at in listeners {
        assert_eq!(http(at, "GET", "/readyz", &[], "").expect("readyz").status, 200);
    }

    d.signal("TERM");
    for at in listeners {
        let unready = wait_until(Duration::from_secs(2), "readyz 503 on SIGTERM", || {
            let r = http(at, "GET", "/readyz", &[], "").map_err(|e| e.to_string())?;
            if r.status == 503 { Ok(r) } else { Err(format!("{} {}", r.status, r.body)) }
        });
        assert_eq!(unready.body, "not ready: draining\n");
    }
    // Within the delay: new connections are still accepted and scored.
    assert_eq!(score("{}").expect("scored while draining").status, 200);
    let slow = std::thread::scope(|s| {
        let slow = s.spawn(|| score(r#"{"delay_ms": 4000}"#));
        wait_until(Duration::from_secs(10), "the listener to close", || {
            match std::net::TcpStream::connect(addr) {
                Err(_) => Ok(()),
                Ok(_) => Err("still accepting".to_string()),
            }
        });
        slow.join().expect("client")
    });
    let slow = slow.expect("the request in flight when accepting stopped is answered");
    assert_eq!(slow.status, 200, "{}", slow.body);
    assert_eq!(d.wait_exit(), Some(0));
}
