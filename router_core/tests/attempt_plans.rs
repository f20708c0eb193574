//! What a decision tells the caller's attempt loop beyond the order: each
//! candidate's tier, the matched policy's hedging and content fallback, and
//! the tail estimates that time a hedge.

use router_core::{
    ContentFallback, Decision, Hedge, Outcome, OutcomeClass, RouteRequest, Router, RouterError,
};
use serde_json::{json, Value};

fn deployment(id: &str) -> Value {
    json!({"id": id, "region": "eu", "context_window": 100_000,
           "input_price_per_mtok": 1.0, "output_price_per_mtok": 1.0})
}

/// Groups `main` (m1, m2), `backup` (b1) and `last` (l1); policy `tiered`
/// (for task "tiered") routes to main with both others as fallbacks and
/// carries a hedge and a content fallback.
fn config() -> String {
    let deployments = ["m1", "m2", "b1", "l1"].map(deployment);
    json!({
        "deployments": deployments,
        "model_groups": [
            {"name": "main", "deployments": ["m1", "m2"]},
            {"name": "backup", "deployments": ["b1"]},
            {"name": "last", "deployments": ["l1"]},
        ],
        "policies": [{
            "id": "tiered", "when": {"field": "task", "eq": "tiered"},
            "route_to": {"groups": ["main"]},
            "fallback": [{"groups": ["backup"]}, {"deployments": ["l1"]}],
            "hedge": {"min_delay_ms": 100, "max_delay_ms": 1500, "max_hedges": 2},
            "content_fallback": "next_tier",
        }],
    })
    .to_string()
}

fn route(router: &Router, model: &str, task: &str) -> Decision {
    let request = RouteRequest {
        task,
        seed: Some(3),
        dry_run: true,
        ..RouteRequest::new(model)
    };
    router.route(&request).unwrap()
}

fn tiers(decision: &Decision) -> Vec<(&str, u32)> {
    decision
        .candidates
        .iter()
        .map(|c| (&*c.deployment, c.tier))
        .collect()
}

#[test]
fn candidates_are_numbered_by_tier() {
    let router = Router::new(&config()).unwrap();
    let decision = route(&router, "main", "tiered");
    let numbered = tiers(&decision);
    assert_eq!(numbered.len(), 4);
    assert!(numbered[..2].iter().all(|&(_, tier)| tier == 0));
    assert_eq!(numbered[2..], [("b1", 1), ("l1", 2)]);
}

#[test]
fn a_model_group_without_a_policy_is_tier_zero() {
    let router = Router::new(&config()).unwrap();
    let decision = route(&router, "main", "");
    assert_eq!(decision.policy, None);
    let mut numbered = tiers(&decision);
    numbered.sort_unstable();
    assert_eq!(numbered, [("m1", 0), ("m2", 0)]);
}

#[test]
fn a_rejected_primary_tier_keeps_the_fallback_numbers() {
    let router = Router::new(&config()).unwrap();
    for id in ["m1", "m2"] {
        let lease = router.reserve(id, "", "", 0, 0).unwrap();
        let failure = Outcome::failed(OutcomeClass::AuthError, 1.0);
        router.record(lease, &failure).unwrap();
    }
    let decision = route(&router, "main", "tiered");
    assert_eq!(tiers(&decision), [("b1", 1), ("l1", 2)]);
}

#[test]
fn a_fallback_with_nothing_new_takes_no_tier_number() {
    let mut value: Value = serde_json::from_str(&config()).unwrap();
    // `main` again adds no deployment, so `last` becomes the plan's tier 1.
    value["policies"][0]["fallback"] = json!([{"groups": ["main"]}, {"groups": ["last"]}]);
    let router = Router::new(&value.to_string()).unwrap();
    let decision = route(&router, "main", "tiered");
    assert_eq!(tiers(&decision)[2..], [("l1", 1)]);
}

#[test]
fn hedge_and_content_fallback_come_from_the_matched_policy() {
    let router = Router::new(&config()).unwrap();
    let decision = route(&router, "main", "tiered");
    let expected = Hedge {
        min_delay_ms: 100.0,
        max_delay_ms: 1_500.0,
        max_hedges: 2,
    };
    assert_eq!(decision.hedge, Some(expected));
    assert_eq!(decision.content_fallback, ContentFallback::NextTier);

    let unmatched = route(&router, "main", "");
    assert_eq!(unmatched.hedge, None);
    assert_eq!(unmatched.content_fallback, ContentFallback::None);
}

#[test]
fn a_policy_without_them_hedges_nothing() {
    let mut value: Value = serde_json::from_str(&config()).unwrap();
    let policy = value["policies"][0].as_object_mut().unwrap();
    policy.remove("hedge");
    policy.remove("content_fallback");
    let router = Router::new(&value.to_string()).unwrap();
    let decision = route(&router, "main", "tiered");
    assert_eq!(decision.policy.as_deref(), Some("tiered"));
    assert_eq!(
        (decision.hedge, decision.content_fallback),
        (None, ContentFallback::None)
    );
}

#[test]
fn latency_tail_reads_first_token_or_whole_latency() {
    let router = Router::new(&config()).unwrap();
    assert_eq!(router.latency_tail_ms("m1", true), Ok(None));
    assert_eq!(router.latency_tail_ms("m1", false), Ok(None));
    for (latency, ttft) in [(900.0, 80.0), (1_100.0, 120.0)] {
        let lease = router.reserve("m1", "", "", 0, 0).unwrap();
        let outcome = Outcome {
            ttft_ms: Some(ttft),
            ..Outcome::ok(latency)
        };
        router.record(lease, &outcome).unwrap();
    }
    let first_token = router.latency_tail_ms("m1", true).unwrap().unwrap();
    let whole = router.latency_tail_ms("m1", false).unwrap().unwrap();
    let stats = router.stats().remove(0);
    assert_eq!(Some(first_token), stats.health.tail_ttft_ms);
    assert_eq!(Some(whole), stats.health.tail_latency_ms);
    assert!(
        first_token > stats.health.ewma_ttft_ms.unwrap(),
        "{first_token}"
    );
    assert!(whole > first_token);
    assert_eq!(router.latency_tail_ms("m2", true), Ok(None));
}

#[test]
fn latency_tail_of_an_unknown_deployment_is_an_error() {
    let router = Router::new(&config()).unwrap();
    for first_token in [true, false] {
        assert_eq!(
            router.latency_tail_ms("zz", first_token),
            Err(RouterError::UnknownDeployment("zz".into()))
        );
    }
}
