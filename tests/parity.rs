//! az's habits through the real CLI: a resource exported with `show -o yaml`, edited and
//! applied again (its read-only fields ignored, with a note); az's global and per-command
//! flags; az's exit code 3 for a resource that does not exist; `-o none`; the `--set` hint.

use std::time::Duration;

use moat_test_support::{
    Daemon, Run, TEST_IMAGE, TempDir, home_containers, home_images, repo_root, require_scorer_image,
    require_test_image, scorer_deployment, wait_until,
};

const MOAT: &str = env!("CARGO_BIN_EXE_moat");

fn write(d: &Daemon, name: &str, text: &str) -> String {
    let path = d.home.join(name);
    std::fs::write(&path, text).expect("write spec");
    path.display().to_string()
}

fn ok(run: Run) -> Run {
    assert_eq!(run.code, 0, "{run:?}");
    run
}

/// `show -o yaml` into a file, then the file applied and validated again.
fn round_trip(d: &Daemon, show: &str, update: &str, edit: impl Fn(String) -> String) -> Run {
    let exported = ok(d.cli(&format!("{show} -o yaml"))).stdout;
    let file = write(d, "exported.yml", &edit(exported));
    let checked = ok(d.cli(&format!("validate -f {file}")));
    assert!(checked.stderr.contains("read-only fields ignored"), "{}", checked.stderr);
    ok(d.cli(&format!("{update} -f {file}")))
}

#[test]
fn shows_output_applies_back_with_its_read_only_fields_ignored() {
    require_test_image();
    let d = Daemon::start(MOAT);
    ok(d.cli("online-endpoint create -n trip-ep -f examples/model-1/endpoint.yml"));
    let blue = write(&d, "blue.yml", &scorer_deployment("trip-ep", "blue", 1));
    ok(d.cli(&format!("online-deployment create -f {blue} --all-traffic")));
    let uri = ok(d.cli("online-endpoint show -n trip-ep -o tsv --query scoring_uri")).stdout;

    // An edited description goes through; an edited scoring_uri does not, and is said so.
    let updated = round_trip(&d, "online-endpoint show -n trip-ep", "online-endpoint update", |text| {
        text.replace("description: null", "description: exported and edited")
            .replace(uri.trim(), "http://elsewhere.example/score")
    });
    assert!(updated.stderr.contains("scoring_uri"), "{}", updated.stderr);
    let shown = ok(d.cli("online-endpoint show -n trip-ep -o tsv --query [description,scoring_uri]")).stdout;
    assert_eq!(shown, format!("exported and edited\n{}\n", uri.trim()), "a list: a row per item, as az");

    let updated =
        round_trip(&d, "online-deployment show -n blue -e trip-ep", "online-deployment update", |text| {
            text.replace("request_timeout_ms: 5000", "request_timeout_ms: 4000")
        });
    assert!(updated.stderr.contains("instances"), "{}", updated.stderr);
    let timeout = ok(
        d.cli("online-deployment show -n blue -e trip-ep -o tsv --query request_settings.request_timeout_ms")
    );
    assert_eq!(timeout.stdout, "4000\n");

    // A private deployment's show (with its egress) validates and applies as well.
    let closed = write(&d, "closed.yml", &scorer_deployment("trip-ep", "closed", 1));
    ok(d.cli(&format!("online-deployment create -f {closed} --set private_network_connection=true")));
    round_trip(&d, "online-deployment show -n closed -e trip-ep", "online-deployment update", |t| t);

    // What cannot take effect is named; a type other than managed is refused.
    let odd_text = scorer_deployment("trip-ep", "odd", 1)
        + "app_insights_enabled: true\nscale_settings: {type: target_utilization}\n";
    let odd = write(&d, "odd.yml", &odd_text);
    let run = ok(d.cli(&format!("validate -f {odd}")));
    assert!(run.stderr.contains("app_insights_enabled cannot take effect"), "{}", run.stderr);
    assert!(run.stderr.contains("scale_settings cannot take effect"), "{}", run.stderr);
    let k8s = write(&d, "k8s.yml", "name: k8s-ep\ntype: kubernetes\n");
    let run = d.cli(&format!("validate -f {k8s}"));
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("managed online endpoints only"), "{}", run.stderr);
}

#[test]
fn azs_flags_and_exit_codes() {
    require_test_image();
    let d = Daemon::start(MOAT);
    ok(d.cli("online-endpoint create -n flag-ep -f examples/model-1/endpoint.yml"));

    // -g is accepted and ignored, said once; -w must name the home's workspace.
    let run = ok(d.cli("online-endpoint show -n flag-ep -g my-rg -w default"));
    assert_eq!(run.stderr.matches("--resource-group is ignored").count(), 1, "{}", run.stderr);
    let run = d.cli("online-endpoint show -n flag-ep -w another-ws");
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains("this home's workspace is default"), "{}", run.stderr);

    // -o none prints nothing; jsonc and yamlc are plain off a terminal.
    assert_eq!(ok(d.cli("online-endpoint show -n flag-ep -o none")).stdout, "");
    let json = ok(d.cli("online-endpoint show -n flag-ep -o json")).stdout;
    assert_eq!(ok(d.cli("online-endpoint show -n flag-ep -o jsonc")).stdout, json);
    let yaml = ok(d.cli("online-endpoint show -n flag-ep -o yaml")).stdout;
    assert_eq!(ok(d.cli("online-endpoint show -n flag-ep -o yamlc")).stdout, yaml);
    // az's TSV for a whole object: None for null.
    let tsv = ok(d.cli("online-endpoint show -n flag-ep -o tsv")).stdout;
    assert!(tsv.contains("\tNone\t") || tsv.contains("\tNone\n"), "{tsv}");

    // --auth-mode at create; regenerate-keys --no-wait; the no-ops of az's own flags.
    let run = ok(d.cli("online-endpoint create -n token-ep --auth-mode aml_token --local"));
    assert!(run.stderr.contains("--local is ignored"), "{}", run.stderr);
    let mode = ok(d.cli("online-endpoint show -n token-ep -o tsv --query auth_mode")).stdout;
    assert_eq!(mode, "aml_token\n");
    ok(d.cli("online-endpoint regenerate-keys -n flag-ep --key-type secondary --no-wait"));

    let blue = write(&d, "blue.yml", &scorer_deployment("flag-ep", "blue", 1));
    let run =
        ok(d.cli(&format!("online-deployment create -f {blue} --all-traffic --skip-script-validation")));
    assert!(run.stderr.contains("--skip-script-validation is ignored"), "{}", run.stderr);
    let request = write(&d, "request.json", "{\"delay_ms\": 0}");
    let answer = ok(d.cli(&format!("online-endpoint invoke -n flag-ep -r {request}"))).stdout;
    assert!(answer.contains("\"version\""), "{answer}");
    let logs =
        ok(d.cli("online-deployment get-logs -n blue -e flag-ep -l 1 --container-type inference-server"));
    assert_eq!(logs.stdout.lines().count(), 1, "{}", logs.stdout);
    let init =
        ok(d.cli("online-deployment get-logs -n blue -e flag-ep --container-type storage-initializer"));
    assert!(init.stdout.contains("image moat-test-scorer:latest is present"), "{}", init.stdout);
    let run = d.cli("online-deployment get-logs -n blue -e flag-ep --container-type storage-initializer --instance blue-0");
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("the storage-initializer log is the deployment's"), "{}", run.stderr);

    // az's exit code 3: the named resource does not exist.
    for line in [
        "online-endpoint show -n nope-ep",
        "online-endpoint get-credentials -n nope-ep",
        "online-endpoint delete -n nope-ep --yes",
        "online-endpoint invoke -n nope-ep -r examples/model-1/sample-request.json",
        "online-deployment show -n nope -e flag-ep",
        "online-deployment get-logs -n nope -e flag-ep",
        "online-deployment delete -n nope -e flag-ep --yes",
    ] {
        let run = d.cli(line);
        assert_eq!(run.code, 3, "{line}: {run:?}");
    }

    // A `--set` word followed by a bare value gets the word it meant.
    let run = d.cli(&format!("online-deployment create -f {blue} --set private_network_connection true"));
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("did you mean `private_network_connection=true`?"), "{}", run.stderr);
}

/// A deployment whose image moat builds from `context` (no VERSION variable: the Dockerfile
/// sets it).
fn built_deployment(endpoint: &str, name: &str, context: &std::path::Path) -> String {
    scorer_deployment(endpoint, name, 1)
        .replace(&format!("  image: {TEST_IMAGE}\n"), &format!("  build:\n    path: {}\n", context.display()))
        .replace(&format!("environment_variables:\n  VERSION: {name}\n"), "")
}

fn invoke(d: &Daemon, deployment: &str, request: &str) -> String {
    ok(d.cli(&format!("online-endpoint invoke -n build-ep -d {deployment} -r {request}"))).stdout
}

/// A context folder outside the home (no container may see the home, nor a build).
fn context(contexts: &TempDir, name: &str, dockerfile: &str) -> std::path::PathBuf {
    let dir = contexts.path().join(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("Dockerfile"), dockerfile).expect("write Dockerfile");
    std::fs::write(dir.join("note.txt"), "from the context\n").expect("write note");
    dir
}

#[test]
fn images_are_built_from_a_local_context_reused_rebuilt_and_a_failed_build_is_named() {
    require_test_image();
    require_scorer_image();
    let mut d = Daemon::start(MOAT);
    let contexts = TempDir::new("moat-contexts");
    ok(d.cli("online-endpoint create -n build-ep -f examples/model-1/endpoint.yml"));
    let dockerfile =
        |v: &str| format!("FROM {TEST_IMAGE}\nCOPY note.txt /note.txt\nENV VERSION=context-{v}\n");
    let dir = context(&contexts, "context", &dockerfile("v1"));
    let file = write(&d, "built.yml", &built_deployment("build-ep", "built", &dir));
    let request = write(&d, "request.json", "{}");

    // Built at create, with the build's steps streamed as a pull's are.
    let run = ok(d.cli(&format!("online-deployment create -f {file} --all-traffic")));
    assert!(run.stderr.contains(&format!("build: Step 1/6 : FROM {TEST_IMAGE}")), "{}", run.stderr);
    assert!(run.stderr.contains("building image moat-"), "{}", run.stderr);
    assert!(invoke(&d, "built", &request).contains("\"context-v1\""));
    let [first] = home_images(&d.home_id()).try_into().expect("one image built");
    let init =
        ok(d.cli("online-deployment get-logs -n built -e build-ep --container-type storage-initializer"));
    assert!(init.stdout.contains(&format!("Successfully tagged {first}")), "{}", init.stdout);

    // The same context again: reused, nothing built.
    let run = ok(d.cli(&format!("online-deployment update -f {file}")));
    assert!(run.stderr.contains("built from this context before; reusing it"), "{}", run.stderr);
    assert!(!run.stderr.contains("build: Step"), "{}", run.stderr);

    // A changed context: built anew, rolled out, the older image gone.
    std::fs::write(dir.join("Dockerfile"), dockerfile("v2")).expect("edit");
    let run = ok(d.cli(&format!("online-deployment update -f {file}")));
    assert!(run.stderr.contains(": ENV VERSION=context-v2"), "{}", run.stderr);
    assert!(invoke(&d, "built", &request).contains("\"context-v2\""));
    let [second] = home_images(&d.home_id()).try_into().expect("only the image in use");
    assert_ne!(first, second);

    // A restarted daemon reads the context again, finds its image and adopts the container.
    let running = home_containers(&d.home_id());
    d.restart();
    wait_until(Duration::from_secs(20), "the restarted daemon to apply the deployment again", || {
        let init =
            d.cli("online-deployment get-logs -n built -e build-ep --container-type storage-initializer");
        if init.stdout.contains("reusing it") { Ok(()) } else { Err(format!("{init:?}")) }
    });
    assert!(invoke(&d, "built", &request).contains("\"context-v2\""));
    assert_eq!(home_containers(&d.home_id()), running, "the same container serves");

    // A failing Dockerfile: the create fails naming the builder's error, the deployment is
    // Failed, and its initializer log keeps the story.
    let broken_dir =
        context(&contexts, "broken", &format!("FROM {TEST_IMAGE}\nCOPY missing.txt /missing.txt\n"));
    let broken = write(&d, "broken.yml", &built_deployment("build-ep", "broken", &broken_dir));
    let run = d.cli(&format!("online-deployment create -f {broken}"));
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("cannot build image moat-"), "{}", run.stderr);
    assert!(run.stderr.contains("missing.txt"), "{}", run.stderr);
    assert!(run.stderr.contains("The build's last log lines:\nStep 1/5"), "{}", run.stderr);
    let state = ok(d.cli("online-deployment show -n broken -e build-ep -o tsv --query provisioning_state"));
    assert_eq!(state.stdout, "Failed\n");
    let init =
        ok(d.cli("online-deployment get-logs -n broken -e build-ep --container-type storage-initializer"));
    assert!(
        init.stdout.contains("cannot build image") && init.stdout.contains("missing.txt"),
        "{}",
        init.stdout
    );

    // The seed's environment folder as a deployment file: built at create, no docker build
    // by hand.
    let seed = "online-deployment create -e build-ep -f examples/model-1/green-build-deployment.yml";
    ok(d.cli(seed));
    let numbers = |text: &str| serde_json::from_str::<Vec<f64>>(text).expect("a list of numbers");
    let answer = numbers(&invoke(&d, "green", "examples/model-1/sample-request.json"));
    let expected = std::fs::read_to_string(repo_root().join("examples/model-1/expected-response.json"))
        .expect("expected response");
    let expected = numbers(&expected);
    assert_eq!(answer.len(), expected.len());
    assert!(answer.iter().zip(&expected).all(|(a, e)| (a - e).abs() < 1e-6 * e.abs()), "{answer:?}");

    // Deleting a deployment deletes what was built for it.
    ok(d.cli("online-endpoint update -n build-ep --traffic green=100"));
    ok(d.cli("online-deployment delete -n built -e build-ep --yes"));
    assert_eq!(home_images(&d.home_id()).len(), 1, "{:?}", home_images(&d.home_id()));
    // A private deployment builds on its internal network as well (the last here: the
    // workspace turns private with it).
    let closed = write(&d, "closed.yml", &built_deployment("build-ep", "closed", &dir));
    ok(d.cli(&format!("online-deployment create -f {closed} --set private_network_connection=true")));
    assert!(invoke(&d, "closed", &request).contains("\"context-v2\""));
    ok(d.cli("online-deployment delete -n closed -e build-ep --yes"));
    ok(d.cli("online-endpoint update -n build-ep --traffic green=0"));
    ok(d.cli("online-deployment delete -n green -e build-ep --yes"));
    assert!(home_images(&d.home_id()).is_empty(), "{:?}", home_images(&d.home_id()));
}
