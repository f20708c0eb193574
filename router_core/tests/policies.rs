//! Policies and strategies through the public API: which rule decides, how
//! tiers and constraints apply, and how each strategy orders candidates.

use router_core::{Decision, RouteRequest, Router};
use serde_json::{json, Value};

fn deployment(id: &str, region: &str, window: u32, caps: &[&str], price: f64) -> Value {
    json!({"id": id, "region": region, "context_window": window, "capabilities": caps,
           "input_price_per_mtok": price, "output_price_per_mtok": price * 4.0})
}

/// Groups: `general` (g-eu, g-us), `coder` (c-eu, c-us), `long` (l-us with a 1M window).
fn config(policies: Value) -> String {
    json!({
        "default_group": "general",
        "deployments": [
            deployment("g-eu", "eu", 128_000, &["streaming"], 1.0),
            deployment("g-us", "us", 128_000, &["streaming"], 0.5),
            deployment("c-eu", "eu", 64_000, &["streaming", "tools"], 3.0),
            deployment("c-us", "us", 64_000, &["streaming", "tools"], 2.0),
            deployment("l-us", "us", 1_000_000, &["streaming"], 5.0),
        ],
        "model_groups": [
            {"name": "general", "deployments": ["g-eu", "g-us"]},
            {"name": "coder", "strategy": "priority", "deployments": ["c-eu", "c-us"]},
            {"name": "long", "deployments": ["l-us"]},
        ],
        "policies": policies,
    })
    .to_string()
}

fn standard_policies() -> Value {
    json!([
        {"id": "long-prompts", "when": {"field": "input_tokens", "gt": 60000},
         "route_to": {"groups": ["long"]}, "fallback": [{"groups": ["general"]}]},
        {"id": "code", "when": {"field": "task", "eq": "code"},
         "route_to": {"groups": ["coder"]}, "fallback": [{"groups": ["general"]}]},
        {"id": "eu-only-tenant", "when": {"field": "tenant", "prefix": "eu-"},
         "route_to": {"groups": ["general", "coder"]}, "constraints": {"regions": ["eu"]}},
    ])
}

fn ids(decision: &Decision) -> Vec<&str> {
    decision.candidates.iter().map(|c| &*c.deployment).collect()
}

fn route(router: &Router, request: RouteRequest<'_>) -> Decision {
    router
        .route(&RouteRequest {
            seed: Some(7),
            ..request
        })
        .unwrap()
}

#[test]
fn first_matching_policy_decides_and_names_itself() {
    let router = Router::new(&config(standard_policies())).unwrap();
    let code = route(
        &router,
        RouteRequest {
            task: "code",
            ..RouteRequest::new("auto")
        },
    );
    assert_eq!(code.policy.as_deref(), Some("code"));
    assert_eq!(
        &*code.model_group, "general",
        "the requested group is reported"
    );
    assert_eq!(
        &ids(&code)[..2],
        ["c-eu", "c-us"],
        "coder's priority order, then fallback"
    );
    assert_eq!(ids(&code).len(), 4);

    // Both "long-prompts" and "code" match; the earlier rule wins.
    let long_code = route(
        &router,
        RouteRequest {
            task: "code",
            input_tokens: 70_000,
            ..RouteRequest::new("auto")
        },
    );
    assert_eq!(long_code.policy.as_deref(), Some("long-prompts"));
    assert_eq!(ids(&long_code)[0], "l-us");
}

#[test]
fn without_a_match_the_requested_group_routes_with_its_own_strategy() {
    let router = Router::new(&config(standard_policies())).unwrap();
    let plain = route(&router, RouteRequest::new("coder"));
    assert_eq!(plain.policy, None);
    assert_eq!(plain.strategy.as_str(), "priority");
    assert_eq!(ids(&plain), ["c-eu", "c-us"]);
}

#[test]
fn fallback_tiers_are_filtered_too_and_residency_is_never_relaxed() {
    let router = Router::new(&config(standard_policies())).unwrap();
    // 200k input tokens fit only the long-context model.
    let huge = route(
        &router,
        RouteRequest {
            input_tokens: 200_000,
            ..RouteRequest::new("auto")
        },
    );
    assert_eq!(ids(&huge), ["l-us"]);
    assert!(huge
        .rejected
        .iter()
        .all(|r| r.filter.as_str() == "context_window"));

    let eu_long = route(
        &router,
        RouteRequest {
            input_tokens: 70_000,
            regions: &["eu"],
            ..RouteRequest::new("auto")
        },
    );
    assert_eq!(
        ids(&eu_long),
        ["g-eu"],
        "the us long-context model is not a way out of residency"
    );
    let rejected: Vec<_> = eu_long
        .rejected
        .iter()
        .map(|r| (&*r.deployment, r.filter.as_str()))
        .collect();
    assert_eq!(rejected, [("l-us", "region"), ("g-us", "region")]);
}

#[test]
fn policy_constraints_narrow_regions_for_every_tier() {
    let router = Router::new(&config(standard_policies())).unwrap();
    let decision = route(
        &router,
        RouteRequest {
            tenant: "eu-acme",
            ..RouteRequest::new("auto")
        },
    );
    assert_eq!(decision.policy.as_deref(), Some("eu-only-tenant"));
    let mut chosen = ids(&decision);
    chosen.sort_unstable();
    assert_eq!(chosen, ["c-eu", "g-eu"]);
    let detail = &decision.rejected[0].detail;
    assert!(detail.contains("not in allowed regions [eu]"), "{detail}");
}

#[test]
fn cost_ceiling_filters_and_explains() {
    let router = Router::new(&config(json!([]))).unwrap();
    // 1M input tokens at $1 / $0.5 per million: g-eu costs $1, g-us $0.5.
    let decision = route(
        &router,
        RouteRequest {
            input_tokens: 100_000,
            max_cost_usd: Some(0.07),
            ..RouteRequest::new("general")
        },
    );
    assert_eq!(ids(&decision), ["g-us"]);
    assert_eq!(decision.rejected[0].filter.as_str(), "cost");
    assert_eq!(
        decision.rejected[0].detail,
        "estimated cost $0.100000 exceeds the ceiling $0.070000"
    );
}

#[test]
fn catch_all_policy_routes_unknown_model_names() {
    let policies = json!([{"id": "alias", "when": {"field": "model", "eq": "smart"},
                           "route_to": {"deployments": ["c-us", "l-us"]}, "strategy": "lowest_cost"}]);
    let router = Router::new(&config(policies)).unwrap();
    let decision = route(&router, RouteRequest::new("smart"));
    assert_eq!(decision.policy.as_deref(), Some("alias"));
    assert_eq!(&*decision.model_group, "");
    assert_eq!(ids(&decision), ["c-us", "l-us"]);
    assert!(router.route(&RouteRequest::new("dumb")).is_err());
}

fn single_policy(strategy: &str) -> Router {
    let policies =
        json!([{"id": "p", "route_to": {"groups": ["general", "coder"]}, "strategy": strategy}]);
    Router::new(&config(policies)).unwrap()
}

#[test]
fn round_robin_rotates_and_dry_runs_do_not_move_it() {
    let router = single_policy("round_robin");
    let first: Vec<String> = (0..4)
        .map(|_| {
            route(&router, RouteRequest::new("auto")).candidates[0]
                .deployment
                .to_string()
        })
        .collect();
    assert_eq!(first, ["g-eu", "g-us", "c-eu", "c-us"]);
    let peek = |router: &Router| {
        router
            .route(&RouteRequest {
                dry_run: true,
                ..RouteRequest::new("auto")
            })
            .unwrap()
            .candidates[0]
            .deployment
            .to_string()
    };
    assert_eq!(peek(&router), "g-eu");
    assert_eq!(peek(&router), "g-eu");
}

#[test]
fn lowest_cost_orders_by_estimated_cost() {
    let router = single_policy("lowest_cost");
    let decision = route(
        &router,
        RouteRequest {
            input_tokens: 1000,
            ..RouteRequest::new("auto")
        },
    );
    assert_eq!(ids(&decision), ["g-us", "g-eu", "c-us", "c-eu"]);
    let scores: Vec<f64> = decision.candidates.iter().map(|c| c.score).collect();
    assert_eq!(scores, [1.0, 0.5, 0.25, 0.5 / 3.0]);
}

#[test]
fn lowest_latency_prefers_measured_fast_and_tries_unmeasured() {
    let router = single_policy("lowest_latency");
    for (id, latency) in [("g-eu", 900.0), ("g-us", 300.0), ("c-eu", 600.0)] {
        let lease = router.reserve(id, "", "", 0, 0).unwrap();
        router
            .record(lease, &router_core::Outcome::ok(latency))
            .unwrap();
    }
    let decision = route(&router, RouteRequest::new("auto"));
    // c-us has no measurement yet, so it counts as fast as the fastest.
    let order = ids(&decision);
    assert_eq!(&order[2..], ["c-eu", "g-eu"]);
    assert!(order[..2].contains(&"c-us") && order[..2].contains(&"g-us"));
}

#[test]
fn balanced_leads_with_one_of_two_sampled_and_sometimes_explores() {
    let router = single_policy("balanced");
    let mut firsts = std::collections::BTreeMap::new();
    for seed in 0..4000 {
        let decision = router
            .route(&RouteRequest {
                seed: Some(seed),
                input_tokens: 1000,
                ..RouteRequest::new("auto")
            })
            .unwrap();
        *firsts
            .entry(decision.candidates[0].deployment.to_string())
            .or_insert(0) += 1;
    }
    // Cheapest (g-us) leads most often, but every candidate leads sometimes:
    // power of two choices never picks the worst first except by exploration.
    let count = |id: &str| firsts.get(id).copied().unwrap_or(0);
    assert!(
        count("g-us") > count("g-eu") && count("g-eu") > count("c-eu"),
        "{firsts:?}"
    );
    assert!(
        count("c-eu") > 0,
        "exploration gives the worst candidate a turn: {firsts:?}"
    );
}

#[test]
fn affinity_keeps_a_session_on_one_deployment_while_it_qualifies() {
    let router = Router::new(&config(json!([]))).unwrap();
    for session in ["alice", "bob", "carol", "dave"] {
        let chosen: std::collections::BTreeSet<String> = (0..20)
            .map(|seed| {
                router
                    .route(&RouteRequest {
                        seed: Some(seed),
                        affinity_key: session,
                        ..RouteRequest::new("general")
                    })
                    .unwrap()
                    .candidates[0]
                    .deployment
                    .to_string()
            })
            .collect();
        assert_eq!(chosen.len(), 1, "{session} moved between {chosen:?}");
        // If its deployment is filtered out, the session moves to the other one.
        let stuck = chosen.first().unwrap().clone();
        let other_region = if stuck == "g-eu" { "us" } else { "eu" };
        let moved = router
            .route(&RouteRequest {
                affinity_key: session,
                regions: &[other_region],
                ..RouteRequest::new("general")
            })
            .unwrap();
        assert_ne!(&*moved.candidates[0].deployment, stuck.as_str());
    }
}

#[test]
fn invalid_policies_are_explained() {
    let cases = [
        (
            json!([{"id": "p", "route_to": {}}]),
            "policies[0].route_to: must not be empty",
        ),
        (
            json!([{"id": "p", "route_to": {"groups": ["nope"]}}]),
            "policies[0].route_to.groups[0]: unknown model group \"nope\"",
        ),
        (
            json!([{"id": "p", "route_to": {"deployments": ["x"]}}]),
            "policies[0].route_to.deployments[0]: unknown deployment \"x\"",
        ),
        (
            json!([{"id": "p", "route_to": {"groups": ["long"]}, "constraints": {"regions": ["mars"]}}]),
            "policies[0].constraints.regions[0]: no deployment is in region \"mars\"",
        ),
        (
            json!([{"id": "p", "route_to": {"groups": ["long"]}}, {"id": "p", "route_to": {"groups": ["long"]}}]),
            "policies[1].id: duplicate policy id \"p\"",
        ),
        (
            json!([{"id": "p", "when": {"field": "task"}, "route_to": {"groups": ["long"]}}]),
            "policies[0].when: a field test needs exactly one",
        ),
        (
            json!([{"id": "p", "route_to": {"groups": ["long"]}, "strategy": "fastest"}]),
            "policies[0].strategy: unknown variant `fastest`",
        ),
    ];
    for (policies, expected) in cases {
        let message = Router::new(&config(policies)).err().unwrap().to_string();
        assert!(message.starts_with(expected), "{message}");
    }
}
