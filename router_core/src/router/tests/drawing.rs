//! Candidates drawn one at a time against a straightforward reference: the
//! same procedure written with linear scans over plain lists, computed from the
//! generated config itself rather than the compiled table. Random configs
//! (two tiers, weights, priorities, drained deployments) and requests
//! (filters, affinity keys, dry runs) must give the same candidates, scores,
//! tiers and rejections, whether drawn all at once or one by one.

use proptest::prelude::*;
use proptest::strategy::Strategy as Generate;
use serde_json::json;

use super::*;
use crate::router::affinity::unit_hash;
use crate::weights::{integer_weights, scaled_draw};

const CAPABILITIES: [&str; 3] = ["streaming", "tools", "vision"];
const REGIONS: [&str; 3] = ["eu", "us", "ap"];

#[derive(Debug, Clone)]
struct Spec {
    context_window: u32,
    capabilities: Vec<&'static str>,
    region: &'static str,
    weight: f64,
    priority: u32,
    drained: bool,
}

#[derive(Debug, Clone)]
struct Case {
    specs: Vec<Spec>,
    /// Tier 0 is `specs[..split]`, the fallback tier the rest.
    split: usize,
    strategy: &'static str,
    input_tokens: u32,
    capabilities: Vec<&'static str>,
    regions: Vec<&'static str>,
    affinity_key: String,
    dry_run: bool,
    seed: u64,
}

fn spec() -> impl Generate<Value = Spec> {
    (
        1_000u32..10_000,
        proptest::sample::subsequence(CAPABILITIES.to_vec(), 0..=3),
        proptest::sample::select(REGIONS.to_vec()),
        prop_oneof![Just(1.0), 0.01f64..100.0],
        0u32..3,
        proptest::bool::weighted(0.2),
    )
        .prop_map(
            |(context_window, capabilities, region, weight, priority, drained)| Spec {
                context_window,
                capabilities,
                region,
                weight,
                priority,
                drained,
            },
        )
}

fn case() -> impl Generate<Value = Case> {
    (
        proptest::collection::vec(spec(), 1..40),
        any::<prop::sample::Index>(),
        proptest::sample::select(vec!["weighted", "priority", "round_robin"]),
        0u32..9_000,
        proptest::sample::subsequence(vec!["streaming", "tools", "telepathy"], 0..=2),
        proptest::sample::subsequence(vec!["eu", "us", "mars"], 0..=2),
        prop_oneof![Just(String::new()), "[a-z]{1,8}"],
        any::<bool>(),
        any::<u64>(),
    )
        .prop_map(
            |(
                specs,
                split,
                strategy,
                input_tokens,
                capabilities,
                regions,
                affinity_key,
                dry_run,
                seed,
            )| {
                let split = 1 + split.index(specs.len());
                Case {
                    specs,
                    split,
                    strategy,
                    input_tokens,
                    capabilities,
                    regions,
                    affinity_key,
                    dry_run,
                    seed,
                }
            },
        )
}

fn id(i: usize) -> String {
    format!("d{i}")
}

fn router(case: &Case) -> Router {
    let deployments: Vec<_> = (case.specs.iter().enumerate())
        .map(|(i, s)| {
            json!({"id": id(i), "region": s.region, "context_window": s.context_window,
                   "capabilities": s.capabilities, "input_price_per_mtok": 0.0,
                   "output_price_per_mtok": 0.0, "weight": s.weight, "priority": s.priority})
        })
        .collect();
    let ids: Vec<String> = (0..case.specs.len()).map(id).collect();
    let (primary, fallback) = ids.split_at(case.split);
    let fallback: Vec<_> = (!fallback.is_empty())
        .then(|| json!({"deployments": fallback}))
        .into_iter()
        .collect();
    let config = json!({
        "deployments": deployments,
        "model_groups": [{"name": "g", "deployments": ids}],
        "policies": [{"id": "p", "route_to": {"deployments": primary}, "fallback": fallback,
                      "strategy": case.strategy}],
    });
    let router = Router::new(&config.to_string()).unwrap();
    for (i, spec) in case.specs.iter().enumerate() {
        if spec.drained {
            router.set_drained(&id(i), true).unwrap();
        }
    }
    router
}

fn request(case: &Case) -> RouteRequest<'_, &'static str> {
    RouteRequest {
        input_tokens: case.input_tokens,
        max_output_tokens: 500,
        capabilities: &case.capabilities,
        regions: &case.regions,
        affinity_key: &case.affinity_key,
        dry_run: case.dry_run,
        seed: Some(case.seed),
        ..RouteRequest::new("g")
    }
}

type Drawn = (Vec<(String, u32, f64)>, Vec<(String, Filter)>);

fn drawn(decision: &Decision) -> Drawn {
    let candidates = (decision.candidates.iter())
        .map(|c| (c.deployment.to_string(), c.tier, c.score))
        .collect();
    let rejected = (decision.rejected.iter())
        .map(|r| (r.deployment.to_string(), r.filter))
        .collect();
    (candidates, rejected)
}

/// The filter that rejects deployment `i`, from its spec alone.
fn rejection(case: &Case, i: usize) -> Option<Filter> {
    let spec = &case.specs[i];
    let known = |c: &&str| case.specs.iter().any(|s| s.capabilities.contains(c));
    if spec.context_window < case.input_tokens + 500 {
        Some(Filter::ContextWindow)
    } else if !(case.capabilities.iter()).all(|c| known(c) && spec.capabilities.contains(c)) {
        Some(Filter::Capabilities)
    } else if !case.regions.is_empty() && !case.regions.contains(&spec.region) {
        Some(Filter::Region)
    } else if spec.drained {
        Some(Filter::Health)
    } else {
        None
    }
}

/// The decision drawn by plain scans: each tier's members in the strategy's
/// order; the session's deployment first (the rendezvous order walked to its
/// first survivor, everything walked leaving the draw); then weighted draws
/// among what is left of each rank by running sums, or round robin from the
/// tier's turn; every deployment met checked, and rejections listed in the
/// plan's order.
fn reference(case: &Case) -> Drawn {
    let mut rng = SplitMix64::new(case.seed);
    let n = case.specs.len();
    let tiers: Vec<Vec<usize>> = [0..case.split, case.split..n]
        .into_iter()
        .filter(|range| !range.is_empty())
        .map(|range| {
            let mut members: Vec<usize> = range.collect();
            if case.strategy == "priority" {
                members.sort_by_key(|&i| case.specs[i].priority);
            }
            members
        })
        .collect();
    let mut candidates = Vec::new();
    let mut rejected: Vec<(usize, usize, usize, Filter)> = Vec::new(); // (tier, position, index, filter)
    for (t, members) in tiers.iter().enumerate() {
        let weights = integer_weights(members.iter().map(|&i| case.specs[i].weight));
        let total: u64 = weights.iter().sum();
        let mut pool: Vec<bool> = vec![true; members.len()];
        let remaining = |pool: &[bool]| -> u64 {
            (0..pool.len())
                .filter(|&p| pool[p])
                .map(|p| weights[p])
                .sum()
        };
        let turn = if case.dry_run { 0 } else { t as u64 };
        let start = (turn % members.len() as u64) as usize;
        let score = |p: usize, pool: &[bool]| match case.strategy {
            "priority" => 1.0 / (1.0 + f64::from(case.specs[members[p]].priority)),
            "round_robin" => {
                let k = members.len();
                1.0 - ((p + k - start) % k) as f64 / k as f64
            }
            _ => remaining(pool) as f64 / total as f64,
        };
        let mut meet =
            |p: usize, score: f64, candidates: &mut Vec<_>| match rejection(case, members[p]) {
                Some(filter) => rejected.push((t, p, members[p], filter)),
                None => candidates.push((id(members[p]), t as u32, score)),
            };
        if t == 0 && !case.affinity_key.is_empty() {
            let rendezvous = |p: usize| {
                let spec = &case.specs[members[p]];
                -spec.weight / unit_hash(&case.affinity_key, &id(members[p])).ln()
            };
            let mut order: Vec<usize> = (0..members.len()).collect();
            // Descending; among equals the later member first.
            order.sort_by(|&a, &b| rendezvous(b).total_cmp(&rendezvous(a)).then(b.cmp(&a)));
            for p in order {
                let before = candidates.len();
                meet(p, score(p, &pool), &mut candidates);
                pool[p] = false;
                if candidates.len() > before {
                    break;
                }
            }
        }
        if case.strategy == "round_robin" {
            for offset in 0..members.len() {
                let p = (start + offset) % members.len();
                if pool[p] {
                    meet(
                        p,
                        1.0 - offset as f64 / members.len() as f64,
                        &mut candidates,
                    );
                }
            }
            continue;
        }
        let rank = |p: usize| {
            if case.strategy == "priority" {
                case.specs[members[p]].priority
            } else {
                0
            }
        };
        let mut p = 0;
        while p < members.len() {
            let run: Vec<usize> = (p..members.len())
                .take_while(|&q| rank(q) == rank(p))
                .collect();
            p += run.len();
            loop {
                let left: Vec<usize> = run.iter().copied().filter(|&q| pool[q]).collect();
                let sum: u64 = left.iter().map(|&q| weights[q]).sum();
                if sum == 0 {
                    break;
                }
                let target = scaled_draw(rng.next_u64(), sum);
                let mut running = 0;
                let chosen = *left
                    .iter()
                    .find(|&&q| {
                        running += weights[q];
                        running > target
                    })
                    .unwrap();
                let drawn_score = score(chosen, &pool);
                pool[chosen] = false;
                meet(chosen, drawn_score, &mut candidates);
            }
        }
    }
    rejected.sort_by_key(|&(t, p, _, _)| (t, p));
    let rejected = rejected
        .into_iter()
        .map(|(_, _, i, f)| (id(i), f))
        .collect();
    (candidates, rejected)
}

proptest! {
    // No regression file: it would land inside the Python package's directory.
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn drawing_matches_the_reference(case in case()) {
        let decision = router(&case).route(&request(&case)).unwrap();
        prop_assert_eq!(drawn(&decision), reference(&case));
    }

    #[test]
    fn drawing_one_at_a_time_matches_drawing_all(case in case()) {
        let whole = router(&case).route(&request(&case)).unwrap();
        let mut piecemeal = router(&case).decide(&request(&case)).unwrap();
        prop_assert!(!piecemeal.candidates.is_empty() || piecemeal.is_complete());
        let mut index = 0;
        while piecemeal.draw(index) {
            index += 1;
        }
        prop_assert!(piecemeal.is_complete());
        prop_assert_eq!(drawn(&piecemeal), drawn(&whole));
    }
}

/// How often each of `ids` came first over `n` seeds.
fn first_shares(router: &Router, n: u64) -> std::collections::BTreeMap<String, f64> {
    let mut counts = std::collections::BTreeMap::new();
    for seed in 0..n {
        let request = RouteRequest {
            seed: Some(seed),
            dry_run: true,
            ..RouteRequest::new("g")
        };
        let decision = router.decide(&request).unwrap();
        *counts
            .entry(decision.candidates[0].deployment.to_string())
            .or_insert(0.0) += 1.0 / n as f64;
    }
    counts
}

fn weighted_router(strategy: &str, drained: &[&str]) -> Router {
    use crate::testing::{config, group, weighted};
    let deployments = (1..=4)
        .map(|i| weighted(&format!("w{i}"), f64::from(i), i % 2))
        .collect();
    let router = Router::new(&config(
        deployments,
        vec![group("g", strategy, &["w1", "w2", "w3", "w4"])],
    ))
    .unwrap();
    for id in drained {
        router.set_drained(id, true).unwrap();
    }
    router
}

#[test]
fn weighted_first_pick_is_proportional_to_weight_among_those_that_can_serve() {
    let shares = first_shares(&weighted_router("weighted", &[]), 20_000);
    for (id, share) in &shares {
        let weight: f64 = id[1..].parse().unwrap();
        assert!((share - weight / 10.0).abs() < 0.02, "{id}: {share}");
    }
    // With w4 out, the others share in proportion 1:2:3.
    let shares = first_shares(&weighted_router("weighted", &["w4"]), 20_000);
    assert_eq!(shares.len(), 3);
    for (id, share) in &shares {
        let weight: f64 = id[1..].parse().unwrap();
        assert!((share - weight / 6.0).abs() < 0.02, "{id}: {share}");
    }
}

#[test]
fn priority_draws_the_lowest_rank_first_and_breaks_ties_by_weight() {
    // Rank 0 holds w2 (weight 2) and w4 (weight 4): w4 leads two times in three.
    let shares = first_shares(&weighted_router("priority", &[]), 20_000);
    assert_eq!(shares.len(), 2);
    assert!((shares["w4"] - 2.0 / 3.0).abs() < 0.02, "{shares:?}");
    let decision = weighted_router("priority", &[])
        .route(&RouteRequest::new("g"))
        .unwrap();
    let scores: Vec<f64> = decision.candidates.iter().map(|c| c.score).collect();
    assert_eq!(scores, [1.0, 1.0, 0.5, 0.5]);
}

#[test]
fn round_robin_turns_through_the_members_passing_over_those_that_cannot_serve() {
    let router = weighted_router("round_robin", &["w2"]);
    let firsts: Vec<String> = (0..8)
        .map(|_| {
            let decision = router.decide(&RouteRequest::new("g")).unwrap();
            router.release(decision.lease.unwrap());
            decision.candidates[0].deployment.to_string()
        })
        .collect();
    // w2's turn goes to w3, the next member that can serve.
    assert_eq!(firsts, ["w1", "w3", "w3", "w4", "w1", "w3", "w3", "w4"]);
}

#[test]
fn a_decision_draws_only_what_it_is_asked_for() {
    let router = weighted_router("weighted", &[]);
    let mut decision = router.decide(&RouteRequest::new("g")).unwrap();
    assert_eq!(decision.candidates.len(), 1);
    assert!(!decision.is_complete());
    assert!(decision.draw(2));
    assert_eq!(decision.candidates.len(), 3);
    decision.draw_all();
    assert!(decision.is_complete());
    assert_eq!(decision.candidates.len(), 4);
    assert!(!decision.draw(4));
}

#[test]
fn a_complete_decision_lists_its_rejections_in_the_plans_order() {
    let router = weighted_router("weighted", &["w3", "w1", "w2"]);
    for seed in 0..20 {
        let request = RouteRequest {
            seed: Some(seed),
            ..RouteRequest::new("g")
        };
        let mut decision = router.decide(&request).unwrap();
        assert_eq!(&*decision.candidates[0].deployment, "w4");
        router.release(decision.lease.take().unwrap());
        decision.draw_all();
        let rejected: Vec<&str> = decision.rejected.iter().map(|r| &*r.deployment).collect();
        assert_eq!(rejected, ["w1", "w2", "w3"]);
    }
}
