//! Config builders shared by the unit tests.

use serde_json::{json, Value};

/// A deployment with zero prices and default weight and priority.
pub(crate) fn deployment(
    id: &str,
    region: &str,
    context_window: u32,
    capabilities: &[&str],
) -> Value {
    json!({
        "id": id, "region": region, "context_window": context_window, "capabilities": capabilities,
        "input_price_per_mtok": 0.0, "output_price_per_mtok": 0.0,
    })
}

/// `deployment` with a weight and a priority.
pub(crate) fn weighted(id: &str, weight: f64, priority: u32) -> Value {
    let mut value = deployment(id, "local", 1_000, &[]);
    value["weight"] = json!(weight);
    value["priority"] = json!(priority);
    value
}

pub(crate) fn group(name: &str, strategy: &str, members: &[&str]) -> Value {
    json!({"name": name, "strategy": strategy, "deployments": members})
}

pub(crate) fn config(deployments: Vec<Value>, groups: Vec<Value>) -> String {
    json!({"deployments": deployments, "model_groups": groups}).to_string()
}

/// Deployments "a".."d" in one weighted group "chat" (the default), with
/// different windows, capabilities and regions so every filter has work.
pub(crate) fn chat_config() -> String {
    let mut value: Value = serde_json::from_str(&config(
        vec![
            deployment("a", "eu", 8_000, &["streaming", "tools"]),
            deployment("b", "us", 128_000, &["streaming"]),
            deployment("c", "eu", 128_000, &["streaming", "vision"]),
            deployment("d", "us", 1_000_000, &["streaming", "tools", "vision"]),
        ],
        vec![group("chat", "weighted", &["a", "b", "c", "d"])],
    ))
    .unwrap();
    value["default_group"] = json!("chat");
    value.to_string()
}
