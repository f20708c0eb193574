//! The health config: thresholds and durations in seconds, as operators write
//! them, with a default for every key. Serde rejects unknown keys; `validate`
//! checks the values and names the offending key.

use std::time::Duration;

use serde::Deserialize;

use crate::clock::Nanos;
use crate::error::ConfigError;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthPolicy {
    /// Failures in a row that open the breaker.
    pub consecutive_failures: u32,
    /// Share of failed outcomes in the window that opens the breaker, in (0, 1].
    pub error_ratio: f64,
    /// How far back the error ratio looks, kept in ten buckets.
    pub error_window_secs: f64,
    /// Outcomes the window must hold before the ratio can open the breaker,
    /// so that two failures out of three requests do not.
    pub min_requests: u32,
    /// The first open period; each failed probe doubles it up to `max_open_secs`.
    pub open_secs: f64,
    pub max_open_secs: f64,
    /// A claimed probe that is never reported frees its slot after this long.
    pub probe_timeout_secs: f64,
    /// Cool-down after a 429 that came without a Retry-After.
    pub default_retry_after_secs: f64,
    /// Cool-down after rejected credentials: retrying soon cannot help.
    pub auth_cooldown_secs: f64,
    pub outliers: OutlierPolicy,
}

/// Latency-outlier ejection: a deployment whose tail latency is `factor` times
/// the median of its peers' is taken out of rotation for `eject_secs`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutlierPolicy {
    pub enabled: bool,
    pub factor: f64,
    /// Successful outcomes a deployment needs before its tail is judged.
    pub min_samples: u32,
    /// Judged deployments a group needs before any is ejected.
    pub min_peers: u32,
    pub eject_secs: f64,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        HealthPolicy {
            consecutive_failures: 5,
            error_ratio: 0.5,
            error_window_secs: 10.0,
            min_requests: 20,
            open_secs: 5.0,
            max_open_secs: 60.0,
            probe_timeout_secs: 30.0,
            default_retry_after_secs: 1.0,
            auth_cooldown_secs: 300.0,
            outliers: OutlierPolicy::default(),
        }
    }
}

impl Default for OutlierPolicy {
    fn default() -> Self {
        OutlierPolicy {
            enabled: true,
            factor: 3.0,
            min_samples: 20,
            min_peers: 3,
            eject_secs: 30.0,
        }
    }
}

impl HealthPolicy {
    /// Checks every value; `key` is where the policy sits in the config
    /// (`health`, `model_groups[2].health`) and prefixes each message.
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let key = |field: &str| format!("{key}.{field}");
        at_least_one(key("consecutive_failures"), self.consecutive_failures)?;
        if !(self.error_ratio > 0.0 && self.error_ratio <= 1.0) {
            return Err(out_of_range(
                key("error_ratio"),
                "in (0, 1]",
                self.error_ratio,
            ));
        }
        positive_secs(key("error_window_secs"), self.error_window_secs)?;
        at_least_one(key("min_requests"), self.min_requests)?;
        positive_secs(key("open_secs"), self.open_secs)?;
        positive_secs(key("max_open_secs"), self.max_open_secs)?;
        if self.max_open_secs < self.open_secs {
            let bound = ">= open_secs";
            return Err(out_of_range(
                key("max_open_secs"),
                bound,
                self.max_open_secs,
            ));
        }
        positive_secs(key("probe_timeout_secs"), self.probe_timeout_secs)?;
        positive_secs(
            key("default_retry_after_secs"),
            self.default_retry_after_secs,
        )?;
        positive_secs(key("auth_cooldown_secs"), self.auth_cooldown_secs)?;
        self.outliers.validate(&key("outliers"))
    }

    pub(super) fn open(&self) -> Nanos {
        nanos(self.open_secs)
    }

    pub(super) fn max_open(&self) -> Nanos {
        nanos(self.max_open_secs)
    }

    pub(super) fn probe_timeout(&self) -> Nanos {
        nanos(self.probe_timeout_secs)
    }

    pub(super) fn error_window(&self) -> Nanos {
        nanos(self.error_window_secs)
    }

    pub(super) fn default_retry_after(&self) -> Nanos {
        nanos(self.default_retry_after_secs)
    }

    pub(super) fn auth_cooldown(&self) -> Nanos {
        nanos(self.auth_cooldown_secs)
    }
}

impl OutlierPolicy {
    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let key = |field: &str| format!("{key}.{field}");
        // At 1 or below, half the group would sit at or above the threshold.
        if !(self.factor.is_finite() && self.factor > 1.0) {
            return Err(out_of_range(
                key("factor"),
                "a finite number > 1",
                self.factor,
            ));
        }
        at_least_one(key("min_samples"), self.min_samples)?;
        if self.min_peers < 2 {
            let value = f64::from(self.min_peers);
            return Err(out_of_range(key("min_peers"), ">= 2", value));
        }
        positive_secs(key("eject_secs"), self.eject_secs)
    }

    pub(super) fn eject_for(&self) -> Nanos {
        nanos(self.eject_secs)
    }
}

/// Saturating: `as` clamps to `0..=u64::MAX`, so a huge finite value means "for ever".
pub(super) fn nanos(secs: f64) -> Nanos {
    (secs * 1e9) as Nanos
}

pub(super) fn duration_nanos(duration: Duration) -> Nanos {
    Nanos::try_from(duration.as_nanos()).unwrap_or(Nanos::MAX)
}

fn at_least_one(key: String, value: u32) -> Result<(), ConfigError> {
    if value >= 1 {
        Ok(())
    } else {
        Err(out_of_range(key, ">= 1", f64::from(value)))
    }
}

fn positive_secs(key: String, value: f64) -> Result<(), ConfigError> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(out_of_range(key, "a finite number > 0", value))
    }
}

fn out_of_range(key: String, bound: &'static str, value: f64) -> ConfigError {
    ConfigError::OutOfRange { key, bound, value }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: serde_json::Value) -> Result<HealthPolicy, String> {
        let policy: HealthPolicy = serde_json::from_value(value).map_err(|e| e.to_string())?;
        policy.validate("health").map_err(|e| e.to_string())?;
        Ok(policy)
    }

    #[test]
    fn empty_object_gives_the_defaults() {
        let policy = parse(json!({})).unwrap();
        assert_eq!(policy, HealthPolicy::default());
        assert_eq!(
            (policy.open(), policy.max_open()),
            (5_000_000_000, 60_000_000_000)
        );
        assert_eq!(policy.outliers.eject_for(), 30_000_000_000);
    }

    #[test]
    fn keys_can_be_overridden_one_at_a_time() {
        let policy = parse(json!({"open_secs": 0.5, "outliers": {"factor": 2.0}})).unwrap();
        assert_eq!(policy.open(), 500_000_000);
        assert_eq!(policy.outliers.factor, 2.0);
        assert_eq!(policy.outliers.min_samples, 20);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let message = parse(json!({"outliers": {"fator": 2.0}})).unwrap_err();
        assert!(message.starts_with("unknown field `fator`"), "{message}");
    }

    #[test]
    fn values_are_checked_and_the_key_named() {
        let cases = [
            (
                json!({"consecutive_failures": 0}),
                "health.consecutive_failures: must be >= 1, got 0",
            ),
            (
                json!({"error_ratio": 0.0}),
                "health.error_ratio: must be in (0, 1], got 0",
            ),
            (
                json!({"error_ratio": 1.5}),
                "health.error_ratio: must be in (0, 1], got 1.5",
            ),
            (
                json!({"min_requests": 0}),
                "health.min_requests: must be >= 1, got 0",
            ),
            (
                json!({"open_secs": -1.0}),
                "health.open_secs: must be a finite number > 0, got -1",
            ),
            (
                json!({"max_open_secs": 2.0}),
                "health.max_open_secs: must be >= open_secs, got 2",
            ),
            (
                json!({"probe_timeout_secs": 0}),
                "health.probe_timeout_secs: must be a finite number > 0, got 0",
            ),
            (
                json!({"outliers": {"factor": 1.0}}),
                "health.outliers.factor: must be a finite number > 1, got 1",
            ),
            (
                json!({"outliers": {"min_peers": 1}}),
                "health.outliers.min_peers: must be >= 2, got 1",
            ),
            (
                json!({"outliers": {"eject_secs": 0}}),
                "health.outliers.eject_secs: must be a finite number > 0, got 0",
            ),
        ];
        for (value, expected) in cases {
            assert_eq!(parse(value).unwrap_err(), expected);
        }
    }

    #[test]
    fn durations_convert_saturating() {
        assert_eq!(nanos(1e30), Nanos::MAX);
        assert_eq!(duration_nanos(Duration::MAX), Nanos::MAX);
        assert_eq!(duration_nanos(Duration::from_millis(1500)), 1_500_000_000);
    }
}
