//! Hot-path costs: one routing decision (with filters that reject a quarter
//! of the group) and one recorded outcome.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use router_core::{Outcome, RouteRequest, Router};
use serde_json::json;

/// One weighted group of `n` deployments; every fourth lacks "tools".
fn router(n: usize) -> Router {
    let deployments: Vec<_> = (0..n)
        .map(|i| {
            let capabilities = if i % 4 == 0 {
                vec!["streaming"]
            } else {
                vec!["streaming", "tools"]
            };
            let region = if i % 2 == 0 { "eu" } else { "us" };
            json!({"id": format!("dep-{i}"), "region": region, "context_window": 128_000,
                   "capabilities": capabilities, "input_price_per_mtok": 1.0,
                   "output_price_per_mtok": 2.0, "weight": 1.0 + i as f64, "priority": i % 3})
        })
        .collect();
    let ids: Vec<String> = (0..n).map(|i| format!("dep-{i}")).collect();
    let config = json!({"default_group": "chat", "deployments": deployments,
                        "model_groups": [{"name": "chat", "deployments": ids}]});
    Router::new(&config.to_string()).unwrap()
}

fn route(c: &mut Criterion) {
    let mut group = c.benchmark_group("route");
    for n in [4, 64] {
        let router = router(n);
        let request = RouteRequest {
            input_tokens: 1_000,
            max_output_tokens: 500,
            capabilities: &["tools"],
            ..RouteRequest::new("chat")
        };
        group.bench_with_input(BenchmarkId::from_parameter(n), &request, |b, request| {
            b.iter(|| router.route(black_box(request)).unwrap())
        });
    }
    group.finish();
}

fn record(c: &mut Criterion) {
    let router = router(64);
    let outcome = Outcome {
        deployment: "dep-42",
        success: true,
        latency_ms: 120.0,
        input_tokens: 1_000,
        output_tokens: 300,
    };
    c.bench_function("record", |b| {
        b.iter(|| router.record(black_box(&outcome)).unwrap())
    });
}

criterion_group!(benches, route, record);
criterion_main!(benches);
