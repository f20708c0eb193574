//! The user-facing config schema (phase one of two): strict serde structs plus
//! validation. A `Config` that exists has passed every check, so compiling it
//! into a [`Table`](crate::table::Table) cannot fail.

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;

use crate::attempts::{ContentFallback, HedgeConfig};
use crate::error::ConfigError;
use crate::health::HealthPolicy;
use crate::matcher::{Matcher, MatcherConfig};
use crate::ratelimit::LimitSpec;
use crate::strategy::Strategy;
use crate::table::MAX_NAMES;

/// `route("auto")` selects `default_group`, so no group may take that name.
pub const AUTO_GROUP: &str = "auto";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub default_group: Option<String>,
    pub deployments: Vec<DeploymentConfig>,
    pub model_groups: Vec<ModelGroupConfig>,
    /// Ordered rules; the first whose `when` matches decides. With none
    /// matching, the requested model group routes with its own strategy.
    #[serde(default)]
    pub policies: Vec<PolicyConfig>,
    /// Weights of the `balanced` strategy.
    #[serde(default)]
    pub scoring: ScoringConfig,
    #[serde(default)]
    pub rate_limits: RateLimitsConfig,
    /// Circuit breakers, cool-downs and outlier ejection, for every deployment.
    #[serde(default)]
    pub health: HealthPolicy,
}

/// A routing rule: a condition, where to send matching requests, how to
/// order them, extra constraints, and where to go when those all fail.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    pub id: String,
    /// No condition matches every request (a catch-all rule).
    #[serde(default)]
    pub when: Option<MatcherConfig>,
    pub route_to: TargetConfig,
    /// Defaults to the strategy of `route_to`'s single group, else weighted.
    #[serde(default)]
    pub strategy: Option<Strategy>,
    #[serde(default)]
    pub constraints: ConstraintsConfig,
    /// Tried in order after every `route_to` candidate; filters (residency
    /// included) apply to fallbacks exactly as to the primary candidates.
    #[serde(default)]
    pub fallback: Vec<TargetConfig>,
    /// Race a slow first attempt against the next candidate; none waits it out.
    #[serde(default)]
    pub hedge: Option<HedgeConfig>,
    /// Whether a content refusal tries further candidates.
    #[serde(default)]
    pub content_fallback: ContentFallback,
}

/// A set of deployments, named directly or through their model groups.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub deployments: Vec<String>,
}

/// Limits a policy adds to every request it routes.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConstraintsConfig {
    /// Ceiling on a request's estimated cost; the lower of this and the request's own applies.
    #[serde(default)]
    pub max_cost_usd: Option<f64>,
    /// Regions the policy allows, intersected with the request's own.
    #[serde(default)]
    pub regions: Option<Vec<String>>,
    /// Capabilities every candidate must have, besides the request's.
    #[serde(default)]
    pub capabilities: Vec<String>,
}

/// How the `balanced` strategy weighs what it knows of each candidate; each
/// term is normalised to [0, 1] among the candidates before weighting.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScoringConfig {
    pub cost: f64,
    pub latency: f64,
    pub errors: f64,
    pub load: f64,
    pub headroom: f64,
    /// Share of decisions whose first candidate is drawn uniformly at random,
    /// so that deployments the scores shun (or that recovered) get measured.
    pub exploration: f64,
}

impl Default for ScoringConfig {
    fn default() -> Self {
        ScoringConfig {
            cost: 1.0,
            latency: 1.0,
            errors: 2.0,
            load: 1.0,
            headroom: 1.0,
            exploration: 0.05,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentConfig {
    pub id: String,
    pub region: String,
    pub context_window: u32,
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// USD per million tokens. Validated and kept for the cost policies to come;
    /// the compiled table does not carry prices yet because nothing reads them.
    pub input_price_per_mtok: f64,
    pub output_price_per_mtok: f64,
    #[serde(default = "default_weight")]
    pub weight: f64,
    /// Lower is preferred by the `priority` strategy.
    #[serde(default)]
    pub priority: u32,
    /// Requests per minute this deployment may take; none means unlimited.
    #[serde(default)]
    pub rpm: Option<u32>,
    /// Tokens (input + output) per minute this deployment may take.
    #[serde(default)]
    pub tpm: Option<u32>,
}

impl DeploymentConfig {
    pub fn limit(&self) -> LimitSpec {
        LimitSpec {
            rpm: self.rpm,
            tpm: self.tpm,
        }
    }
}

/// Budgets per tenant and per API key id, on top of each deployment's own.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitsConfig {
    #[serde(default)]
    pub tenants: BTreeMap<String, LimitSpec>,
    #[serde(default)]
    pub api_keys: BTreeMap<String, LimitSpec>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelGroupConfig {
    pub name: String,
    #[serde(default)]
    pub strategy: Strategy,
    /// Deployment ids; a deployment may belong to several groups.
    pub deployments: Vec<String>,
}

/// The key reported for errors that belong to no particular field.
const DOCUMENT: &str = "config";

fn default_weight() -> f64 {
    1.0
}

impl Config {
    /// Parses and validates a JSON document.
    pub fn from_json(json: &str) -> Result<Self, ConfigError> {
        let mut de = serde_json::Deserializer::from_str(json);
        let config: Config = serde_path_to_error::deserialize(&mut de).map_err(|err| {
            let key = match err.path().to_string() {
                // The document root, or a syntax error serde cannot place.
                path if path == "." || path == "?" => DOCUMENT.to_owned(),
                path => path,
            };
            // The key path says where; serde's line and column of the JSON
            // would only point into a document the operator never wrote.
            let inner = err.inner();
            let message = inner.to_string();
            let position = format!(" at line {} column {}", inner.line(), inner.column());
            ConfigError::Schema {
                key,
                message: message
                    .strip_suffix(&position)
                    .unwrap_or(&message)
                    .to_owned(),
            }
        })?;
        // Reject trailing garbage, as `serde_json::from_str` would.
        de.end().map_err(|err| ConfigError::Schema {
            key: DOCUMENT.to_owned(),
            message: err.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.validate_deployments()?;
        self.validate_groups()?;
        self.validate_policies()?;
        self.validate_scoring()?;
        self.health.validate("health")?;
        for (owners, limits) in [
            ("tenants", &self.rate_limits.tenants),
            ("api_keys", &self.rate_limits.api_keys),
        ] {
            for (owner, spec) in limits {
                spec.validate(&format!("rate_limits.{owners}.{owner}"))?;
            }
        }
        match &self.default_group {
            Some(name) if !self.model_groups.iter().any(|g| &g.name == name) => {
                Err(ConfigError::UnknownDefaultGroup(name.clone()))
            }
            _ => Ok(()),
        }
    }

    fn validate_deployments(&self) -> Result<(), ConfigError> {
        let mut ids = HashSet::new();
        let mut capabilities = HashSet::new();
        let mut regions = HashSet::new();
        for (i, d) in self.deployments.iter().enumerate() {
            let key = |field: &str| format!("deployments[{i}].{field}");
            if d.id.is_empty() {
                return Err(ConfigError::Empty { key: key("id") });
            }
            if !ids.insert(d.id.as_str()) {
                return Err(duplicate(key("id"), "deployment id", &d.id));
            }
            if d.context_window == 0 {
                return Err(out_of_range(key("context_window"), "> 0", 0.0));
            }
            check_non_negative(key("input_price_per_mtok"), d.input_price_per_mtok)?;
            check_non_negative(key("output_price_per_mtok"), d.output_price_per_mtok)?;
            if !(d.weight.is_finite() && d.weight > 0.0) {
                return Err(out_of_range(key("weight"), "a finite number > 0", d.weight));
            }
            // The spec's own keys are rpm and tpm, which here sit on the deployment.
            d.limit().validate(&format!("deployments[{i}]"))?;
            regions.insert(d.region.as_str());
            if regions.len() > MAX_NAMES {
                return Err(too_many(key("region"), "regions"));
            }
            for (j, capability) in d.capabilities.iter().enumerate() {
                capabilities.insert(capability.as_str());
                if capabilities.len() > MAX_NAMES {
                    return Err(too_many(key(&format!("capabilities[{j}]")), "capabilities"));
                }
            }
        }
        Ok(())
    }

    fn validate_groups(&self) -> Result<(), ConfigError> {
        let ids: HashSet<&str> = self.deployments.iter().map(|d| d.id.as_str()).collect();
        let mut names = HashSet::new();
        for (i, group) in self.model_groups.iter().enumerate() {
            let key = |field: &str| format!("model_groups[{i}].{field}");
            if group.name.is_empty() {
                return Err(ConfigError::Empty { key: key("name") });
            }
            if group.name == AUTO_GROUP {
                return Err(ConfigError::Reserved {
                    key: key("name"),
                    value: group.name.clone(),
                });
            }
            if !names.insert(group.name.as_str()) {
                return Err(duplicate(key("name"), "model group", &group.name));
            }
            if group.deployments.is_empty() {
                return Err(ConfigError::Empty {
                    key: key("deployments"),
                });
            }
            let mut members = HashSet::new();
            for (j, id) in group.deployments.iter().enumerate() {
                let key = key(&format!("deployments[{j}]"));
                if !ids.contains(id.as_str()) {
                    return Err(ConfigError::UnknownDeployment {
                        key,
                        id: id.clone(),
                    });
                }
                // A repeated member would be routed to twice in one decision.
                if !members.insert(id.as_str()) {
                    return Err(duplicate(key, "deployment", id));
                }
            }
        }
        Ok(())
    }
}

impl Config {
    fn validate_policies(&self) -> Result<(), ConfigError> {
        let mut ids = HashSet::new();
        let regions: HashSet<&str> = self.deployments.iter().map(|d| d.region.as_str()).collect();
        for (i, policy) in self.policies.iter().enumerate() {
            let key = |field: &str| format!("policies[{i}].{field}");
            if policy.id.is_empty() {
                return Err(ConfigError::Empty { key: key("id") });
            }
            if !ids.insert(policy.id.as_str()) {
                return Err(duplicate(key("id"), "policy id", &policy.id));
            }
            if let Some(when) = &policy.when {
                Matcher::compile(when, &key("when"))?;
            }
            self.validate_target(&policy.route_to, &key("route_to"))?;
            for (j, fallback) in policy.fallback.iter().enumerate() {
                self.validate_target(fallback, &key(&format!("fallback[{j}]")))?;
            }
            if let Some(hedge) = &policy.hedge {
                hedge.validate(&key("hedge"))?;
            }
            let constraints = &policy.constraints;
            if let Some(ceiling) = constraints.max_cost_usd {
                check_non_negative(key("constraints.max_cost_usd"), ceiling)?;
            }
            for (j, region) in constraints.regions.iter().flatten().enumerate() {
                // A misspelt region would silently route nowhere.
                if !regions.contains(region.as_str()) {
                    return Err(ConfigError::Schema {
                        key: key(&format!("constraints.regions[{j}]")),
                        message: format!("no deployment is in region {region:?}"),
                    });
                }
            }
        }
        Ok(())
    }

    fn validate_target(&self, target: &TargetConfig, key: &str) -> Result<(), ConfigError> {
        if target.groups.is_empty() && target.deployments.is_empty() {
            return Err(ConfigError::Empty {
                key: key.to_owned(),
            });
        }
        for (j, name) in target.groups.iter().enumerate() {
            if !self.model_groups.iter().any(|g| &g.name == name) {
                return Err(ConfigError::Schema {
                    key: format!("{key}.groups[{j}]"),
                    message: format!("unknown model group {name:?}"),
                });
            }
        }
        for (j, id) in target.deployments.iter().enumerate() {
            if !self.deployments.iter().any(|d| &d.id == id) {
                return Err(ConfigError::UnknownDeployment {
                    key: format!("{key}.deployments[{j}]"),
                    id: id.clone(),
                });
            }
        }
        Ok(())
    }

    fn validate_scoring(&self) -> Result<(), ConfigError> {
        let s = &self.scoring;
        for (name, weight) in [
            ("cost", s.cost),
            ("latency", s.latency),
            ("errors", s.errors),
            ("load", s.load),
            ("headroom", s.headroom),
        ] {
            check_non_negative(format!("scoring.{name}"), weight)?;
        }
        if !(0.0..=1.0).contains(&s.exploration) {
            return Err(out_of_range(
                "scoring.exploration".into(),
                "between 0 and 1",
                s.exploration,
            ));
        }
        Ok(())
    }
}

fn check_non_negative(key: String, value: f64) -> Result<(), ConfigError> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(out_of_range(key, "a finite number >= 0", value))
    }
}

fn duplicate(key: String, what: &'static str, value: &str) -> ConfigError {
    ConfigError::Duplicate {
        key,
        what,
        value: value.to_owned(),
    }
}

fn out_of_range(key: String, bound: &'static str, value: f64) -> ConfigError {
    ConfigError::OutOfRange { key, bound, value }
}

fn too_many(key: String, what: &'static str) -> ConfigError {
    ConfigError::TooMany { key, what }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn valid() -> Value {
        json!({
            "default_group": "echo",
            "deployments": [
                {"id": "a", "region": "eu", "context_window": 1000, "capabilities": ["streaming"],
                 "input_price_per_mtok": 1.0, "output_price_per_mtok": 2.0},
                {"id": "b", "region": "us", "context_window": 2000,
                 "input_price_per_mtok": 0.0, "output_price_per_mtok": 0.0, "weight": 3.0, "priority": 2}
            ],
            "model_groups": [
                {"name": "echo", "deployments": ["a", "b"]},
                {"name": "fast", "strategy": "priority", "deployments": ["b"]}
            ]
        })
    }

    fn error_for(config: Value) -> String {
        Config::from_json(&config.to_string())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn valid_config_parses_with_defaults() {
        let config = Config::from_json(&valid().to_string()).unwrap();
        assert_eq!(config.default_group.as_deref(), Some("echo"));
        assert_eq!(
            (config.deployments[0].weight, config.deployments[0].priority),
            (1.0, 0)
        );
        assert!(config.deployments[1].capabilities.is_empty());
        assert_eq!(config.model_groups[0].strategy, Strategy::Weighted);
        assert_eq!(config.model_groups[1].strategy, Strategy::Priority);
    }

    #[test]
    fn default_group_is_optional() {
        let mut config = valid();
        config.as_object_mut().unwrap().remove("default_group");
        assert_eq!(
            Config::from_json(&config.to_string())
                .unwrap()
                .default_group,
            None
        );
    }

    #[test]
    fn unknown_fields_are_rejected_with_their_path() {
        let mut config = valid();
        config["deployments"][1]["model_group"] = json!("echo");
        let message = error_for(config);
        let expected = "deployments[1].model_group: unknown field `model_group`, expected one of";
        assert!(message.starts_with(expected), "{message}");
    }

    #[test]
    fn type_errors_name_the_key() {
        let mut config = valid();
        config["deployments"][0]["context_window"] = json!("big");
        let message = error_for(config);
        assert!(
            message.starts_with("deployments[0].context_window: invalid type"),
            "{message}"
        );
    }

    #[test]
    fn unknown_strategy_is_rejected() {
        let mut config = valid();
        config["model_groups"][0]["strategy"] = json!("fastest");
        let message = error_for(config);
        assert!(
            message.starts_with("model_groups[0].strategy: unknown variant `fastest`"),
            "{message}"
        );
    }

    #[test]
    fn malformed_json_is_a_schema_error() {
        let message = Config::from_json("{").unwrap_err().to_string();
        assert!(
            message.starts_with("config: EOF while parsing"),
            "{message}"
        );
        let trailing = format!("{} x", valid());
        assert!(Config::from_json(&trailing)
            .unwrap_err()
            .to_string()
            .contains("trailing characters"));
    }

    #[test]
    fn deployment_values_are_checked() {
        let cases = [
            ("id", json!(""), "deployments[0].id: must not be empty"),
            (
                "context_window",
                json!(0),
                "deployments[0].context_window: must be > 0, got 0",
            ),
            (
                "weight",
                json!(0.0),
                "deployments[0].weight: must be a finite number > 0, got 0",
            ),
            (
                "weight",
                json!(-1.5),
                "deployments[0].weight: must be a finite number > 0, got -1.5",
            ),
            (
                "input_price_per_mtok",
                json!(-0.5),
                "deployments[0].input_price_per_mtok: must be a finite number >= 0, got -0.5",
            ),
        ];
        for (field, value, expected) in cases {
            let mut config = valid();
            config["deployments"][0][field] = value;
            assert_eq!(error_for(config), expected);
        }
    }

    #[test]
    fn deployment_ids_are_unique() {
        let mut config = valid();
        config["deployments"][1]["id"] = json!("a");
        assert_eq!(
            error_for(config),
            "deployments[1].id: duplicate deployment id \"a\""
        );
    }

    #[test]
    fn group_values_are_checked() {
        let cases = [
            ("name", json!(""), "model_groups[1].name: must not be empty"),
            (
                "name",
                json!("echo"),
                "model_groups[1].name: duplicate model group \"echo\"",
            ),
            (
                "name",
                json!("auto"),
                "model_groups[1].name: \"auto\" is reserved (it selects default_group)",
            ),
            (
                "deployments",
                json!([]),
                "model_groups[1].deployments: must not be empty",
            ),
            (
                "deployments",
                json!(["x"]),
                "model_groups[1].deployments[0]: unknown deployment \"x\"",
            ),
            (
                "deployments",
                json!(["b", "b"]),
                "model_groups[1].deployments[1]: duplicate deployment \"b\"",
            ),
        ];
        for (field, value, expected) in cases {
            let mut config = valid();
            config["model_groups"][1][field] = value;
            assert_eq!(error_for(config), expected);
        }
    }

    #[test]
    fn default_group_must_exist() {
        let mut config = valid();
        config["default_group"] = json!("nope");
        assert_eq!(
            error_for(config),
            "default_group: unknown model group \"nope\""
        );
    }

    #[test]
    fn at_most_63_capabilities() {
        let mut config = valid();
        let names: Vec<String> = (0..=MAX_NAMES).map(|i| format!("c{i}")).collect();
        config["deployments"][1]["capabilities"] = json!(names);
        // "streaming" on deployments[0] is the first; c62 is the 64th.
        assert_eq!(
            error_for(config),
            "deployments[1].capabilities[62]: more than 63 distinct capabilities"
        );
    }
}
