//! The command line's contract: exit codes, one clear error line, stdout for data only, and
//! a refused command changes nothing. Also the daemon's own life: one per home, ready when
//! its socket appears, clean exit on SIGTERM.

use moat_test_support::{Daemon, Run, http, http_unix, run_moat, wait_until};

const MOAT: &str = env!("CARGO_BIN_EXE_moat");
const ENDPOINT: &str = "-f examples/model-1/endpoint.yml";
const BLUE: &str = "-f examples/model-1/blue-deployment.yml";

fn write(d: &Daemon, name: &str, text: &str) -> String {
    let path = d.home.join(name);
    std::fs::write(&path, text).expect("write spec");
    path.display().to_string()
}

/// The error is one line on stderr, nothing on stdout, and the expected code.
fn refused(run: Run, code: i32, needle: &str) {
    assert_eq!(run.code, code, "{run:?}");
    assert!(run.stdout.is_empty(), "stdout carries only data: {run:?}");
    assert_eq!(run.stderr.trim_end().lines().count(), 1, "one line: {}", run.stderr);
    assert!(run.stderr.contains(needle), "expected {needle:?} in {}", run.stderr);
}

/// clap adds usage lines after its error; the contract's one line is the first.
fn first_line(mut run: Run) -> Run {
    run.stderr = run.stderr.lines().next().unwrap_or_default().to_string();
    run
}

#[test]
fn bad_files_names_and_words_are_refused_and_change_nothing() {
    let d = Daemon::start(MOAT);
    d.cli(&format!("online-endpoint create -n good-ep {ENDPOINT}")).ok();
    let before = d.store_bytes();

    let syntax = write(&d, "syntax.yml", "name: x\n  auth_mode: [key\n");
    refused(d.cli(&format!("online-endpoint create -f {syntax}")), 2, "syntax.yml:2:");
    let typo = write(&d, "typo.yml", "name: typo-ep\nauth_mod: key\n");
    let run = d.cli(&format!("online-endpoint create -f {typo}"));
    assert!(run.stderr.contains("did you mean `auth_mode`?"), "{}", run.stderr);
    refused(run, 2, "typo.yml:2:1: field `auth_mod`: unknown field `auth_mod`");
    let wrong_type = write(&d, "type.yml", "name: blue\nendpoint_name: good-ep\ninstance_count: many\n");
    refused(
        d.cli(&format!("online-deployment create -f {wrong_type}")),
        2,
        "type.yml:3:17: field `instance_count`: invalid type",
    );
    refused(
        d.cli(&format!("online-endpoint create -n 1-bad {ENDPOINT}")),
        1,
        "endpoint name \"1-bad\" is invalid",
    );
    refused(d.cli(&format!("online-endpoint create -n ab {ENDPOINT}")), 1, "3-32 characters");
    refused(
        d.cli(&format!("online-deployment create -n blue -e good-ep {BLUE} --set instance_count")),
        2,
        "--set instance_count: expected KEY=VALUE",
    );
    refused(
        d.cli(&format!("online-deployment create -n blue -e good-ep {BLUE} --set instance_count=two")),
        2,
        "--set instance_count=two: invalid type",
    );
    refused(
        d.cli(&format!("online-deployment create -n blue -e no-such-ep {BLUE}")),
        3,
        "endpoint no-such-ep not found",
    );
    refused(d.cli("online-endpoint show -n no-such-ep"), 3, "endpoint no-such-ep not found");
    refused(d.cli("online-endpoint get-credentials -n no-such-ep"), 3, "endpoint no-such-ep not found");
    refused(d.cli("online-endpoint delete -n no-such-ep --yes"), 3, "endpoint no-such-ep not found");
    refused(d.cli("online-deployment show -n blue -e no-such-ep"), 3, "not found");
    refused(d.cli(&format!("online-endpoint create -n good-ep {ENDPOINT}")), 1, "already exists");
    refused(first_line(d.cli("online-endpoint show --nme x")), 2, "--nme");
    refused(d.cli("online-endpoint show -n good-ep --query [?"), 2, "--query");

    refused(
        d.cli(&format!(
            "online-deployment create -n blue -e good-ep {BLUE} --set private_network_connection=true egress_public_network_access=enabled"
        )),
        1,
        "contradicts",
    );
    let aad = write(&d, "aad.yml", "name: token-ep\nauth_mode: aad_token\n");
    refused(d.cli(&format!("online-endpoint create -f {aad}")), 1, "needs auth.aad");
    refused(d.cli("online-endpoint update -n good-ep --traffic blue=100"), 1, "deployment blue not found");
    refused(d.cli("online-endpoint update -n good-ep --traffic blue:100"), 2, "expected DEPLOYMENT=PERCENT");

    refused(d.cli("online-deployment get-logs -n blue -e good-ep"), 3, "deployment blue not found");
    refused(d.cli("online-deployment delete -n blue -e good-ep --yes"), 3, "deployment blue not found");
    let conda = write(
        &d,
        "conda.yml",
        "name: blue\nendpoint_name: good-ep\nenvironment:\n  image: x\n  conda_file: env.yml\ninstance_type: Standard_F2s_v2\n",
    );
    refused(d.cli(&format!("online-deployment create -f {conda}")), 1, "conda_file is not supported");
    assert_eq!(d.store_bytes(), before, "a refused command changed the store");

    // Docker names join endpoint and deployment with '-': a pair that would collide is refused.
    d.cli(&format!("online-endpoint create -n abc-def {ENDPOINT}")).ok();
    d.cli(&format!("online-endpoint create -n abc {ENDPOINT}")).ok();
    d.cli(&format!("online-deployment create -n ghi -e abc-def {BLUE} --no-wait")).ok();
    refused(
        d.cli(&format!("online-deployment create -n def-ghi -e abc {BLUE}")),
        1,
        "would share its container names with deployment ghi on endpoint abc-def",
    );
    let list: serde_json::Value =
        serde_json::from_str(&d.cli("online-endpoint list").ok().stdout).expect("json");
    assert_eq!(list.as_array().map(Vec::len), Some(3));
}

#[test]
fn commands_without_a_daemon_say_so_and_validate_works_offline() {
    let dir = moat_test_support::TempDir::new("moat-nodaemon");
    let home = dir.path();
    let run = |line: &str| {
        let words: Vec<&str> = line.split_whitespace().collect();
        run_moat(std::path::Path::new(MOAT), home, &words)
    };
    let socket = home.join("admin.sock").display().to_string();
    refused(run("online-endpoint list"), 1, &format!("moat serve is not running (admin socket {socket})"));

    for file in [
        "examples/model-1/endpoint.yml",
        "examples/model-1/blue-deployment.yml",
        "examples/model-1/green-build-deployment.yml",
        "examples/workspace.yml",
    ] {
        let ok = run(&format!("validate -f {file}"));
        assert_eq!(ok.code, 0, "{file}: {ok:?}");
        assert!(
            serde_json::from_str::<serde_json::Value>(&ok.stdout).is_ok(),
            "{file} prints the validated spec"
        );
    }
    let shown = run("validate -f examples/model-1/blue-deployment.yml").ok().stdout;
    let shown: serde_json::Value = serde_json::from_str(&shown).expect("json");
    assert_eq!(shown["request_settings"]["request_timeout_ms"], 5000, "defaults are filled in");
}

#[test]
fn one_daemon_per_home_a_stale_socket_is_replaced_and_sigterm_exits_0() {
    let mut d = Daemon::start(MOAT);
    let second = std::process::Command::new(MOAT)
        .args(["serve", "--listen", "127.0.0.1:0", "--home"])
        .arg(&d.home)
        .output()
        .expect("second serve");
    assert_eq!(second.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&second.stderr).contains("already running"));
    assert!(std::os::unix::net::UnixStream::connect(d.socket()).is_ok(), "the first daemon still serves");

    // After a crash the socket file stays behind; the next start replaces it.
    d.kill9();
    assert!(d.socket().exists());
    d.restart();
    d.cli("online-endpoint list").ok();

    let mode = std::fs::metadata(d.socket())
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777);
    assert_eq!(mode.ok(), Some(0o600), "admin.sock is owner-only");
    // The daemon took every descriptor the hard limit allows.
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", d.pid().expect("pid"))).expect("limits");
    let files: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("open files")
        .split_whitespace()
        .collect();
    assert_eq!(files[3], files[4], "soft limit raised to the hard one: {limits}");
    assert_eq!(d.terminate(), Some(0));
    assert!(!d.socket().exists());
}

/// The home holds every key: a home others may write in, one of another user, or a store
/// that is a link, and the daemon does not start.
#[test]
fn a_home_others_could_tamper_with_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let serve = |home: &std::path::Path| {
        std::process::Command::new(MOAT)
            .args(["serve", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--home"])
            .arg(home)
            .output()
            .expect("serve")
    };
    let dir = moat_test_support::TempDir::new("moat-tamper");
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).expect("mkdir");
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let run = serve(&home);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("may be written by others (mode 777)") && stderr.contains("chmod 700"),
        "{stderr}"
    );

    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let chown = std::process::Command::new("chown").args(["65534"]).arg(&home).status();
    if chown.is_ok_and(|s| s.success()) {
        let run = serve(&home);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("belongs to uid 65534"), "{stderr}");
        let _ = std::process::Command::new("chown").arg(own_uid()).arg(&home).status();
    }

    let elsewhere = dir.path().join("elsewhere.json");
    std::fs::write(&elsewhere, "{}").expect("write");
    std::os::unix::fs::symlink(&elsewhere, home.join("store.json")).expect("link");
    let run = serve(&home);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("store.json"), "{stderr}");
}

/// This process's uid, for giving a folder back.
fn own_uid() -> String {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m).to_string())
        .unwrap_or_default()
}

#[test]
fn outputs_come_in_every_format() {
    let d = Daemon::start(MOAT);
    d.cli(&format!("online-endpoint create -n fmt-ep {ENDPOINT} --set tags.team=ml description=demo")).ok();
    let yaml = d.cli("online-endpoint show -n fmt-ep -o yaml").ok().stdout;
    assert!(yaml.contains("name: fmt-ep\n") && yaml.contains("  team: ml\n"), "{yaml}");
    let tsv = d.cli("online-endpoint list -o tsv --query [].[name,auth_mode]").ok().stdout;
    assert_eq!(tsv, "fmt-ep\tkey\n");
    let table =
        d.cli("online-endpoint list -o table --query [].{name:name,state:provisioning_state}").ok().stdout;
    assert!(table.starts_with("name    state\n"), "{table}");
    let creds = d.cli("online-endpoint get-credentials -n fmt-ep").ok().stdout;
    let creds: serde_json::Value = serde_json::from_str(&creds).expect("json");
    assert!(creds["primaryKey"].as_str().is_some_and(|k| k.len() >= 32) && creds["secondaryKey"].is_string());
    let store = std::fs::metadata(d.home.join("store.json")).expect("store");
    let mode = std::os::unix::fs::PermissionsExt::mode(&store.permissions()) & 0o777;
    assert_eq!(mode, 0o600, "the store holds keys: owner-only");
}

/// A change made to a valid spec.
type Edit = dyn Fn(&mut serde_json::Value);

/// A spec that reaches the daemon without the CLI (any program can write to `admin.sock`)
/// passes the same checks as `moat validate`, and a refused one changes nothing.
#[test]
fn the_daemon_checks_every_spec_it_receives_whatever_sent_it() {
    let d = Daemon::start(MOAT);
    d.cli(&format!("online-endpoint create -n good-ep {ENDPOINT}")).ok();
    let valid = d.cli(&format!("validate {BLUE} -o json")).ok().stdout;
    let valid: serde_json::Value = serde_json::from_str(&valid).expect("json");
    let before = d.store_bytes();
    let send = |method: &str, path: &str, body: &serde_json::Value| {
        let reply =
            http_unix(&d.socket(), method, path, &[("Content-Type", "application/json")], &body.to_string())
                .expect("admin socket");
        // A plain error answer, or the last line of a streamed one.
        let last = reply.body.trim_end().lines().last().unwrap_or_default().to_string();
        let v: serde_json::Value = serde_json::from_str(&last).unwrap_or_default();
        v["error"]["message"].as_str().or(v["message"].as_str()).unwrap_or(&reply.body).to_string()
    };
    let deployment = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut spec = valid.clone();
        spec["endpoint_name"] = "good-ep".into();
        edit(&mut spec);
        serde_json::json!({"spec": spec, "all_traffic": false, "wait": false})
    };
    #[rustfmt::skip]
    let cases: [(&str, &Edit, &str); 5] = [
        ("an unknown SKU", &|s| s["instance_type"] = "Standard_Huge".into(), "field `instance_type`: instance_type \"Standard_Huge\" is not a known SKU"),
        ("the Docker socket's folder", &|s| s["model"]["path"] = "/run".into(), "field `model.path`: /run is or holds the system folder /run"),
        ("a relative model path", &|s| s["model"]["path"] = "model".into(), "field `model.path`: model must be an existing absolute path"),
        ("a zero timeout", &|s| s["request_settings"]["request_timeout_ms"] = 0.into(), "field `request_settings.request_timeout_ms`: must be 1 to 180000"),
        ("a route without a slash", &|s| s["environment"]["inference_config"]["scoring_route"]["path"] = "score".into(), "field `environment.inference_config.scoring_route.path`: must start with '/'"),
    ];
    for (case, edit, expected) in cases {
        let answer = send("POST", "/v1/endpoints/good-ep/deployments", &deployment(edit));
        assert!(answer.contains(expected), "{case}: {answer}");
    }
    let bad_traffic = serde_json::json!({"name": "good-ep", "auth_mode": "key", "public_network_access": "enabled",
        "traffic": {"blue": 60}, "mirror_traffic": {}, "tags": {}});
    let answer = send("PUT", "/v1/endpoints/good-ep", &bad_traffic);
    assert!(answer.contains("field `traffic`: shares add up to 60"), "{answer}");
    let bad_workspace = serde_json::json!({"name": "mlw-demo", "public_network_access": "enabled",
        "private_endpoints": [{"name": "r", "kind": "key_vault", "fqdn": "bad name!", "aliases": [], "ips": ["10.0.1.4"], "ports": [443]}]});
    let answer = send("PUT", "/v1/workspace", &bad_workspace);
    assert!(answer.contains("field `private_endpoints[0].fqdn`"), "{answer}");
    let metadata = serde_json::json!({"name": "mlw-demo", "public_network_access": "enabled",
        "private_endpoints": [{"name": "r", "kind": "key_vault", "fqdn": "kv.vault.azure.net", "aliases": [], "ips": ["::ffff:169.254.169.254"], "ports": [80]}]});
    let answer = send("PUT", "/v1/workspace", &metadata);
    assert!(
        answer.contains("field `private_endpoints[0].ips[0]`: ::ffff:169.254.169.254 is link-local"),
        "{answer}"
    );
    assert_eq!(d.store_bytes(), before, "nothing refused was stored");
}

/// CONTRACT.md's mount rule, held by the daemon for every create and update: no system folder,
/// not the home, nothing outside `supervisor.model_roots`, a link judged by where it leads;
/// what passes is stored (and mounted) as the resolved path.
#[test]
fn mounts_are_held_to_the_system_folders_the_home_and_the_model_roots() {
    let roots = moat_test_support::TempDir::new("moat-model-roots");
    let outside = moat_test_support::TempDir::new("moat-model-outside");
    let root = roots.path().canonicalize().expect("real");
    std::fs::create_dir_all(root.join("v1")).expect("mkdir");
    std::os::unix::fs::symlink(root.join("v1"), root.join("current")).expect("link inside");
    std::os::unix::fs::symlink(outside.path(), root.join("escape")).expect("link out");
    let d = Daemon::start_with_config(MOAT, &format!("supervisor:\n  model_roots: [{}]\n", root.display()));
    d.cli(&format!("online-endpoint create -n mounts-ep {ENDPOINT}")).ok();
    let before = d.store_bytes();
    let create = |path: &std::path::Path| {
        d.cli(&format!(
            "online-deployment create -n blue -e mounts-ep {BLUE} --no-wait --set model.path={}",
            path.display()
        ))
    };
    let home = d.home.canonicalize().expect("home");
    for (path, expected) in [
        (std::path::PathBuf::from("/etc"), "model.path=/etc: /etc is or holds the system folder /etc"),
        (std::path::PathBuf::from("/root"), "is or holds the system folder /root"),
        (std::path::PathBuf::from("/proc/self"), "is inside /proc"),
        (home.clone(), "the moat home"),
        (home.join("keys"), "the moat home"),
        (outside.path().to_path_buf(), "outside supervisor.model_roots"),
        (root.join("escape"), "outside supervisor.model_roots"),
    ] {
        if !path.exists() {
            continue;
        }
        let run = create(&path);
        assert_ne!(run.code, 0, "{}: {run:?}", path.display());
        assert!(run.stderr.contains(expected), "{}: expected {expected:?} in {}", path.display(), run.stderr);
    }
    assert_eq!(d.store_bytes(), before, "nothing refused was stored");

    create(&root.join("current")).ok();
    let show: serde_json::Value =
        serde_json::from_str(&d.cli("online-deployment show -n blue -e mounts-ep").ok().stdout)
            .expect("json");
    assert_eq!(
        show["model"]["path"].as_str(),
        Some(root.join("v1").display().to_string().as_str()),
        "{show}"
    );
    let run = d.cli(&format!(
        "online-deployment update -n blue -e mounts-ep --no-wait --set model.path={}",
        home.display()
    ));
    assert!(run.code != 0 && run.stderr.contains("the moat home"), "an update is held to it too: {run:?}");
}

/// An aad_token endpoint's allowed principals (CONTRACT's stand-in for a role assignment) are
/// managed with `update --add-principal/--remove-principal`, shown by `show` (empty: nobody),
/// checked, and refused on other auth modes.
#[test]
fn allowed_principals_are_added_shown_and_removed_from_the_command_line() {
    let d = Daemon::start_with_config(
        MOAT,
        "auth:\n  aad: {issuer: https://login.example.test/t/v2.0, jwks_uri: http://127.0.0.1:9/keys}\n",
    );
    let aad = write(&d, "aad.yml", "name: aad-ep\nauth_mode: aad_token\n");
    d.cli(&format!("online-endpoint create -f {aad}")).ok();
    d.cli(&format!("online-endpoint create -n key-ep {ENDPOINT}")).ok();
    let principals = |name: &str| {
        let show: serde_json::Value =
            serde_json::from_str(&d.cli(&format!("online-endpoint show -n {name}")).ok().stdout)
                .expect("json");
        show["allowed_principals"].clone()
    };
    assert_eq!(
        principals("aad-ep"),
        serde_json::json!({"object_ids": [], "app_ids": [], "roles": []}),
        "nobody yet"
    );
    assert!(principals("key-ep").is_null(), "a key endpoint shows none");

    let oid = "6f1e3a52-5b0f-4d1e-9c59-0b8f6cd0a111";
    d.cli(&format!(
        "online-endpoint update -n aad-ep --add-principal object_id={oid} --add-principal role=Endpoint.Score --add-principal role=Endpoint.Score"
    ))
    .ok();
    assert_eq!(
        principals("aad-ep"),
        serde_json::json!({"object_ids": [oid], "app_ids": [], "roles": ["Endpoint.Score"]})
    );
    d.cli("online-endpoint update -n aad-ep --remove-principal role=Endpoint.Score").ok();
    assert_eq!(principals("aad-ep")["roles"], serde_json::json!([]));

    let before = d.store_bytes();
    refused(
        d.cli("online-endpoint update -n aad-ep --add-principal group=admins"),
        2,
        "--add-principal group=admins: expected object_id=ID, app_id=ID or role=NAME",
    );
    refused(
        d.cli("online-endpoint update -n aad-ep --add-principal app_id=not-a-guid"),
        1,
        "field `allowed_principals.app_ids[0]`",
    );
    refused(
        d.cli(&format!("online-endpoint update -n key-ep --add-principal object_id={oid}")),
        1,
        "applies to auth_mode aad_token only",
    );
    assert_eq!(d.store_bytes(), before, "a refused change changed nothing");
}

/// Balancers probe `/healthz` and `/readyz` on the scoring listener and on `metrics_listen`,
/// without a credential, whatever the access policy, and without filling the access log.
#[test]
fn health_and_readiness_answer_on_every_listener_without_an_access_line() {
    let d = Daemon::start(MOAT);
    d.cli("workspace update --public-network-access disabled").ok();
    let lines = |d: &Daemon| d.log().lines().filter(|l| l.contains("\"request_id\"")).count();
    let before = lines(&d);
    for addr in [d.scoring_addr(), d.metrics_addr()] {
        let ready = wait_until(std::time::Duration::from_secs(10), "ready", || {
            let r = http(addr, "GET", "/readyz", &[], "").map_err(|e| e.to_string())?;
            if r.status == 200 { Ok(r) } else { Err(format!("{}: {}", r.status, r.body)) }
        });
        assert_eq!(ready.body, "ready\n");
        let healthy = http(addr, "GET", "/healthz", &[], "").expect("healthz");
        assert_eq!((healthy.status, healthy.body.as_str()), (200, "ok\n"));
    }
    assert_eq!(lines(&d), before, "probes write no access line");
}

/// `--version`, completion scripts and the man page describe the binary: they need no home
/// and make none.
#[test]
fn version_completion_scripts_and_the_man_page_need_no_home() {
    let home = std::env::temp_dir().join(format!("moat-test-nohome-{}", std::process::id()));
    let moat = |args: &[&str]| run_moat(std::path::Path::new(MOAT), &home, args);
    let version = moat(&["--version"]).ok();
    assert_eq!(version.stdout.trim(), format!("moat {}", env!("CARGO_PKG_VERSION")));
    for (shell, check) in
        [("bash", ["bash", "-n"]), ("zsh", ["zsh", "-n"]), ("fish", ["fish", "--no-execute"])]
    {
        let script = moat(&["completion", shell]).ok().stdout;
        assert!(
            script.contains("online-deployment") && script.contains("regenerate-keys"),
            "{shell}: {script}"
        );
        // Where the shell is installed, it must parse the script.
        let file = std::env::temp_dir().join(format!("moat-test-completion-{}.{shell}", std::process::id()));
        std::fs::write(&file, &script).expect("script");
        let parsed = std::process::Command::new(check[0]).arg(check[1]).arg(&file).output();
        let _ = std::fs::remove_file(&file);
        if let Ok(parsed) = parsed {
            assert!(
                parsed.status.success(),
                "{shell} refuses the script: {}",
                String::from_utf8_lossy(&parsed.stderr)
            );
        }
    }
    let page = moat(&["man"]).ok().stdout;
    assert!(page.starts_with(".ie") || page.contains(".TH moat 1"), "roff: {page}");
    assert!(page.contains("online\\-endpoint"), "{page}");
    let wrong = first_line(moat(&["completion", "tcsh"]));
    assert_eq!(wrong.code, 2, "{wrong:?}");
    assert!(wrong.stderr.contains("tcsh"), "{wrong:?}");
    assert!(!home.exists(), "no home made");
}

/// As a `Type=notify` service: READY=1 once the daemon serves, STOPPING=1 when it drains,
/// on the socket systemd names in NOTIFY_SOCKET.
#[test]
fn the_daemon_tells_systemd_ready_and_stopping() {
    let dir = moat_test_support::TempDir::new("moat-test-notify");
    let path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&path).expect("notify socket");
    socket.set_read_timeout(Some(std::time::Duration::from_secs(30))).expect("timeout");
    let mut d = Daemon::start_with_env(MOAT, &[("NOTIFY_SOCKET", path.to_str().expect("utf-8"))]);
    let mut buf = [0u8; 512];
    let recv = |buf: &mut [u8]| {
        let n = socket.recv(buf).expect("a message from the daemon");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(recv(&mut buf).trim(), "READY=1");
    assert!(d.socket().exists(), "ready only once admin.sock is there");
    assert_eq!(d.terminate(), Some(0));
    assert_eq!(recv(&mut buf).trim(), "STOPPING=1");
}

/// As the packaged service: no `--home` or `--config`, the home is the unit's state
/// directory and the config its configuration directory's `config.yaml`.
#[test]
fn as_the_service_the_home_and_config_come_from_systemds_directories() {
    let dir = moat_test_support::TempDir::new("moat-test-service");
    let (state, etc) = (dir.path().join("state"), dir.path().join("etc"));
    std::fs::create_dir_all(&etc).expect("etc");
    let serve = || {
        let mut command = std::process::Command::new(MOAT);
        command
            .arg("serve")
            .env("STATE_DIRECTORY", &state)
            .env("CONFIGURATION_DIRECTORY", &etc)
            .env_remove("MOAT_HOME")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        command
    };
    // The file is read: a key it should not have is refused, naming the file.
    std::fs::write(etc.join("config.yaml"), "listen: 127.0.0.1:0\nbogus: 1\n").expect("config");
    let refused = serve().output().expect("moat serve");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&etc.join("config.yaml").display().to_string()) && stderr.contains("bogus"),
        "{stderr}"
    );

    std::fs::write(
        etc.join("config.yaml"),
        "listen: 127.0.0.1:0\nmetrics_listen: 127.0.0.1:0\nshutdown_delay_s: 0\n",
    )
    .expect("config");
    let mut serving =
        moat_test_support::Killed(serve().stderr(std::process::Stdio::null()).spawn().expect("moat serve"));
    wait_until(std::time::Duration::from_secs(30), "admin.sock in the state directory", || {
        match std::os::unix::net::UnixStream::connect(state.join("admin.sock")) {
            Ok(_) => Ok(()),
            Err(e) => Err(format!("{e}; exited: {:?}", serving.0.try_wait())),
        }
    });
    run_moat(std::path::Path::new(MOAT), &state, &["online-endpoint", "list"]).ok();
    let _ = std::process::Command::new("kill").args(["-TERM", &serving.0.id().to_string()]).status();
    assert_eq!(serving.0.wait().ok().and_then(|s| s.code()), Some(0));
}

/// With a `log_file`, SIGHUP opens it again: after logrotate moved it, the daemon writes a
/// new file of that name and nothing more into the moved one.
#[test]
fn sighup_opens_the_log_file_again() {
    let dir = moat_test_support::TempDir::new("moat-test-logs");
    let log = dir.path().join("moat.log");
    let mut d =
        Daemon::start_with_config(MOAT, &format!("log_file: {}\nshutdown_delay_s: 0\n", log.display()));
    let rotated = dir.path().join("moat.log.1");
    wait_until(std::time::Duration::from_secs(10), "the ready line in the log file", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("moat serve is ready") { Ok(()) } else { Err(text) }
    });
    std::fs::rename(&log, &rotated).expect("rotate");
    d.signal("HUP");
    let fresh = wait_until(std::time::Duration::from_secs(10), "a new log file", || {
        let text = std::fs::read_to_string(&log).map_err(|e| e.to_string())?;
        if text.contains("log file opened again") { Ok(text) } else { Err(text) }
    });
    assert!(!fresh.contains("moat serve is ready"), "a new file: {fresh}");
    // The log is not serve.log here, so no waiting for the drain line: shutdown_delay_s is 0.
    d.signal("TERM");
    assert_eq!(d.wait_exit(), Some(0));
    let after = std::fs::read_to_string(&log).expect("log");
    assert!(after.contains("draining"), "the drain is logged in the new file: {after}");
    let old = std::fs::read_to_string(&rotated).expect("rotated log");
    assert!(
        !old.contains("draining") && !old.contains("opened again"),
        "nothing more in the moved file: {old}"
    );
}

/// The packaged unit is one systemd accepts, and the cloud-init example is a `#cloud-config`
/// with the modules a scale-set node needs.
#[test]
fn the_systemd_unit_verifies_and_the_cloud_init_file_is_a_cloud_config() {
    let root = moat_test_support::repo_root();
    let unit = std::fs::read_to_string(root.join("packaging/moat.service")).expect("unit");
    for line in [
        "Type=notify",
        "KillMode=mixed",
        "LimitNOFILE=",
        "StateDirectory=moat",
        "ConfigurationDirectory=moat",
    ] {
        assert!(unit.contains(line), "{line} in the unit");
    }
    if std::process::Command::new("systemd-analyze").arg("--version").output().is_ok() {
        // The installed path is not there in a test: point it at the binary just built.
        let dir = moat_test_support::TempDir::new("moat-test-unit");
        let copy = dir.path().join("moat.service");
        std::fs::write(&copy, unit.replace("/usr/bin/moat", MOAT)).expect("unit copy");
        let verify = std::process::Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&copy)
            .output()
            .expect("systemd-analyze");
        assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
    }

    let text = std::fs::read_to_string(root.join("packaging/cloud-init.yaml")).expect("cloud-init");
    assert!(text.starts_with("#cloud-config\n"), "cloud-init reads only files that start so");
    let docs = yaml_rust2::YamlLoader::load_from_str(&text).expect("valid YAML");
    let doc = &docs[0];
    for module in ["packages", "write_files", "runcmd"] {
        assert!(!doc[module].is_badvalue(), "{module} in the cloud-config");
    }
    let files: Vec<&str> =
        doc["write_files"].as_vec().expect("a list").iter().filter_map(|f| f["path"].as_str()).collect();
    for path in ["/etc/moat/config.yaml", "/etc/moat/fleet.key", "/etc/moat/workspace.yml"] {
        assert!(files.contains(&path), "{path} written: {files:?}");
    }
    let key = doc["write_files"]
        .as_vec()
        .expect("list")
        .iter()
        .find(|f| f["path"].as_str() == Some("/etc/moat/fleet.key"));
    assert_eq!(key.and_then(|k| k["permissions"].as_str()), Some("0600"), "the fleet key is owner-only");
    // The config it writes is one moat takes, once its placeholders are filled in.
    let config = doc["write_files"][0]["content"].as_str().expect("config content");
    let filled = config
        .replace("<scoring host name, e.g. ml.contoso.com>", "ml.contoso.com")
        .replace("<fleet name, e.g. prod-eastus>", "prod-eastus")
        .replace(
            "[<http://10.0.1.4:2379>, <http://10.0.1.5:2379>, <http://10.0.1.6:2379>]",
            "[http://10.0.1.4:2379]",
        );
    assert!(!filled.contains('<'), "{filled}");
    let parsed = yaml_rust2::YamlLoader::load_from_str(&filled).expect("config YAML");
    assert_eq!(parsed[0]["metrics_listen"].as_str(), Some("0.0.0.0:9464"));
    let runcmd = format!("{:?}", doc["runcmd"]);
    assert!(runcmd.contains("/readyz"), "waits for /readyz: {runcmd}");
}
