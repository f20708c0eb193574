//! What a policy may add to evaluate other deployments on its traffic: an
//! experiment (requests split between variants, each caller kept on one) and
//! a shadow (a sample of requests copied to candidate deployments, whose
//! answers the caller never sees).

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::{check_name, duplicate, out_of_range, Config, TargetConfig};
use crate::error::ConfigError;

/// The most variants an experiment may have.
pub const MAX_VARIANTS: usize = 16;
/// The most shadow deployments a policy may copy requests to.
pub const MAX_SHADOWS: usize = 4;
/// The most shadow calls of one policy in flight at once, per process.
pub const MAX_SHADOW_IN_FLIGHT: u32 = 1024;

/// Traffic split between variants, each request assigned by a key so that
/// the same key always gets the same variant, on every process and host.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    pub id: String,
    /// What keeps a caller on one variant.
    #[serde(default)]
    pub sticky_by: StickyKey,
    pub variants: Vec<VariantConfig>,
}

/// A request's value that assigns it to a variant: its tenant, its affinity
/// key, or one field of its metadata. A request without one is assigned at
/// random.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StickyKey {
    #[default]
    Tenant,
    AffinityKey,
    Metadata(String),
}

impl StickyKey {
    pub fn as_string(&self) -> String {
        match self {
            StickyKey::Tenant => "tenant".to_owned(),
            StickyKey::AffinityKey => "affinity_key".to_owned(),
            StickyKey::Metadata(field) => format!("metadata.{field}"),
        }
    }
}

impl<'de> Deserialize<'de> for StickyKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        match text.as_str() {
            "tenant" => Ok(StickyKey::Tenant),
            "affinity_key" => Ok(StickyKey::AffinityKey),
            _ => match text.strip_prefix("metadata.") {
                Some(field) if !field.is_empty() => Ok(StickyKey::Metadata(field.to_owned())),
                _ => Err(serde::de::Error::custom(format!(
                    "unknown sticky key {text:?} (known: tenant, affinity_key, metadata.<field>)"
                ))),
            },
        }
    }
}

impl Serialize for StickyKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.as_string())
    }
}

/// One arm of an experiment: where its requests go first (the policy's
/// fallback tiers follow), and its share of the traffic.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VariantConfig {
    /// Defaults to its position in `variants`: "0", "1", ...
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub deployments: Vec<String>,
    #[serde(default = "default_weight")]
    pub weight: f64,
}

fn default_weight() -> f64 {
    1.0
}

impl VariantConfig {
    pub fn target(&self) -> TargetConfig {
        TargetConfig {
            groups: self.groups.clone(),
            deployments: self.deployments.clone(),
        }
    }

    /// Its name, or its position (`index`) in the experiment's variants.
    pub fn display_name(&self, index: usize) -> String {
        self.name.clone().unwrap_or_else(|| index.to_string())
    }
}

/// Copies of a sample of the policy's requests, sent to other deployments to
/// measure them on real traffic; their answers never reach the caller.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowConfig {
    pub deployments: Vec<String>,
    /// The share of requests copied, in (0, 1].
    pub sample: f64,
    /// Shadow calls of this policy in flight at once, per process; a sampled
    /// request beyond it is not copied.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: u32,
}

fn default_max_in_flight() -> u32 {
    8
}

impl Config {
    pub(super) fn validate_experiment(
        &self,
        experiment: &ExperimentConfig,
        key: &str,
    ) -> Result<(), ConfigError> {
        check_name(format!("{key}.id"), &experiment.id)?;
        if let StickyKey::Metadata(field) = &experiment.sticky_by {
            check_name(format!("{key}.sticky_by"), field)?;
        }
        if experiment.variants.is_empty() {
            return Err(ConfigError::Empty {
                key: format!("{key}.variants"),
            });
        }
        if experiment.variants.len() > MAX_VARIANTS {
            return Err(ConfigError::Schema {
                key: format!("{key}.variants"),
                message: format!("at most {MAX_VARIANTS} variants"),
            });
        }
        let mut names = HashSet::new();
        for (j, variant) in experiment.variants.iter().enumerate() {
            let key = format!("{key}.variants[{j}]");
            self.validate_target(&variant.target(), &key)?;
            let name = variant.display_name(j);
            check_name(format!("{key}.name"), &name)?;
            if !names.insert(name.clone()) {
                return Err(duplicate(format!("{key}.name"), "variant name", &name));
            }
            if !(variant.weight.is_finite() && variant.weight > 0.0) {
                return Err(out_of_range(
                    format!("{key}.weight"),
                    "a finite number > 0",
                    variant.weight,
                ));
            }
        }
        Ok(())
    }

    pub(super) fn validate_shadow(
        &self,
        shadow: &ShadowConfig,
        key: &str,
    ) -> Result<(), ConfigError> {
        if shadow.deployments.is_empty() {
            return Err(ConfigError::Empty {
                key: format!("{key}.deployments"),
            });
        }
        if shadow.deployments.len() > MAX_SHADOWS {
            return Err(ConfigError::Schema {
                key: format!("{key}.deployments"),
                message: format!("at most {MAX_SHADOWS} shadow deployments"),
            });
        }
        let mut seen = HashSet::new();
        for (j, id) in shadow.deployments.iter().enumerate() {
            let at = format!("{key}.deployments[{j}]");
            if !self.deployments.iter().any(|d| &d.id == id) {
                return Err(ConfigError::UnknownDeployment {
                    key: at,
                    id: id.clone(),
                });
            }
            if !seen.insert(id) {
                return Err(duplicate(at, "shadow deployment", id));
            }
        }
        if !(shadow.sample > 0.0 && shadow.sample <= 1.0) {
            return Err(out_of_range(
                format!("{key}.sample"),
                "more than 0 and at most 1",
                shadow.sample,
            ));
        }
        if !(1..=MAX_SHADOW_IN_FLIGHT).contains(&shadow.max_in_flight) {
            return Err(out_of_range(
                format!("{key}.max_in_flight"),
                "between 1 and 1024",
                f64::from(shadow.max_in_flight),
            ));
        }
        Ok(())
    }
}
