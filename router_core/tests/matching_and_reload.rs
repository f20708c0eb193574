//! Properties of policy matching (against an independent evaluation of the
//! same condition) and of reload (surviving deployments keep their stats).

use proptest::prelude::*;
use router_core::{Outcome, RouteRequest, Router};
use serde_json::{json, Value};

const TASKS: [&str; 3] = ["code", "chat", ""];
const TAGS: [&str; 3] = ["urgent", "batch", "web"];

/// A condition tree over three kinds of leaf, as config JSON.
#[derive(Debug, Clone)]
enum Condition {
    TaskIs(&'static str),
    HasTag(&'static str),
    InputOver(u32),
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
}

#[derive(Debug, Clone)]
struct Features {
    task: &'static str,
    tags: Vec<&'static str>,
    input_tokens: u32,
}

impl Condition {
    fn to_json(&self) -> Value {
        match self {
            Condition::TaskIs(task) => json!({"field": "task", "eq": task}),
            Condition::HasTag(tag) => json!({"field": "tags", "contains": tag}),
            Condition::InputOver(n) => json!({"field": "input_tokens", "gt": n}),
            Condition::All(items) => {
                json!({"all": items.iter().map(Condition::to_json).collect::<Vec<_>>()})
            }
            Condition::Any(items) => {
                json!({"any": items.iter().map(Condition::to_json).collect::<Vec<_>>()})
            }
            Condition::Not(inner) => json!({"not": inner.to_json()}),
        }
    }

    /// The oracle: what the condition means, evaluated directly.
    fn holds(&self, f: &Features) -> bool {
        match self {
            Condition::TaskIs(task) => f.task == *task,
            Condition::HasTag(tag) => f.tags.contains(tag),
            Condition::InputOver(n) => f.input_tokens > *n,
            Condition::All(items) => items.iter().all(|c| c.holds(f)),
            Condition::Any(items) => items.iter().any(|c| c.holds(f)),
            Condition::Not(inner) => !inner.holds(f),
        }
    }
}

fn condition() -> impl Strategy<Value = Condition> {
    let leaf = prop_oneof![
        proptest::sample::select(TASKS.to_vec()).prop_map(Condition::TaskIs),
        proptest::sample::select(TAGS.to_vec()).prop_map(Condition::HasTag),
        (0u32..20_000).prop_map(Condition::InputOver),
    ];
    leaf.prop_recursive(3, 16, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 1..4).prop_map(Condition::All),
            proptest::collection::vec(inner.clone(), 1..4).prop_map(Condition::Any),
            inner.prop_map(|c| Condition::Not(Box::new(c))),
        ]
    })
}

fn features() -> impl Strategy<Value = Features> {
    (
        proptest::sample::select(TASKS.to_vec()),
        proptest::sample::subsequence(TAGS.to_vec(), 0..=3),
        0u32..20_000,
    )
        .prop_map(|(task, tags, input_tokens)| Features {
            task,
            tags,
            input_tokens,
        })
}

fn deployment(id: &str) -> Value {
    json!({"id": id, "region": "eu", "context_window": 1_000_000,
           "input_price_per_mtok": 0.0, "output_price_per_mtok": 0.0})
}

proptest! {
    #[test]
    fn a_policy_matches_exactly_when_its_condition_holds(when in condition(), f in features()) {
        let config = json!({
            "default_group": "g",
            "deployments": [deployment("a")],
            "model_groups": [{"name": "g", "deployments": ["a"]}],
            "policies": [{"id": "p", "when": when.to_json(), "route_to": {"groups": ["g"]}}],
        });
        let router = Router::new(&config.to_string()).unwrap();
        let request = RouteRequest {
            task: f.task,
            tags: &f.tags,
            input_tokens: f.input_tokens,
            dry_run: true,
            ..RouteRequest::new("auto")
        };
        let decision = router.route(&request).unwrap();
        prop_assert_eq!(decision.policy.is_some(), when.holds(&f));
    }

    #[test]
    fn reload_keeps_the_stats_of_surviving_deployments(
        before in proptest::collection::btree_map(0u8..8, 0u64..5, 1..8),
        after in proptest::collection::btree_set(0u8..8, 1..8),
    ) {
        let config = |ids: &mut dyn Iterator<Item = String>| {
            let ids: Vec<String> = ids.collect();
            json!({
                "deployments": ids.iter().map(|id| deployment(id)).collect::<Vec<_>>(),
                "model_groups": [{"name": "g", "deployments": ids}],
            })
            .to_string()
        };
        let router = Router::new(&config(&mut before.keys().map(|k| format!("d{k}")))).unwrap();
        for (id, &count) in &before {
            for _ in 0..count {
                let lease = router.reserve(&format!("d{id}"), "", "", 0, 10).unwrap();
                router.record(lease, &Outcome::ok(1.0)).unwrap();
            }
        }
        router.reload(&config(&mut after.iter().map(|k| format!("d{k}")))).unwrap();
        for stats in router.stats() {
            let id: u8 = stats.deployment[1..].parse().unwrap();
            prop_assert_eq!(stats.requests, before.get(&id).copied().unwrap_or(0), "{}", stats.deployment);
        }
        prop_assert_eq!(router.stats().len(), after.len());
    }
}
