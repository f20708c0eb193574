//! The input-token estimate over a typical conversation (prose, code, JSON
//! and a little non-Latin text) of about 1 KB and 100 KB.
//!
//!     cargo bench -p router_core --bench tokens

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use router_core::estimate_input_tokens;

const TURNS: [&str; 4] = [
    "You are a careful assistant. Answer briefly, cite the documentation where you can, \
     and say so when you are not sure.\n",
    "Why does this function return None for an empty list?\n\n```python\ndef first(items):\n    \
     for item in items:\n        return item\n```\n",
    "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Zürich\", \"unit\": \"celsius\", \
     \"days\": 3}}\n",
    "Because the loop body never runs: there is no item, so the function falls off its end \
     and returns None implicitly. 東京の天気は晴れです。\n",
];

/// Messages cycling through `TURNS` until they add up to `bytes`.
fn conversation(bytes: usize) -> Vec<&'static str> {
    let mut messages = Vec::new();
    let mut total = 0;
    for turn in TURNS.iter().cycle() {
        if total >= bytes {
            break;
        }
        messages.push(*turn);
        total += turn.len();
    }
    messages
}

fn estimate(c: &mut Criterion) {
    let mut group = c.benchmark_group("tokens");
    for (name, bytes) in [("1KB", 1_000), ("100KB", 100_000)] {
        let messages = conversation(bytes);
        let size: usize = messages.iter().map(|m| m.len()).sum();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(name, |b| {
            b.iter(|| estimate_input_tokens(black_box(&messages), messages.len() as u32, 0))
        });
    }
    group.finish();
}

criterion_group!(benches, estimate);
criterion_main!(benches);
