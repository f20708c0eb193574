//! The user-facing config schema (phase one of two): strict serde structs plus
//! validation. A `Config` that exists has passed every check, so compiling it
//! into a [`Table`](crate::table::Table) cannot fail.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::attempts::{ContentFallback, HedgeConfig};
use crate::error::ConfigError;
use crate::health::HealthPolicy;
use crate::matcher::{Matcher, MatcherConfig};
use crate::ratelimit::LimitSpec;
use crate::strategy::Strategy;
use crate::table::MAX_NAMES;

mod describe;
mod evaluation;
mod prune;
#[cfg(test)]
mod tests;

pub use evaluation::{
    ExperimentConfig, ShadowConfig, StickyKey, VariantConfig, MAX_SHADOWS, MAX_SHADOW_IN_FLIGHT,
    MAX_VARIANTS,
};
pub use prune::Pruned;

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
    /// Capability names deployments may declare beyond [`CAPABILITIES`].
    #[serde(default)]
    pub custom_capabilities: Vec<String>,
}

/// The capabilities the gateway itself asks for; a deployment or a policy naming another is
/// a typo unless `custom_capabilities` declares it (a misspelt capability would otherwise
/// only show when no request could be routed there).
pub const CAPABILITIES: [&str; 5] = ["streaming", "vision", "tools", "json_mode", "json_schema"];

/// A routing rule: a condition, where to send matching requests, how to
/// order them, extra constraints, and where to go when those all fail.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    pub id: String,
    /// No condition matches every request (a catch-all rule).
    #[serde(default)]
    pub when: Option<MatcherConfig>,
    /// Where matching requests go first; left out when an `experiment`'s
    /// variants say instead.
    #[serde(default)]
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
    /// Splits the policy's requests between variants, in place of `route_to`.
    #[serde(default)]
    pub experiment: Option<ExperimentConfig>,
    /// Copies a sample of the policy's requests to other deployments.
    #[serde(default)]
    pub shadow: Option<ShadowConfig>,
}

/// A set of deployments, named directly or through their model groups.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub deployments: Vec<String>,
}

/// Limits a policy adds to every request it routes.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
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

impl ScoringConfig {
    /// The weights' sum: a penalty over it is a share in [0, 1].
    pub fn total(&self) -> f64 {
        self.cost + self.latency + self.errors + self.load + self.headroom
    }
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

/// The keys of a deployment that routing reads, every one of `DeploymentConfig`'s
/// fields. A front end whose deployments carry more (how to reach the
/// provider) hands these to the router and keeps the rest.
pub const DEPLOYMENT_KEYS: [&str; 10] = [
    "id",
    "region",
    "context_window",
    "capabilities",
    "input_price_per_mtok",
    "output_price_per_mtok",
    "weight",
    "priority",
    "rpm",
    "tpm",
];

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentConfig {
    pub id: String,
    /// A routing label (data residency); "unspecified" when not given.
    #[serde(default = "default_region")]
    pub region: String,
    pub context_window: u32,
    /// What it can do beyond plain chat; `["streaming"]` when not given.
    #[serde(default = "default_capabilities")]
    pub capabilities: Vec<String>,
    /// USD per million tokens, 0 when not given: the cost filter, the
    /// `lowest_cost` and `balanced` strategies, and the cost of each answer.
    #[serde(default)]
    pub input_price_per_mtok: f64,
    #[serde(default)]
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

/// Budgets per tenant and per API key id, on top of each deployment's own,
/// and the tenants' priorities on the deployments' budgets.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitsConfig {
    #[serde(default)]
    pub tenants: BTreeMap<String, LimitSpec>,
    #[serde(default)]
    pub api_keys: BTreeMap<String, LimitSpec>,
    /// Tenants not named here (and callers with none) are `normal`.
    #[serde(default)]
    pub tenant_priorities: BTreeMap<String, Priority>,
    /// The part of each deployment's rpm and tpm a caller leaves for every
    /// priority above its own that some tenant has (`normal` always counts).
    #[serde(default = "default_priority_reserve")]
    pub priority_reserve: f64,
}

impl Default for RateLimitsConfig {
    fn default() -> Self {
        RateLimitsConfig {
            tenants: BTreeMap::new(),
            api_keys: BTreeMap::new(),
            tenant_priorities: BTreeMap::new(),
            priority_reserve: default_priority_reserve(),
        }
    }
}

fn default_priority_reserve() -> f64 {
    0.2
}

/// The most `priority_reserve` may be: a `low` caller below `high` tenants
/// still has a tenth of each deployment's budget.
pub const MAX_PRIORITY_RESERVE: f64 = 0.45;

/// Whose calls a deployment's rate-limit budget is kept for when it runs low.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    High,
    Normal,
    Low,
}

impl RateLimitsConfig {
    /// What a caller of `priority` leaves of each deployment's buckets: one
    /// reserve for every priority above its own that is in use.
    pub fn keep_share(&self, priority: Priority) -> f64 {
        let mut used: Vec<Priority> = self.tenant_priorities.values().copied().collect();
        used.push(Priority::Normal);
        used.sort_unstable();
        used.dedup();
        let above = used.iter().filter(|p| **p < priority).count();
        self.priority_reserve * above as f64
    }

    /// What a shadow call leaves of each deployment's buckets: one reserve
    /// more than the lowest priority in use, so that shadows are refused
    /// before any caller is (and never served when that is all of a bucket).
    pub fn shadow_keep_share(&self) -> f64 {
        let lowest = self
            .tenant_priorities
            .values()
            .copied()
            .chain([Priority::Normal])
            .max()
            .unwrap_or(Priority::Normal);
        (self.keep_share(lowest) + self.priority_reserve).min(1.0)
    }
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

fn default_region() -> String {
    "unspecified".to_owned()
}

fn default_capabilities() -> Vec<String> {
    vec!["streaming".to_owned()]
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

    /// The strategy a policy orders its candidates by: its own, else that of
    /// the one model group it routes to, else weighted.
    pub fn policy_strategy(&self, policy: &PolicyConfig) -> Strategy {
        self.target_strategy(policy, &policy.route_to)
    }

    /// The same for the requests a policy sends to `target` (its `route_to`,
    /// or one experiment variant's).
    pub fn target_strategy(&self, policy: &PolicyConfig, target: &TargetConfig) -> Strategy {
        let single_group = match (&target.groups[..], &target.deployments[..]) {
            ([name], []) => self.model_groups.iter().find(|g| &g.name == name),
            _ => None,
        };
        policy
            .strategy
            .or(single_group.map(|g| g.strategy))
            .unwrap_or_default()
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
        let reserve = self.rate_limits.priority_reserve;
        if !(0.0..=MAX_PRIORITY_RESERVE).contains(&reserve) {
            return Err(ConfigError::OutOfRange {
                key: "rate_limits.priority_reserve".to_owned(),
                bound: "between 0 and 0.45",
                value: reserve,
            });
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
            check_name(key("id"), &d.id)?;
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
                self.check_capability(key(&format!("capabilities[{j}]")), capability)?;
                capabilities.insert(capability.as_str());
                if capabilities.len() > MAX_NAMES {
                    return Err(too_many(key(&format!("capabilities[{j}]")), "capabilities"));
                }
            }
        }
        Ok(())
    }

    fn validate_groups(&self) -> Result<(), ConfigError> {
        if self.model_groups.is_empty() {
            // Requests name a model group: with none, nothing could be asked for.
            return Err(ConfigError::Empty {
                key: "model_groups".to_owned(),
            });
        }
        let ids: HashSet<&str> = self.deployments.iter().map(|d| d.id.as_str()).collect();
        let mut names = HashSet::new();
        for (i, group) in self.model_groups.iter().enumerate() {
            let key = |field: &str| format!("model_groups[{i}].{field}");
            check_name(key("name"), &group.name)?;
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
        let mut experiment_ids = HashSet::new();
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
            match &policy.experiment {
                Some(experiment) => {
                    if policy.route_to != TargetConfig::default() {
                        return Err(ConfigError::Schema {
                            key: key("route_to"),
                            message: "a policy with an experiment routes by its variants; \
                                      leave route_to out"
                                .to_owned(),
                        });
                    }
                    self.validate_experiment(experiment, &key("experiment"))?;
                    if !experiment_ids.insert(experiment.id.as_str()) {
                        return Err(duplicate(
                            key("experiment.id"),
                            "experiment id",
                            &experiment.id,
                        ));
                    }
                }
                None => self.validate_target(&policy.route_to, &key("route_to"))?,
            }
            if let Some(shadow) = &policy.shadow {
                self.validate_shadow(shadow, &key("shadow"))?;
            }
            for (j, fallback) in policy.fallback.iter().enumerate() {
                self.validate_target(fallback, &key(&format!("fallback[{j}]")))?;
            }
            if let Some(hedge) = &policy.hedge {
                hedge.validate(&key("hedge"))?;
            }
            let constraints = &policy.constraints;
            for (j, capability) in constraints.capabilities.iter().enumerate() {
                self.check_capability(key(&format!("constraints.capabilities[{j}]")), capability)?;
            }
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

    fn check_capability(&self, key: String, name: &str) -> Result<(), ConfigError> {
        if CAPABILITIES.contains(&name) || self.custom_capabilities.iter().any(|c| c == name) {
            return Ok(());
        }
        Err(ConfigError::Schema {
            key,
            message: format!(
                "unknown capability {name:?} (known: {}; declare others under custom_capabilities)",
                CAPABILITIES.join(", ")
            ),
        })
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

/// The longest deployment id or model group name.
pub const MAX_NAME_LEN: usize = 128;

/// Deployment ids and model group names appear in answers, errors and logs:
/// a letter or digit, then letters, digits and `._:/@-`, at most 128 bytes.
fn check_name(key: String, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() {
        return Err(ConfigError::Empty { key });
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._:/@-".contains(c);
    let starts_well = name.starts_with(|c: char| c.is_ascii_alphanumeric());
    if name.len() > MAX_NAME_LEN || !starts_well || !name.chars().all(allowed) {
        return Err(ConfigError::Schema {
            key,
            message: format!(
                "{name:?} is not a valid name: a letter or digit, then letters, digits and \
                 ._:/@- (at most {MAX_NAME_LEN})"
            ),
        });
    }
    Ok(())
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
