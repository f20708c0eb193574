//! What a config compiles to, as plain JSON: every deployment with its
//! defaults filled in, each model group with its strategy and members, the
//! policies in the order they are tried with the strategy each one uses. A
//! front end shows it to the operator, and reads the routing values of its
//! deployments from it rather than deciding them again.

use serde_json::{json, Value};

use super::Config;

impl Config {
    pub fn describe(&self) -> Value {
        let deployments: Vec<Value> = self
            .deployments
            .iter()
            .map(|d| {
                json!({
                    "id": d.id,
                    "region": d.region,
                    "context_window": d.context_window,
                    "capabilities": d.capabilities,
                    "input_price_per_mtok": d.input_price_per_mtok,
                    "output_price_per_mtok": d.output_price_per_mtok,
                    "weight": d.weight,
                    "priority": d.priority,
                    "rpm": d.rpm,
                    "tpm": d.tpm,
                })
            })
            .collect();
        let groups: Vec<Value> = self
            .model_groups
            .iter()
            .map(|g| json!({"name": g.name, "strategy": g.strategy.as_str(), "deployments": g.deployments}))
            .collect();
        let policies: Vec<Value> = self
            .policies
            .iter()
            .map(|p| {
                json!({
                    "id": p.id,
                    "when": p.when,
                    "route_to": p.route_to,
                    "strategy": self.policy_strategy(p).as_str(),
                    "constraints": p.constraints,
                    "fallback": p.fallback,
                    "hedge": p.hedge,
                    "content_fallback": p.content_fallback.as_str(),
                    "experiment": p.experiment,
                    "shadow": p.shadow,
                })
            })
            .collect();
        json!({
            "default_group": self.default_group,
            "deployments": deployments,
            "model_groups": groups,
            "policies": policies,
        })
    }
}
