//! Properties of `Router::route` over generated configs and requests.

use std::collections::BTreeSet;

use proptest::prelude::*;
use router_core::{Decision, Filter, RouteRequest, Router};
use serde_json::json;

const CAPABILITIES: [&str; 4] = ["streaming", "tools", "vision", "json_mode"];
const REGIONS: [&str; 3] = ["eu", "us", "ap"];

#[derive(Debug, Clone)]
struct Spec {
    context_window: u32,
    capabilities: Vec<&'static str>,
    region: &'static str,
    weight: f64,
    priority: u32,
}

#[derive(Debug, Clone)]
struct Req {
    input_tokens: u32,
    max_output_tokens: u32,
    capabilities: Vec<&'static str>,
    regions: Vec<&'static str>,
    seed: u64,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        1u32..200_000,
        proptest::sample::subsequence(CAPABILITIES.to_vec(), 0..=4),
        proptest::sample::select(REGIONS.to_vec()),
        0.01f64..100.0,
        0u32..4,
    )
        .prop_map(
            |(context_window, capabilities, region, weight, priority)| Spec {
                context_window,
                capabilities,
                region,
                weight,
                priority,
            },
        )
}

fn req() -> impl Strategy<Value = Req> {
    let names = CAPABILITIES
        .to_vec()
        .into_iter()
        .chain(["telepathy"])
        .collect::<Vec<_>>();
    let regions = REGIONS
        .to_vec()
        .into_iter()
        .chain(["mars"])
        .collect::<Vec<_>>();
    (
        0u32..150_000,
        0u32..100_000,
        proptest::sample::subsequence(names, 0..=2),
        proptest::sample::subsequence(regions, 0..=2),
        any::<u64>(),
    )
        .prop_map(
            |(input_tokens, max_output_tokens, capabilities, regions, seed)| Req {
                input_tokens,
                max_output_tokens,
                capabilities,
                regions,
                seed,
            },
        )
}

fn router(specs: &[Spec], strategy: &str) -> Router {
    let deployments: Vec<_> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({"id": format!("d{i}"), "region": s.region, "context_window": s.context_window,
                   "capabilities": s.capabilities, "input_price_per_mtok": 0.0,
                   "output_price_per_mtok": 0.0, "weight": s.weight, "priority": s.priority})
        })
        .collect();
    let ids: Vec<String> = (0..specs.len()).map(|i| format!("d{i}")).collect();
    let config = json!({"deployments": deployments,
                        "model_groups": [{"name": "g", "strategy": strategy, "deployments": ids}]});
    Router::new(&config.to_string()).unwrap()
}

fn route(router: &Router, req: &Req) -> Decision {
    let request = RouteRequest {
        input_tokens: req.input_tokens,
        max_output_tokens: req.max_output_tokens,
        capabilities: &req.capabilities,
        regions: &req.regions,
        seed: Some(req.seed),
        // No lease: a lease counts in flight, which least_in_flight then sees.
        dry_run: true,
        ..RouteRequest::new("g")
    };
    router.route(&request).unwrap()
}

/// The filter that should reject `spec`, computed independently of the router.
fn expected_filter(spec: &Spec, req: &Req) -> Option<Filter> {
    let needed = u64::from(req.input_tokens) + u64::from(req.max_output_tokens);
    if u64::from(spec.context_window) < needed {
        Some(Filter::ContextWindow)
    } else if !req
        .capabilities
        .iter()
        .all(|c| spec.capabilities.contains(c))
    {
        Some(Filter::Capabilities)
    } else if !req.regions.is_empty() && !req.regions.contains(&spec.region) {
        Some(Filter::Region)
    } else {
        None
    }
}

/// Strategies whose candidates come best first and whose order a seed fixes
/// (round robin moves on between decisions; balanced leads with one of two).
fn strategy_name() -> impl Strategy<Value = &'static str> {
    proptest::sample::select(vec![
        "weighted",
        "priority",
        "lowest_cost",
        "lowest_latency",
        "least_in_flight",
        "usage_headroom",
    ])
}

proptest! {
    #[test]
    fn candidates_and_rejected_partition_the_group(
        specs in proptest::collection::vec(spec(), 1..12), req in req(), strategy in strategy_name(),
    ) {
        let decision = route(&router(&specs, strategy), &req);
        let mut seen = BTreeSet::new();
        for candidate in &decision.candidates {
            prop_assert!(seen.insert(candidate.deployment.to_string()));
        }
        for rejection in &decision.rejected {
            prop_assert!(seen.insert(rejection.deployment.to_string()));
        }
        prop_assert_eq!(seen.len(), specs.len());
        for (i, spec) in specs.iter().enumerate() {
            let id = format!("d{i}");
            let actual = decision.rejected.iter().find(|r| *r.deployment == *id).map(|r| r.filter);
            prop_assert_eq!(actual, expected_filter(spec, &req), "{}", id);
        }
    }

    #[test]
    fn same_seed_same_decision(
        specs in proptest::collection::vec(spec(), 1..12), req in req(), strategy in strategy_name(),
    ) {
        let router = router(&specs, strategy);
        let (first, second) = (route(&router, &req), route(&router, &req));
        prop_assert_eq!(&first.candidates, &second.candidates);
        prop_assert_eq!(&first.rejected, &second.rejected);
    }

    #[test]
    fn candidates_come_best_first(
        specs in proptest::collection::vec(spec(), 1..12), req in req(), strategy in strategy_name(),
    ) {
        let decision = route(&router(&specs, strategy), &req);
        prop_assert!(decision.candidates.windows(2).all(|w| w[0].score >= w[1].score));
        // Weighted keys may underflow to 0 for tiny weights; the order uses log keys.
        prop_assert!(decision.candidates.iter().all(|c| c.score >= 0.0 && c.score <= 1.0));
        if strategy == "priority" {
            let priority = |id: &str| specs[id[1..].parse::<usize>().unwrap()].priority;
            let priorities: Vec<u32> = decision.candidates.iter().map(|c| priority(&c.deployment)).collect();
            prop_assert!(priorities.windows(2).all(|w| w[0] <= w[1]), "{:?}", priorities);
        }
    }
}
