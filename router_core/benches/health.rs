//! Hot-path costs of deployment health: the route filter's `admit` check and
//! recording one outcome.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use router_core::{Clock, Health, HealthPolicy, OutcomeClass};

fn admit(c: &mut Criterion) {
    let clock = Clock::default();
    let health = Health::new(HealthPolicy::default());
    c.bench_function("health/admit", |b| {
        b.iter(|| health.admit(black_box(clock.now())))
    });
}

fn on_outcome(c: &mut Criterion) {
    let clock = Clock::default();
    let health = Health::new(HealthPolicy::default());
    c.bench_function("health/on_outcome", |b| {
        b.iter(|| {
            health.on_outcome(
                black_box(OutcomeClass::Ok),
                black_box(120.0),
                Some(35.0),
                None,
                clock.now(),
            )
        })
    });
}

criterion_group!(benches, admit, on_outcome);
criterion_main!(benches);
