//! What a config compiles to, as plain JSON: every deployment with its
//! defaults filled in, each model group with its strategy and members, the
//! policies in the order they are tried with the strategy each one uses (each
//! experiment variant its own, named; each shadow with the share of its
//! deployments' rate-limit budgets it leaves to callers). A
//! front end shows it to the operator, and reads the routing values of its
//! deployments from it rather than deciding them again.

use serde_json::{json, Value};

use super::{Config, ExperimentConfig, PolicyConfig};

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
                    "experiment": p.experiment.as_ref().map(|e| self.describe_experiment(p, e)),
                    "shadow": p.shadow.as_ref().map(|s| json!({
                        "deployments": s.deployments,
                        "sample": s.sample,
                        "max_in_flight": s.max_in_flight,
                        "keep_share": self.rate_limits.shadow_keep_share(),
                    })),
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

    fn describe_experiment(&self, policy: &PolicyConfig, experiment: &ExperimentConfig) -> Value {
        let variants: Vec<Value> = (experiment.variants.iter().enumerate())
            .map(|(i, v)| {
                json!({
                    "name": v.display_name(i),
                    "groups": v.groups,
                    "deployments": v.deployments,
                    "weight": v.weight,
                    "strategy": self.target_strategy(policy, &v.target()).as_str(),
                })
            })
            .collect();
        json!({"id": experiment.id, "sticky_by": experiment.sticky_by, "variants": variants})
    }
}
