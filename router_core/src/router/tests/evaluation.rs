//! A policy's experiment and shadow: variants assigned by a sticky key in
//! proportion to their weights, shadows sampled, and shadow leases refused
//! before any caller's.

use std::collections::HashMap;

use super::*;
use crate::testing::chat_config;
use serde_json::{json, Value};

fn router_with(policy: Value) -> Router {
    let mut value: Value = serde_json::from_str(&chat_config()).unwrap();
    value["policies"] = json!([policy]);
    Router::with_clock(&value.to_string(), Clock::manual()).unwrap()
}

fn experiment(sticky_by: &str) -> Value {
    json!({
        "id": "p",
        "experiment": {
            "id": "ab-1",
            "sticky_by": sticky_by,
            "variants": [
                {"name": "control", "deployments": ["a"], "weight": 3},
                {"deployments": ["b"], "weight": 1},
            ],
        },
        "fallback": [{"deployments": ["d"]}],
    })
}

fn assigned(router: &Router, request: &RouteRequest<'_>) -> (String, Vec<String>) {
    let decision = router.route(request).unwrap();
    let (experiment, variant) = decision
        .experiment
        .map(|a| (a.experiment.to_string(), a.variant.to_string()))
        .unwrap();
    assert_eq!(experiment, "ab-1");
    let order = decision
        .candidates
        .iter()
        .map(|c| c.deployment.to_string())
        .collect();
    (variant, order)
}

#[test]
fn a_key_always_gets_its_variant_and_the_weights_split_the_keys() {
    let router = router_with(experiment("tenant"));
    let mut counts: HashMap<String, usize> = HashMap::new();
    for i in 0..4000 {
        let tenant = format!("tenant-{i}");
        let request = RouteRequest {
            tenant: &tenant,
            dry_run: true,
            ..RouteRequest::new("chat")
        };
        let (variant, order) = assigned(&router, &request);
        for _ in 0..3 {
            assert_eq!(
                assigned(&router, &request).0,
                variant,
                "sticky for {tenant}"
            );
        }
        let first = if variant == "control" { "a" } else { "b" };
        assert_eq!(
            order,
            [first, "d"],
            "the variant's target, then the policy's fallback"
        );
        *counts.entry(variant).or_default() += 1;
    }
    // 3:1 of 4000 keys: 3000 ± 4 standard deviations (about 27 each).
    let control = counts["control"];
    assert!((2890..=3110).contains(&control), "{counts:?}");
    assert_eq!(
        counts["1"],
        4000 - control,
        "an unnamed variant is named by its position"
    );
}

#[test]
fn the_assignment_is_the_same_in_another_router_and_after_a_reload() {
    let first = router_with(experiment("metadata.user"));
    let second = router_with(experiment("metadata.user"));
    for i in 0..200 {
        let user = format!("u{i}");
        let metadata = [("user", user.as_str())];
        let request = RouteRequest {
            metadata: &metadata,
            dry_run: true,
            ..RouteRequest::new("chat")
        };
        assert_eq!(assigned(&first, &request).0, assigned(&second, &request).0);
    }
}

#[test]
fn a_request_without_the_key_is_assigned_at_random() {
    let router = router_with(experiment("affinity_key"));
    let variants: std::collections::HashSet<String> = (0..200)
        .map(|seed| {
            let request = RouteRequest {
                seed: Some(seed),
                dry_run: true,
                ..RouteRequest::new("chat")
            };
            assigned(&router, &request).0
        })
        .collect();
    assert_eq!(variants.len(), 2, "{variants:?}");
}

#[test]
fn a_policy_without_an_experiment_assigns_nothing() {
    let router = router_with(json!({"id": "p", "route_to": {"deployments": ["a"]}}));
    let decision = router.route(&RouteRequest::new("chat")).unwrap();
    assert_eq!((decision.experiment, decision.shadow), (None, None));
}

#[test]
fn experiments_are_checked() {
    let mut value: Value = serde_json::from_str(&chat_config()).unwrap();
    for (policy, message) in [
        (
            json!({"id": "p", "route_to": {"deployments": ["a"]},
                   "experiment": {"id": "x", "variants": [{"deployments": ["a"]}]}}),
            "policies[0].route_to: a policy with an experiment routes by its variants",
        ),
        (
            json!({"id": "p", "experiment": {"id": "x", "variants": []}}),
            "policies[0].experiment.variants: must not be empty",
        ),
        (
            json!({"id": "p", "experiment": {"id": "x", "variants": [{"deployments": ["zz"]}]}}),
            "policies[0].experiment.variants[0].deployments[0]: unknown deployment \"zz\"",
        ),
        (
            json!({"id": "p", "experiment": {"id": "x", "variants": [
                {"name": "v", "deployments": ["a"]}, {"name": "v", "deployments": ["b"]}]}}),
            "policies[0].experiment.variants[1].name: duplicate variant name \"v\"",
        ),
        (
            json!({"id": "p", "experiment": {"id": "x", "variants": [{"deployments": ["a"], "weight": 0}]}}),
            "policies[0].experiment.variants[0].weight: must be a finite number > 0",
        ),
        (
            json!({"id": "p", "experiment": {"id": "x", "sticky_by": "user", "variants": [{"deployments": ["a"]}]}}),
            "unknown sticky key \"user\"",
        ),
        (
            json!({"id": "p", "route_to": {"deployments": ["a"]},
                   "shadow": {"deployments": ["b"], "sample": 0}}),
            "policies[0].shadow.sample: must be more than 0 and at most 1",
        ),
        (
            json!({"id": "p", "route_to": {"deployments": ["a"]},
                   "shadow": {"deployments": ["b", "b"], "sample": 0.5}}),
            "policies[0].shadow.deployments[1]: duplicate shadow deployment \"b\"",
        ),
        (
            json!({"id": "p", "route_to": {"deployments": ["a"]},
                   "shadow": {"deployments": ["b"], "sample": 0.5, "max_in_flight": 0}}),
            "policies[0].shadow.max_in_flight: must be between 1 and 1024",
        ),
    ] {
        value["policies"] = json!([policy]);
        let error = Router::new(&value.to_string()).err().unwrap().to_string();
        assert!(error.contains(message), "{error}");
    }
}

#[test]
fn a_sample_of_real_requests_is_copied_and_no_dry_run() {
    let router = router_with(json!({
        "id": "p",
        "route_to": {"deployments": ["a"]},
        "shadow": {"deployments": ["b", "c"], "sample": 0.25, "max_in_flight": 3},
    }));
    let copied = (0..4000)
        .filter_map(|seed| {
            let request = RouteRequest {
                seed: Some(seed),
                ..RouteRequest::new("chat")
            };
            router.route(&request).unwrap().shadow
        })
        .collect::<Vec<_>>();
    // 25% of 4000: 1000 ± 4 standard deviations (about 27 each).
    assert!((890..=1110).contains(&copied.len()), "{}", copied.len());
    assert_eq!(copied[0].max_in_flight, 3);
    assert_eq!(copied[0].deployments, [Arc::from("b"), Arc::from("c")]);
    let request = RouteRequest {
        dry_run: true,
        ..RouteRequest::new("chat")
    };
    assert!((0..200).all(|_| router.route(&request).unwrap().shadow.is_none()));
}

#[test]
fn shadow_leases_are_refused_before_any_callers() {
    let mut value: Value = serde_json::from_str(&chat_config()).unwrap();
    value["deployments"][1]["rpm"] = json!(100);
    let router = Router::with_clock(&value.to_string(), Clock::manual()).unwrap();
    let mut shadows = Vec::new();
    while let Ok(lease) = router.reserve_shadow("b", 0, 0) {
        shadows.push(lease);
    }
    assert_eq!(
        shadows.len(),
        80,
        "a shadow leaves priority_reserve (20%) to callers"
    );
    // Held, as the shadows' are: a lease dropped gives its budget back.
    let callers: Vec<Lease> = (0..100)
        .map_while(|_| router.reserve("b", "acme", "", 0, 0).ok())
        .collect();
    assert_eq!(callers.len(), 20, "callers still get what shadows left");
}

#[test]
fn shadow_leases_take_no_tenant_budget_and_leave_a_probe_to_callers() {
    let mut value: Value = serde_json::from_str(&chat_config()).unwrap();
    value["rate_limits"] = json!({"tenants": {"acme": {"rpm": 1}}});
    value["health"] = json!({"consecutive_failures": 1, "open_secs": 1.0});
    let router = Router::with_clock(&value.to_string(), Clock::manual()).unwrap();
    for _ in 0..10 {
        router.release(router.reserve_shadow("b", 10, 5).unwrap());
    }
    assert!(
        router.reserve("b", "acme", "", 0, 0).is_ok(),
        "the tenant's one request is left"
    );
    let lease = router.reserve("c", "", "", 0, 0).unwrap();
    router
        .record(lease, &Outcome::failed(OutcomeClass::ServerError, 5.0))
        .unwrap();
    router.clock.advance(Duration::from_secs(2));
    let refused = router.reserve_shadow("c", 0, 0).unwrap_err().to_string();
    assert!(refused.contains("probe is kept for callers"), "{refused}");
    assert!(
        router.reserve("c", "", "", 0, 0).is_ok(),
        "a caller probes it"
    );
}

#[test]
fn a_key_keeps_its_variant_when_another_is_left_out() {
    let three = |variants: Value| {
        router_with(json!({"id": "p", "experiment": {"id": "ab-1", "variants": variants}}))
    };
    let all = three(json!([
        {"name": "a", "deployments": ["a"]},
        {"name": "b", "deployments": ["b"]},
        {"name": "c", "deployments": ["c"]},
    ]));
    let without_a = three(json!([
        {"name": "b", "deployments": ["b"]},
        {"name": "c", "deployments": ["c"]},
    ]));
    let mut moved = 0;
    for i in 0..600 {
        let tenant = format!("t{i}");
        let request = RouteRequest {
            tenant: &tenant,
            dry_run: true,
            ..RouteRequest::new("chat")
        };
        let (before, _) = assigned(&all, &request);
        let (after, _) = assigned(&without_a, &request);
        if before == "a" {
            moved += 1;
        } else {
            assert_eq!(before, after, "{tenant} was not a's and kept its variant");
        }
    }
    assert!(
        (140..=260).contains(&moved),
        "a third of 600 keys were a's: {moved}"
    );
}

#[test]
fn a_copy_goes_nowhere_the_request_could_not() {
    // "b" and "d" are in the us, "c" in the eu; "c" lacks tools.
    let router = router_with(json!({
        "id": "p",
        "route_to": {"deployments": ["a"]},
        "shadow": {"deployments": ["b", "c", "d"], "sample": 1.0},
    }));
    let copied = |request: &RouteRequest<'_>| -> Vec<String> {
        let shadow = router.route(request).unwrap().shadow;
        shadow.map_or_else(Vec::new, |s| {
            s.deployments.iter().map(|d| d.to_string()).collect()
        })
    };
    let eu = RouteRequest {
        regions: &["eu"],
        ..RouteRequest::new("chat")
    };
    assert_eq!(copied(&eu), ["c"], "the request's regions bind its copies");
    let tools = RouteRequest {
        capabilities: &["tools"],
        ..RouteRequest::new("chat")
    };
    assert_eq!(copied(&tools), ["d"], "and its capabilities");
    let neither = RouteRequest {
        regions: &["eu"],
        capabilities: &["tools"],
        ..RouteRequest::new("chat")
    };
    assert!(
        copied(&neither).is_empty(),
        "no copy at all when none qualifies"
    );
}
