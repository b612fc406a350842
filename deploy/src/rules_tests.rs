//! One table per rule, each row named after the behaviour it shows.

use super::*;
use crate::testing::{World, deployment, endpoint, private};

const GIB: u64 = 1 << 30;

fn id(endpoint: &str, deployment: &str) -> DeploymentId {
    DeploymentId::new(endpoint, deployment)
}

/// An error's message, or "ok".
fn verdict<T>(result: Result<T, Error>) -> String {
    result.map_or_else(|e| e.to_string(), |_| "ok".into())
}

#[test]
fn only_the_seeds_two_pairs_may_be_created_and_a_private_deployment_switches_the_workspace() {
    #[rustfmt::skip]
    let table = [
        // (workspace public access, deployment egress) -> (refusal or "ok", workspace switched)
        ("public workspace, public deployment", Access::Enabled, Access::Enabled, "ok", false),
        ("public workspace, private deployment: switched", Access::Enabled, Access::Disabled, "ok", true),
        ("private workspace, private deployment", Access::Disabled, Access::Disabled, "ok", false),
        ("private workspace, public deployment: refused", Access::Disabled, Access::Enabled, "unsupported pair", false),
    ];
    for (case, workspace, egress, expected, switched) in table {
        let world = World::new(workspace).endpoint(endpoint("ep"));
        let mut spec = deployment("ep", "blue");
        spec.egress_public_network_access = egress;
        let decision = create_deployment(&world.desired, &spec, 64 * GIB);
        assert!(verdict(create_deployment(&world.desired, &spec, 64 * GIB)).contains(expected), "{case}");
        assert_eq!(decision.map(|d| d.switch_workspace).unwrap_or(false), switched, "{case}");
    }
}

#[test]
fn the_workspace_switch_warns_and_names_the_public_deployments_it_cuts_off() {
    let world = World::new(Access::Enabled).endpoint(endpoint("ep")).deployment(deployment("ep", "blue"));
    let decision =
        create_deployment(&world.desired, &private(deployment("ep", "green")), 64 * GIB).expect("allowed");
    assert_eq!(decision.warnings.len(), 2, "{:?}", decision.warnings);
    assert!(decision.warnings[0].contains("workspace default now has public network access disabled"));
    assert!(decision.warnings[1].ends_with("no longer reachable from public networks: ep/blue"));
    let alone = World::new(Access::Enabled).endpoint(endpoint("ep"));
    let decision =
        create_deployment(&alone.desired, &private(deployment("ep", "green")), 64 * GIB).expect("ok");
    assert_eq!(decision.warnings.len(), 1, "no deployment to name: {:?}", decision.warnings);
}

/// (case, access before, access after, deployments, the warning expected).
type SwitchRow = (&'static str, Access, Access, Vec<DeploymentSpec>, Option<&'static str>);

#[test]
fn switching_workspace_access_warns_about_the_deployments_left_in_the_other_pair() {
    let public = deployment("ep", "blue");
    let secret = private(deployment("ep", "green"));
    #[rustfmt::skip]
    let table: [SwitchRow; 6] = [
        ("disabling with a public deployment names it", Access::Enabled, Access::Disabled, vec![public.clone()], Some("now disabled: these deployments, which have egress enabled, are no longer reachable from public networks and lose their public path to workspace resources: ep/blue")),
        ("disabling with only private deployments is quiet", Access::Enabled, Access::Disabled, vec![secret.clone()], None),
        ("enabling with a private deployment names it", Access::Disabled, Access::Enabled, vec![secret.clone()], Some("an unsupported pair (the supported pairs are (public access enabled, egress enabled) and (public access disabled, egress disabled)): ep/green")),
        ("enabling with only public deployments is quiet", Access::Disabled, Access::Enabled, vec![public.clone()], None),
        ("no change is quiet", Access::Enabled, Access::Enabled, vec![public.clone(), secret.clone()], None),
        ("no deployments is quiet", Access::Enabled, Access::Disabled, vec![], None),
    ];
    for (case, was, now, deployments, expected) in table {
        let world = deployments.into_iter().fold(World::new(was).endpoint(endpoint("ep")), World::deployment);
        let mut new = world.desired.workspace.clone();
        new.public_network_access = now;
        let warnings = update_workspace(&world.desired, &new);
        match expected {
            Some(text) => assert!(warnings.len() == 1 && warnings[0].contains(text), "{case}: {warnings:?}"),
            None => assert!(warnings.is_empty(), "{case}: {warnings:?}"),
        }
    }
}

#[test]
fn deployment_names_may_not_collide_in_docker_or_on_their_endpoint() {
    let world = World::new(Access::Enabled)
        .endpoint(endpoint("a-b"))
        .endpoint(endpoint("abc"))
        .endpoint(endpoint("abc-def"))
        .deployment(deployment("a-b", "cde"))
        .deployment(deployment("abc", "def-ghi"));
    #[rustfmt::skip]
    let table = [
        ("a new name on an endpoint is fine", deployment("abc", "xyz"), "ok"),
        ("the same name on the same endpoint exists already", deployment("a-b", "cde"), "deployment cde already exists on endpoint a-b"),
        ("endpoint-deployment joined like another pair's shares its containers' names", deployment("abc-def", "ghi"), "would share its container names with deployment def-ghi on endpoint abc"),
        ("an endpoint that does not exist", deployment("nope", "cde"), "endpoint nope not found"),
    ];
    for (case, spec, expected) in table {
        assert!(verdict(create_deployment(&world.desired, &spec, 64 * GIB)).contains(expected), "{case}");
    }
}

#[test]
fn capacity_counts_every_instance_plus_one_surge_beside_the_other_live_deployments() {
    let two = |name: &str| {
        let mut spec = deployment("ep", name);
        spec.instance_count = 2;
        spec
    };
    let world = World::new(Access::Enabled).endpoint(endpoint("ep")).deployment(two("blue"));
    let failed = World::new(Access::Enabled)
        .endpoint(endpoint("ep"))
        .deployment(two("blue"))
        .outcome(&id("ep", "blue"), false);
    #[rustfmt::skip]
    let table = [
        // F2s_v2 instances take 4 GiB; blue's two take 8.
        ("fits exactly: 8 GiB beside, 2 + 1 surge new", &world, two("green"), 20 * GIB, "ok"),
        ("one GiB short", &world, two("green"), 19 * GIB, "not enough memory: 2 × Standard_F2s_v2 (4.0 GiB each) plus one surge instance needs 12.0 GiB, but this host has 19.0 GiB and this home's other deployments take 8.0 GiB"),
        ("a Failed deployment runs nothing and takes no room", &failed, two("green"), 12 * GIB, "ok"),
        ("an update does not count the deployment twice", &world, two("blue"), 12 * GIB, "ok"),
    ];
    for (case, world, spec, host, expected) in table {
        assert!(
            verdict(capacity(&world.desired, &spec, host)).contains(expected),
            "{case}: {}",
            verdict(capacity(&world.desired, &spec, host))
        );
    }
}

#[test]
fn a_deployment_that_takes_live_or_mirrored_traffic_is_not_deleted() {
    let world = |traffic: &[(&str, u32)], mirror: &[(&str, u32)]| {
        let mut ep = endpoint("ep");
        ep.traffic = traffic.iter().map(|(d, p)| (d.to_string(), *p)).collect();
        ep.mirror_traffic = mirror.iter().map(|(d, p)| (d.to_string(), *p)).collect();
        World::new(Access::Enabled)
            .endpoint(ep)
            .deployment(deployment("ep", "blue"))
            .deployment(deployment("ep", "green"))
    };
    #[rustfmt::skip]
    let table = [
        ("live traffic", world(&[("green", 100)], &[]), "green", "still takes traffic on endpoint ep"),
        ("mirrored traffic", world(&[("blue", 100)], &[("green", 10)]), "green", "still takes traffic"),
        ("a share of 0 percent", world(&[("blue", 100), ("green", 0)], &[]), "green", "ok"),
        ("no deployment of that name", world(&[], &[]), "red", "deployment red not found on endpoint ep"),
    ];
    for (case, world, name, expected) in table {
        assert!(verdict(delete_deployment(&world.desired, &id("ep", name))).contains(expected), "{case}");
    }
}

#[test]
fn all_traffic_moves_every_share_to_the_one_deployment() {
    let world = World::new(Access::Enabled).endpoint_with_traffic("ep1", &[("blue", 90), ("green", 10)]);
    let moved = all_traffic(&world.desired.endpoints["ep1"].record.spec, "red");
    let shares: Vec<(&str, u32)> = moved.traffic.iter().map(|(d, p)| (d.as_str(), *p)).collect();
    assert_eq!(shares, [("blue", 0), ("green", 0), ("red", 100)]);
    assert!(moved.check().is_ok(), "the result keeps the traffic rules");
}

#[test]
fn an_update_keeps_the_deployments_egress_and_needs_it_to_exist() {
    let world = World::new(Access::Enabled).endpoint(endpoint("ep")).deployment(deployment("ep", "blue"));
    let mut more = deployment("ep", "blue");
    more.instance_count = 3;
    #[rustfmt::skip]
    let table = [
        ("a new count", more, "ok"),
        ("egress cannot change", private(deployment("ep", "blue")), "egress_public_network_access of deployment blue cannot change on update"),
        ("a deployment that does not exist", deployment("ep", "green"), "deployment green not found on endpoint ep; create it first"),
    ];
    for (case, spec, expected) in table {
        assert!(verdict(update_deployment(&world.desired, &spec, 64 * GIB)).contains(expected), "{case}");
    }
}

#[test]
fn endpoints_are_created_without_traffic_and_keep_their_auth_mode() {
    let world = World::new(Access::Enabled).endpoint(endpoint("ep")).deployment(deployment("ep", "blue"));
    let with = |f: &dyn Fn(&mut EndpointSpec)| {
        let mut spec = endpoint("ep");
        f(&mut spec);
        spec
    };
    #[rustfmt::skip]
    let creates = [
        ("a new endpoint", endpoint("other"), true, "ok"),
        ("one that exists", endpoint("ep"), true, "endpoint ep already exists"),
        ("aad_token without auth.aad", { let mut e = endpoint("other"); e.auth_mode = AuthMode::AadToken; e }, false, "needs auth.aad"),
        ("traffic before its deployments", { let mut e = endpoint("other"); e.traffic.insert("blue".into(), 100); e }, true, "does not exist yet"),
    ];
    for (case, spec, aad, expected) in creates {
        assert!(verdict(create_endpoint(&world.desired, &spec, aad)).contains(expected), "{case}");
    }
    #[rustfmt::skip]
    let updates = [
        ("traffic to its own deployment", with(&|e| { e.traffic.insert("blue".into(), 100); }), "ok"),
        ("a zero share may name anything", with(&|e| { e.traffic.insert("gone".into(), 0); }), "ok"),
        ("traffic to a deployment it lacks", with(&|e| { e.traffic.insert("gone".into(), 100); }), "deployment gone not found on endpoint ep"),
        ("a new auth mode", with(&|e| e.auth_mode = AuthMode::AmlToken), "auth_mode cannot change"),
        ("an endpoint that does not exist", endpoint("other"), "endpoint other not found"),
    ];
    for (case, spec, expected) in updates {
        assert!(verdict(update_endpoint(&world.desired, &spec)).contains(expected), "{case}");
    }
}

#[test]
fn the_workspace_is_replaced_only_while_it_has_no_endpoints() {
    assert_eq!(verdict(create_workspace(&World::new(Access::Enabled).desired)), "ok");
    let taken = World::new(Access::Enabled).endpoint(endpoint("ep"));
    assert!(verdict(create_workspace(&taken.desired)).contains("already has endpoints"));
}

#[test]
fn show_warns_of_a_public_deployment_in_a_private_workspace_only() {
    let ws = |access| {
        let mut w = WorkspaceSpec::default_workspace();
        w.public_network_access = access;
        w
    };
    assert!(pair_warning(&ws(Access::Disabled), &deployment("ep", "blue")).is_some());
    assert!(pair_warning(&ws(Access::Disabled), &private(deployment("ep", "blue"))).is_none());
    assert!(pair_warning(&ws(Access::Enabled), &deployment("ep", "blue")).is_none());
}
