//! Many nodes, one desired state: nodes of one fleet on a real three-member etcd cluster.
//! Each case prints its numbers.

#[path = "fleet/mod.rs"]
mod harness;

use std::time::{Duration, Instant};

use harness::{Fleet, admin_get, score, scoring_endpoint, summary, time_until, tsv};
use moat_test_support::{EtcdCluster, Load, http, require_test_image, wait_until};
use serde_json::Value;

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn a_change_made_on_any_node_is_applied_on_every_node_within_a_second() {
    require_test_image();
    let f = Fleet::start(3);
    let key = scoring_endpoint(&f, 0, "conv-ep");
    // Every node runs its own instance and routes to it.
    for node in &f.nodes {
        wait_until(Duration::from_secs(30), "the deployment up on every node", || {
            match score(node, "conv-ep", &key) {
                200 => Ok(()),
                s => Err(s.to_string()),
            }
        });
    }
    // A second deployment at 0 %, up on every node, for the traffic switches.
    let green = f.node(0).home.join("conv-ep-green.yml");
    std::fs::write(&green, moat_test_support::scorer_deployment("conv-ep", "green", 1)).expect("spec");
    f.node(0).cli(&format!("online-deployment create -e conv-ep -f {}", green.display())).ok();
    let scoring: Vec<_> = f.nodes.iter().map(|n| n.scoring_addr()).collect();
    let (mut creates, mut traffic, mut keys) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..20 {
        let name = format!("conv-{i}");
        f.node(i % 3).cli(&format!("online-endpoint create -n {name} -f examples/model-1/endpoint.yml")).ok();
        let t = Instant::now();
        for node in &f.nodes {
            time_until(SECOND, "a new endpoint seen", || {
                admin_get(node, &format!("/v1/endpoints/{name}")).is_some()
            });
        }
        creates.push(t.elapsed());

        // The live traffic switches between the two: every node's next answer comes from it.
        let (to, from) = if i % 2 == 0 { ("green", "blue") } else { ("blue", "green") };
        f.node(i % 3).cli(&format!("online-endpoint update -n conv-ep --traffic {to}=100,{from}=0")).ok();
        let t = Instant::now();
        for addr in &scoring {
            time_until(SECOND, "the traffic switch seen", || {
                harness::answered_by(*addr, "conv-ep", &key).as_deref() == Some(to)
            });
        }
        traffic.push(t.elapsed());
    }
    let mut old = key.clone();
    for i in 0..20 {
        f.node(i % 3).cli("online-endpoint regenerate-keys -n conv-ep --key-type primary").ok();
        let t = Instant::now();
        for addr in &scoring {
            time_until(SECOND, "the old key refused", || harness::score_at(*addr, "conv-ep", &old) == 401);
        }
        keys.push(t.elapsed());
        old = tsv(f.node(0), "online-endpoint get-credentials -n conv-ep --query primaryKey");
        for addr in &scoring {
            assert_eq!(harness::score_at(*addr, "conv-ep", &old), 200, "the new key scores everywhere");
        }
    }
    for (what, times) in [("create", creates), ("traffic switch", traffic), ("key regeneration", keys)] {
        let (p50, max) = summary(times);
        println!("convergence of a {what} on 3 nodes over 20 changes: p50 {p50:.1} ms, max {max:.1} ms");
        assert!(max < 1000.0, "{what}: {max} ms");
    }
    let status: Value = serde_json::from_str(&f.node(1).cli("fleet status").ok().stdout).expect("json");
    assert_eq!(status["name"], f.name.as_str());
    assert_eq!(status["nodes"].as_array().map(Vec::len), Some(3), "{status}");
    let view = admin_get(f.node(2), "/v1/endpoints/conv-ep/deployments/blue").expect("view");
    assert_eq!(view["provisioning_state"], "Succeeded");
    let nodes = view["nodes"].as_array().expect("nodes");
    assert!(nodes.len() == 3 && nodes.iter().all(|n| n["ready_instances"] == 1), "{view}");
    let traffic = admin_get(f.node(1), "/v1/endpoints/conv-ep").expect("endpoint")["traffic"].clone();
    assert_eq!(traffic, serde_json::json!({"blue": 100, "green": 0}), "the last switch, on every node");
    assert_eq!(view["instances"].as_array().map(Vec::len), Some(1), "instances are this node's");
}

#[test]
fn a_killed_etcd_leader_fails_no_request_and_writes_recover() {
    require_test_image();
    let mut f = Fleet::start(2);
    let key = scoring_endpoint(&f, 0, "lead-ep");
    let uri = tsv(f.node(1), "online-endpoint show -n lead-ep --query scoring_uri");
    wait_until(Duration::from_secs(30), "node 1 serving", || match score(f.node(1), "lead-ep", &key) {
        200 => Ok(()),
        s => Err(s.to_string()),
    });
    let load = Load::start(&uri, &key, 2);
    load.wait_for_answers(20);
    let leader = f.etcd.leader();
    f.etcd.kill(leader);
    let killed = Instant::now();
    let recovered = wait_until(Duration::from_secs(15), "a write after the leader died", || {
        let run = f.node(0).cli("online-endpoint update -n lead-ep --set tags.after=leader-loss");
        if run.code == 0 { Ok(killed.elapsed()) } else { Err(run.stderr) }
    });
    load.wait_for_answers(20);
    f.etcd.restart(leader);
    f.etcd.wait_healthy();
    load.wait_for_answers(20);
    let tally = load.finish();
    tally.assert_no_failures();
    println!(
        "leader killed under load: {} requests, none failed; writes went through again after {:.1} s",
        tally.ok,
        recovered.as_secs_f64()
    );
    time_until(SECOND * 2, "the write seen on node 1", || {
        admin_get(f.node(1), "/v1/endpoints/lead-ep").is_some_and(|v| v["tags"]["after"] == "leader-loss")
    });
}

#[test]
fn with_one_etcd_member_down_nodes_start_and_every_write_goes_through() {
    // The nodes are given all three members; the one that is down must cost nothing while
    // the other two answer (the client's channel picks a member per request).
    let mut etcd = EtcdCluster::start(3);
    etcd.kill(2);
    etcd.wait_healthy();
    let f = Fleet::on(etcd, 2, &[], String::new());
    for i in 0..12 {
        let node = f.node(i % 2);
        let run = node.cli(&format!("online-endpoint create -n down-{i} -f examples/model-1/endpoint.yml"));
        assert_eq!(run.code, 0, "write {i} with a member down: {run:?}");
    }
    time_until(SECOND * 2, "every write on every node", || {
        f.nodes
            .iter()
            .all(|node| (0..12).all(|i| admin_get(node, &format!("/v1/endpoints/down-{i}")).is_some()))
    });
}

#[test]
fn with_quorum_lost_writes_fail_clearly_serving_goes_on_and_recovery_converges() {
    require_test_image();
    let mut f = Fleet::start(2);
    let key = scoring_endpoint(&f, 0, "quorum-ep");
    for node in &f.nodes {
        wait_until(Duration::from_secs(30), "serving", || match score(node, "quorum-ep", &key) {
            200 => Ok(()),
            s => Err(s.to_string()),
        });
    }
    f.etcd.kill(0);
    f.etcd.kill(1);
    let t = Instant::now();
    let run = f.node(0).cli("online-endpoint update -n quorum-ep --set tags.lost=yes");
    let took = t.elapsed();
    assert_eq!(run.code, 1, "{run:?}");
    assert!(took < Duration::from_secs(5), "failed after {took:?}");
    let said = run.stderr.trim().lines().last().unwrap_or_default();
    assert!(
        said.contains("etcd")
            && (said.contains("nothing was changed") || said.contains("outcome is unknown")),
        "{said}"
    );
    println!("with quorum lost a write failed after {:.1} s: {said}", took.as_secs_f64());
    for node in &f.nodes {
        assert_eq!(score(node, "quorum-ep", &key), 200, "serving goes on from the last state");
    }
    // Reads answer from the node's copy, and say how stale it is once it is.
    let read = wait_until(Duration::from_secs(15), "a read that says it is stale", || {
        let run = f.node(1).cli("online-endpoint show -n quorum-ep");
        if run.code == 0 && run.stderr.contains("has not heard from etcd") {
            Ok(run)
        } else {
            Err(run.stderr)
        }
    });
    assert!(read.stdout.contains("quorum-ep"));
    let metrics = f.node(1).metrics_addr();
    let ready = move || http(metrics, "GET", "/readyz", &[], "").map_or(0, |r| r.status);
    wait_until(Duration::from_secs(10), "readyz 503 past max_staleness_s", || {
        if ready() == 503 { Ok(()) } else { Err(ready().to_string()) }
    });
    f.etcd.restart(0);
    f.etcd.restart(1);
    f.etcd.wait_healthy();
    let healed = Instant::now();
    wait_until(Duration::from_secs(15), "a write after recovery", || {
        let run = f.node(0).cli("online-endpoint update -n quorum-ep --set tags.lost=recovered");
        if run.code == 0 { Ok(()) } else { Err(run.stderr) }
    });
    for node in &f.nodes {
        // The node's watch reconnects with a backoff of at most 3 s.
        time_until(SECOND * 5, "the write seen", || {
            admin_get(node, "/v1/endpoints/quorum-ep").is_some_and(|v| v["tags"]["lost"] == "recovered")
        });
    }
    wait_until(Duration::from_secs(10), "ready again", || {
        if ready() == 200 { Ok(()) } else { Err(ready().to_string()) }
    });
    println!("after quorum came back, writes and convergence in {:.1} s", healed.elapsed().as_secs_f64());
}

#[test]
fn a_node_killed_and_started_again_adopts_its_containers_and_catches_up() {
    require_test_image();
    let mut f = Fleet::start(2);
    let key = scoring_endpoint(&f, 0, "heal-ep");
    let view = wait_until(Duration::from_secs(30), "node 1 ready", || {
        let v = admin_get(f.node(1), "/v1/endpoints/heal-ep/deployments/blue").ok_or("no view")?;
        if v["instances"][0]["ready"] == true { Ok(v) } else { Err(v.to_string()) }
    });
    let container = view["instances"][0]["container_id"].as_str().expect("id").to_string();
    f.nodes[1].kill9();
    f.node(0).cli("online-endpoint regenerate-keys -n heal-ep --key-type primary").ok();
    f.node(0).cli("online-endpoint create -n while-away -f examples/model-1/endpoint.yml").ok();
    let started = Instant::now();
    f.nodes[1].restart();
    assert!(admin_get(f.node(1), "/v1/endpoints/while-away").is_some(), "caught up before it says ready");
    let view = wait_until(Duration::from_secs(30), "adopted and ready", || {
        let v = admin_get(f.node(1), "/v1/endpoints/heal-ep/deployments/blue").ok_or("no view")?;
        if v["instances"][0]["ready"] == true { Ok(v) } else { Err(v.to_string()) }
    });
    assert_eq!(view["instances"][0]["container_id"], container.as_str(), "its container was adopted");
    assert_eq!(score(f.node(1), "heal-ep", &key), 401, "the key regenerated while it was down is gone");
    println!(
        "a killed node was back, caught up and serving its adopted container {:.1} s after it started",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn a_node_cut_off_from_etcd_serves_its_last_state_turns_unready_and_converges_when_healed() {
    require_test_image();
    let f = Fleet::start_with(2, &[1]);
    let key = scoring_endpoint(&f, 0, "cut-ep");
    wait_until(Duration::from_secs(30), "node 1 serving", || match score(f.node(1), "cut-ep", &key) {
        200 => Ok(()),
        s => Err(s.to_string()),
    });
    let ready = || http(f.node(1).scoring_addr(), "GET", "/readyz", &[], "").map_or(0, |r| r.status);
    assert_eq!(ready(), 200);
    f.cut(1);
    f.node(0).cli("online-endpoint regenerate-keys -n cut-ep --key-type primary").ok();
    let new = tsv(f.node(0), "online-endpoint get-credentials -n cut-ep --query primaryKey");
    let unready = time_until(Duration::from_secs(10), "readyz 503", || ready() == 503);
    assert_eq!(score(f.node(1), "cut-ep", &key), 200, "a node cut off serves its last state");
    f.heal(1);
    let healed = Instant::now();
    time_until(Duration::from_secs(15), "the new key on the healed node", || {
        score(f.node(1), "cut-ep", &new) == 200
    });
    let converged = healed.elapsed();
    assert_eq!(score(f.node(1), "cut-ep", &key), 401);
    time_until(Duration::from_secs(5), "ready again", || ready() == 200);
    println!(
        "cut off: readyz 503 after {:.1} s (max_staleness_s 2); healed: converged in {:.1} s",
        unready.as_secs_f64(),
        converged.as_secs_f64()
    );
}

#[test]
fn a_node_away_during_a_compaction_reads_everything_again_when_back() {
    let f = Fleet::start_with(2, &[1]);
    f.node(0).cli("online-endpoint create -n before-ep -f examples/model-1/endpoint.yml").ok();
    time_until(SECOND, "seen", || admin_get(f.node(1), "/v1/endpoints/before-ep").is_some());
    f.cut(1);
    for i in 0..30 {
        f.node(0).cli(&format!("online-endpoint create -n away-{i} -f examples/model-1/endpoint.yml")).ok();
    }
    f.node(0).cli("online-endpoint delete -n before-ep --yes").ok();
    let status: Value = serde_json::from_slice(&f.etcd.etcdctl(&["endpoint", "status", "-w", "json"]).stdout)
        .expect("status");
    let revision = status[0]["Status"]["header"]["revision"].as_u64().expect("revision");
    let compacted = f.etcd.etcdctl(&["compact", &revision.to_string()]);
    assert!(compacted.status.success(), "{}", String::from_utf8_lossy(&compacted.stderr));
    f.heal(1);
    let t = Instant::now();
    let names = |i: usize| -> Vec<String> {
        let list = admin_get(f.node(i), "/v1/endpoints").unwrap_or_default();
        list.as_array().into_iter().flatten().filter_map(|e| e["name"].as_str().map(String::from)).collect()
    };
    time_until(Duration::from_secs(15), "the same endpoints on both nodes", || names(1) == names(0));
    assert_eq!(names(1).len(), 30);
    assert!(f.node(1).log().contains("compacted the revision the watch resumes from"));
    println!(
        "after a compaction while away, the node read everything again in {:.1} s",
        t.elapsed().as_secs_f64()
    );
}

#[test]
fn fifty_concurrent_conflicting_updates_from_two_nodes_lose_none() {
    let f = Fleet::start(2);
    f.node(0).cli("online-endpoint create -n race-ep -f examples/model-1/endpoint.yml").ok();
    time_until(SECOND, "seen", || admin_get(f.node(1), "/v1/endpoints/race-ep").is_some());
    let started = Instant::now();
    let runs: Vec<_> = (0..50)
        .map(|i| {
            let (bin, home) = (f.node(i % 2).bin.clone(), f.node(i % 2).home.clone());
            std::thread::spawn(move || {
                let set = format!("tags.t{i}=v{i}");
                moat_test_support::run_moat(
                    &bin,
                    &home,
                    &["online-endpoint", "update", "-n", "race-ep", "--set", &set],
                )
            })
        })
        .collect();
    let results: Vec<_> = runs.into_iter().map(|r| r.join().expect("thread")).collect();
    let failed: Vec<_> = results.iter().filter(|r| r.code != 0).map(|r| r.stderr.clone()).collect();
    assert!(failed.is_empty(), "{failed:?}");
    for node in &f.nodes {
        time_until(SECOND, "every tag on every node", || {
            admin_get(node, "/v1/endpoints/race-ep")
                .is_some_and(|v| v["tags"].as_object().is_some_and(|t| t.len() == 50))
        });
    }
    println!(
        "50 concurrent updates of one endpoint from two nodes: all 50 kept, in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn no_secret_reaches_etcd_in_plaintext_and_an_undecodable_record_is_kept_not_deleted() {
    let f = Fleet::start(2);
    f.node(0).cli("online-endpoint create -n secret-ep -f examples/model-1/endpoint.yml").ok();
    let token = harness::tsv(f.node(1), "online-endpoint get-credentials -n secret-ep --query primaryKey");
    let secondary = tsv(f.node(0), "online-endpoint get-credentials -n secret-ep --query secondaryKey");
    let file = f.node(0).home.join("env.yml");
    let marker = format!("s3cr3t-{}", moat_test_support::unique_id());
    std::fs::write(
        &file,
        moat_test_support::scorer_deployment("secret-ep", "blue", 1)
            .replace("VERSION: blue", &format!("API_TOKEN: {marker}")),
    )
    .expect("spec");
    f.node(0).cli(&format!("online-deployment create -e secret-ep -f {} --no-wait", file.display())).ok();
    let dump = f.etcd.etcdctl(&["get", "--prefix", "/moat/"]);
    let values = String::from_utf8_lossy(&dump.stdout).into_owned();
    assert!(values.contains("secret-ep") && values.contains("moat_sealed"), "{values}");
    for secret in [&token, &secondary, &marker] {
        assert!(!values.contains(secret.as_str()), "a secret in etcd's values");
        for dir in f.etcd.data_dirs() {
            assert!(!contains_bytes(&dir, secret.as_bytes()), "a secret in {}", dir.display());
        }
    }
    // A record a node cannot decode (a newer moat wrote it) is kept, not read as deleted.
    let key = format!("/moat/{}/endpoints/secret-ep", f.name);
    let put = f.etcd.etcdctl(&["put", &key, r#"{"spec": {"name": "secret-ep", "from_the_future": true}}"#]);
    assert!(put.status.success());
    let status = wait_until(Duration::from_secs(5), "the record listed as undecodable", || {
        let s = admin_get(f.node(1), "/v1/fleet").ok_or("no status")?;
        if s["undecodable"] == serde_json::json!(["endpoints/secret-ep"]) {
            Ok(s)
        } else {
            Err(s.to_string())
        }
    });
    assert!(admin_get(f.node(1), "/v1/endpoints/secret-ep").is_some(), "{status}");
    println!(
        "no plaintext secret in etcd's values or data folders; an undecodable record kept: {}",
        status["undecodable"]
    );
}

/// Whether any file under `dir` holds `needle` (grep reads the data files fast).
fn contains_bytes(dir: &std::path::Path, needle: &[u8]) -> bool {
    let found = std::process::Command::new("grep")
        .args(["-r", "-q", "-F", "-a", "--"])
        .arg(String::from_utf8_lossy(needle).as_ref())
        .arg(dir)
        .status()
        .expect("grep");
    found.success()
}

#[test]
fn a_change_over_etcds_request_size_limit_is_refused_clearly_and_changes_nothing() {
    let f = Fleet::start(1);
    f.node(0).cli("online-endpoint create -n big-ep -f examples/model-1/endpoint.yml").ok();
    let file = f.node(0).home.join("big.yml");
    std::fs::write(&file, format!("name: big-ep\ndescription: {}\n", "x".repeat(2 << 20))).expect("spec");
    let run = f.node(0).cli(&format!("online-endpoint update -f {}", file.display()));
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("more than etcd takes in one request"), "{}", run.stderr);
    let view = admin_get(f.node(0), "/v1/endpoints/big-ep").expect("view");
    assert!(view["description"].is_null(), "nothing changed: {}", view["description"]);
    println!("a 2 MiB change: {}", run.stderr.trim());
}

#[test]
fn a_node_with_another_fleet_key_or_a_readable_key_file_refuses_to_start_saying_so() {
    let f = Fleet::start(1);
    let dir = moat_test_support::TempDir::new("moat-other-key");
    let other = dir.path().join("other.key");
    std::fs::write(&other, "ab".repeat(32)).expect("key");
    let serve = |mode: u32| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&other, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let home = dir.path().join(format!("home-{mode:o}"));
        std::fs::create_dir_all(&home).expect("home");
        std::fs::write(home.join("config.yaml"), f.config_with_key(&f.etcd.endpoints(), &other))
            .expect("config");
        std::process::Command::new(harness::MOAT)
            .args(["serve", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--home"])
            .arg(&home)
            .output()
            .expect("moat serve")
    };
    let wrong = serve(0o600);
    assert_eq!(wrong.status.code(), Some(1));
    let said = String::from_utf8_lossy(&wrong.stderr);
    assert!(said.contains("fleet key_file is not the fleet's"), "{said}");
    let readable = serve(0o644);
    assert_eq!(readable.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&readable.stderr).contains("can be read by others"));
    // Node 0 itself may be missing for a moment (its watch of etcd reconnecting under load):
    // wait until the list has it, then nobody else may be in it.
    let nodes = wait_until(Duration::from_secs(10), "node 0 in fleet status", || {
        let nodes = f.node(0).cli("fleet status --query nodes[].node -o tsv").ok().stdout;
        if nodes.trim().is_empty() { Err("no node listed".to_string()) } else { Ok(nodes) }
    });
    assert_eq!(nodes.lines().count(), 1, "it never joined: {nodes}");
}

#[test]
fn a_fleet_reaches_etcd_over_tls_with_a_client_certificate() {
    let dir = moat_test_support::TempDir::new("moat-etcd-tls");
    let certs = moat_test_support::ca_signed_certificates(dir.path());
    let tls = format!(
        "    ca_file: {}\n    cert_file: {}\n    key_file: {}\n",
        certs.ca.display(),
        certs.client_cert.display(),
        certs.client_key.display()
    );
    let f = Fleet::on(moat_test_support::EtcdCluster::start_tls(certs), 2, &[], tls);
    assert!(f.etcd.endpoints()[0].starts_with("https://"));
    f.node(0).cli("online-endpoint create -n tls-ep -f examples/model-1/endpoint.yml").ok();
    time_until(SECOND, "seen on the other node", || admin_get(f.node(1), "/v1/endpoints/tls-ep").is_some());
    // A node's view of the fleet can be partial for a moment while its etcd watch reconnects
    // (seen once under load: a member closed the first watch's connection, another refused the
    // next): both nodes must come to be listed, not at one given instant.
    let status = wait_until(Duration::from_secs(15), "both nodes in fleet status", || {
        let status: Value = serde_json::from_str(&f.node(1).cli("fleet status").ok().stdout).expect("json");
        match status["nodes"].as_array().map(Vec::len) {
            Some(2) => Ok(status),
            _ => Err(status.to_string()),
        }
    });
    println!("a fleet of two nodes on etcd over TLS with client certificates: {}", status["revision"]);
}

/// The fleet's convergence, as BENCHMARKS.md records it: 100 changes made on the three nodes in
/// turn, each timed until every node has it. `cargo nextest run -p moat --test fleet
/// --run-ignored only convergence`.
#[test]
#[ignore]
fn convergence_of_100_changes_across_three_nodes() {
    let f = Fleet::start(3);
    f.node(0).cli("online-endpoint create -n bench-ep -f examples/model-1/endpoint.yml").ok();
    let mut times = Vec::new();
    for i in 0..100 {
        f.node(i % 3).cli(&format!("online-endpoint update -n bench-ep --set tags.round=r{i}")).ok();
        let t = Instant::now();
        for node in &f.nodes {
            time_until(SECOND, "seen", || {
                admin_get(node, "/v1/endpoints/bench-ep")
                    .is_some_and(|v| v["tags"]["round"] == format!("r{i}").as_str())
            });
        }
        times.push(t.elapsed());
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "convergence of 100 changes on 3 nodes (from the command's return until every node has it): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(times[49]),
        ms(times[98]),
        ms(times[99])
    );
}

/// `serve --upgrade` on a fleet node: the new process keeps the node's place in the fleet
/// (its record outlives the old process's lease), scores, and follows changes made on
/// another node.
#[test]
fn a_fleet_node_upgraded_in_place_keeps_its_record_and_follows_the_fleet() {
    require_test_image();
    let mut f = Fleet::start(2);
    let key = scoring_endpoint(&f, 0, "upf-ep");
    wait_until(Duration::from_secs(30), "node 1 scores", || match score(f.node(1), "upf-ep", &key) {
        200 => Ok(()),
        s => Err(s.to_string()),
    });
    let me = f.node(1).home_id();
    let listed = |f: &Fleet| {
        f.node(0).cli("fleet status --query nodes[].node -o tsv").ok().stdout.lines().any(|n| n == me)
    };
    assert!(listed(&f));
    let _new = moat_test_support::Killed(f.node(1).upgrade_command("127.0.0.1:0").spawn().expect("upgrade"));
    assert_eq!(f.nodes[1].wait_exit(), Some(0), "the old process hands over and exits");
    assert_eq!(score(f.node(1), "upf-ep", &key), 200);
    // Past the old process's lease (5 s): the record is the new process's, kept alive.
    let until = Instant::now() + Duration::from_secs(7);
    while Instant::now() < until {
        assert!(listed(&f), "node 1 left the fleet's live nodes after its upgrade");
        std::thread::sleep(Duration::from_millis(500));
    }
    // A change made on node 0 reaches the upgraded node.
    f.node(0).cli("online-endpoint update -n upf-ep --traffic blue=0").ok();
    wait_until(Duration::from_secs(5), "the traffic change on node 1", || {
        match score(f.node(1), "upf-ep", &key) {
            404 => Ok(()),
            s => Err(s.to_string()),
        }
    });
}
