//! Decision and record costs: a 20-rule policy set whose last rule matches,
//! over 4, 64 and 256 candidate deployments, per strategy.
//!
//!     cargo bench -p router_core --bench route

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use router_core::{Outcome, RouteRequest, Router};
use serde_json::{json, Value};

/// `n` deployments in group "g" and 20 policies: 19 that do not match the
/// benchmark request (each a different kind of condition) and a last one that does.
fn config(n: usize, strategy: &str, limited: bool) -> String {
    let ids: Vec<String> = (0..n).map(|i| format!("dep-{i}")).collect();
    let deployments: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let region = ["eu", "us", "ap"][i % 3];
            json!({"id": id, "region": region, "context_window": 128_000 + i * 1000,
                   "capabilities": ["streaming", "tools"], "input_price_per_mtok": 0.1 * i as f64 + 0.1,
                   "output_price_per_mtok": 0.3 * i as f64 + 0.3, "weight": 1.0 + (i % 4) as f64,
                   "rpm": limited.then_some(1_000_000), "tpm": limited.then_some(1_000_000_000)})
        })
        .collect();
    let misses = [
        json!({"field": "task", "eq": "code"}),
        json!({"field": "task", "in": ["summarize", "translate", "classify"]}),
        json!({"field": "tenant", "prefix": "beta-"}),
        json!({"field": "tenant", "regex": "^(internal|staff)-[0-9]+$"}),
        json!({"field": "tags", "contains": "batch"}),
        json!({"field": "tags", "in": ["eval", "offline"]}),
        json!({"field": "metadata.team", "eq": "finance"}),
        json!({"field": "metadata.priority", "exists": true}),
        json!({"field": "input_tokens", "gt": 100_000}),
        json!({"field": "max_output_tokens", "gte": 32_000}),
        json!({"field": "max_cost_usd", "lt": 0.0001}),
        json!({"field": "latency_target_ms", "lte": 50}),
        json!({"field": "model", "eq": "smart"}),
        json!({"field": "affinity_key", "prefix": "replay-"}),
        json!({"all": [{"field": "task", "eq": "chat"}, {"field": "tags", "contains": "nope"}]}),
        json!({"any": [{"field": "tenant", "eq": "x"}, {"field": "tenant", "eq": "y"}]}),
        json!({"not": {"field": "tenant", "exists": true}}),
        json!({"field": "capabilities", "contains": "vision"}),
        json!({"field": "regions", "in": ["cn"]}),
    ];
    let mut policies: Vec<Value> = misses
        .iter()
        .enumerate()
        .map(|(i, when)| json!({"id": format!("miss-{i}"), "when": when, "route_to": {"groups": ["g"]}}))
        .collect();
    policies.push(
        json!({"id": "chat", "when": {"field": "task", "eq": "chat"},
                         "route_to": {"groups": ["g"]}, "strategy": strategy}),
    );
    json!({
        "default_group": "g",
        "deployments": deployments,
        "model_groups": [{"name": "g", "deployments": ids}],
        "policies": policies,
    })
    .to_string()
}

const TAGS: [&str; 2] = ["interactive", "web"];
const METADATA: [(&str, &str); 2] = [("team", "search"), ("app", "assistant")];
const CAPABILITIES: [&str; 1] = ["streaming"];

fn request() -> RouteRequest<'static> {
    RouteRequest {
        tenant: "acme",
        task: "chat",
        tags: &TAGS,
        metadata: &METADATA,
        capabilities: &CAPABILITIES,
        input_tokens: 2_000,
        max_output_tokens: 500,
        ..RouteRequest::new("auto")
    }
}

fn route(c: &mut Criterion) {
    let mut group = c.benchmark_group("route");
    for strategy in [
        "weighted",
        "priority",
        "round_robin",
        "balanced",
        "least_in_flight",
    ] {
        for n in [4, 64, 256] {
            let router = Router::new(&config(n, strategy, true)).unwrap();
            // What the service does per request: policy match, the first
            // candidate drawn and leased (then given back), the rest left undrawn.
            group.bench_function(format!("{n}/{strategy}"), |b| {
                b.iter(|| {
                    let decision = router.decide(black_box(&request())).unwrap();
                    router.release(decision.lease.unwrap());
                })
            });
        }
    }
    // Every candidate drawn: what a caller that lists them all pays.
    let router = Router::new(&config(256, "weighted", true)).unwrap();
    group.bench_function("256/weighted/all_drawn", |b| {
        b.iter(|| {
            let decision = router.route(black_box(&request())).unwrap();
            router.release(decision.lease.unwrap());
        })
    });
    let router = Router::new(&config(64, "weighted", true)).unwrap();
    let explain = RouteRequest {
        dry_run: true,
        ..request()
    };
    group.bench_function("64/dry_run", |b| {
        b.iter(|| router.route(black_box(&explain)).unwrap())
    });
    group.finish();
}

fn record(c: &mut Criterion) {
    // Unlimited: every iteration really spends its tokens, and a budget would run dry.
    let router = Router::new(&config(64, "weighted", false)).unwrap();
    let outcome = Outcome {
        input_tokens: 1_800,
        output_tokens: 200,
        ttft_ms: Some(120.0),
        ..Outcome::ok(850.0)
    };
    c.bench_function("record", |b| {
        b.iter_batched(
            || router.reserve("dep-42", "acme", "", 2_000, 500).unwrap(),
            |lease| router.record(lease, black_box(&outcome)).unwrap(),
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, route, record);
criterion_main!(benches);
