//! az's habits through the real CLI: a resource exported with `show -o yaml`, edited and
//! applied again (its read-only fields ignored, with a note); az's global and per-command
//! flags; az's exit code 3 for a resource that does not exist; `-o none`; the `--set` hint.

use moat_test_support::{Daemon, Run, require_test_image, scorer_deployment};

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
    let run = d.cli("online-deployment get-logs -n blue -e flag-ep --container-type storage-initializer");
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("not supported yet"), "{}", run.stderr);

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
