//! Hot-path cost of rate limiting one attempt: reserve on three limits
//! (deployment, tenant, API key), then settle with the real usage.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use router_core::{reserve, settle, Limit, LimitSpec};

const MINUTE: u64 = 60_000_000_000;

fn reserve_and_settle(c: &mut Criterion) {
    let spec = |rpm, tpm| LimitSpec {
        rpm: Some(rpm),
        tpm: Some(tpm),
    };
    let deployment = Limit::new(spec(10_000, 2_000_000));
    let tenant = Limit::new(spec(1_000, 500_000));
    let key = Limit::new(spec(100, 100_000));
    let limits = [&deployment, &tenant, &key];
    // A minute passes between iterations so that the buckets never run dry
    // and every call pays for a refill, as it would in production.
    let mut now = 0;
    c.bench_function("reserve_settle_3_limits", |b| {
        b.iter(|| {
            now += MINUTE;
            let reservation = reserve(black_box(&limits), black_box(1_500), now).unwrap();
            settle(black_box(&limits), reservation, black_box(1_234), now);
        })
    });
}

criterion_group!(benches, reserve_and_settle);
criterion_main!(benches);
