//! How the caller runs a policy's attempts beyond the order the router gives:
//! hedging a slow first attempt, and whether a content refusal moves on. The
//! router only carries these from the matched policy to the decision; the
//! gateway's attempt loop acts on them, since only it sees time pass and
//! answers arrive.

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// Most extra attempts a hedge may start: each one spends a deployment's
/// budget on an answer that is likely thrown away.
const MAX_HEDGES: u32 = 3;

/// When the policy's first attempt has not produced its first answer (the
/// first token for a stream, the whole answer for a unary call) within the
/// deployment's tail-latency estimate, clamped to
/// [`min_delay_ms`, `max_delay_ms`] (`max_delay_ms` while there is no estimate
/// yet), the gateway starts the next candidate alongside and keeps whichever
/// answers first; at most `max_hedges` extra attempts per request. Waiting for
/// the tail rather than a fixed delay hedges only the slowest few percent of
/// requests, so the extra load stays small.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HedgeConfig {
    /// Never hedge sooner than this, however fast the deployment usually is.
    #[serde(default)]
    pub min_delay_ms: f64,
    /// Never wait longer than this; also the delay before any estimate exists.
    #[serde(default = "default_max_delay_ms")]
    pub max_delay_ms: f64,
    #[serde(default = "default_max_hedges")]
    pub max_hedges: u32,
}

/// The compiled form of a policy's hedge is its config: validated, `Copy`,
/// and with nothing to intern.
pub type Hedge = HedgeConfig;

fn default_max_delay_ms() -> f64 {
    2_000.0
}

fn default_max_hedges() -> u32 {
    1
}

impl Default for HedgeConfig {
    fn default() -> Self {
        HedgeConfig {
            min_delay_ms: 0.0,
            max_delay_ms: default_max_delay_ms(),
            max_hedges: default_max_hedges(),
        }
    }
}

impl HedgeConfig {
    /// Checks every value; `key` is where the hedge sits in the config
    /// (`policies[0].hedge`) and prefixes each message.
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let key = |field: &str| format!("{key}.{field}");
        let out_of_range = |field: &str, bound, value| ConfigError::OutOfRange {
            key: key(field),
            bound,
            value,
        };
        if !(self.min_delay_ms.is_finite() && self.min_delay_ms >= 0.0) {
            let bound = "a finite number >= 0";
            return Err(out_of_range("min_delay_ms", bound, self.min_delay_ms));
        }
        if !(self.max_delay_ms.is_finite() && self.max_delay_ms > 0.0) {
            let bound = "a finite number > 0";
            return Err(out_of_range("max_delay_ms", bound, self.max_delay_ms));
        }
        if self.min_delay_ms > self.max_delay_ms {
            let bound = "<= max_delay_ms";
            return Err(out_of_range("min_delay_ms", bound, self.min_delay_ms));
        }
        if !(1..=MAX_HEDGES).contains(&self.max_hedges) {
            let bound = "between 1 and 3";
            return Err(out_of_range(
                "max_hedges",
                bound,
                f64::from(self.max_hedges),
            ));
        }
        Ok(())
    }
}

/// What a content refusal (the provider's safety filter declined the request)
/// does to the rest of the decision's candidates. Another tier usually means
/// another provider with another filter; the same tier usually does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContentFallback {
    /// The refusal fails the request.
    #[default]
    None,
    /// Go on to the first candidate of a later tier (the policy's `fallback`
    /// targets), skipping the rest of the refusing candidate's tier.
    NextTier,
    /// Go on to the next candidate, whatever its tier.
    Next,
}

impl ContentFallback {
    pub fn as_str(self) -> &'static str {
        match self {
            ContentFallback::None => "none",
            ContentFallback::NextTier => "next_tier",
            ContentFallback::Next => "next",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::testing::chat_config;
    use serde_json::{json, Value};

    /// `chat_config` with one catch-all policy carrying `extra` keys.
    fn with_policy(extra: Value) -> String {
        let mut config: Value = serde_json::from_str(&chat_config()).unwrap();
        let mut policy = json!({"id": "p", "route_to": {"groups": ["chat"]}});
        policy
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().expect("an object of policy keys").clone());
        config["policies"] = json!([policy]);
        config.to_string()
    }

    fn policy(extra: Value) -> Result<crate::config::PolicyConfig, String> {
        Config::from_json(&with_policy(extra))
            .map(|c| c.policies[0].clone())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn hedge_and_content_fallback_are_optional() {
        let policy = policy(json!({})).unwrap();
        assert_eq!(
            (policy.hedge, policy.content_fallback),
            (None, ContentFallback::None)
        );
    }

    #[test]
    fn hedge_fields_default() {
        let hedge = policy(json!({"hedge": {}})).unwrap().hedge;
        assert_eq!(
            hedge,
            Some(HedgeConfig {
                min_delay_ms: 0.0,
                max_delay_ms: 2_000.0,
                max_hedges: 1
            })
        );
        let hedge = json!({"hedge": {"min_delay_ms": 50, "max_delay_ms": 50, "max_hedges": 3}});
        assert_eq!(
            policy(hedge).unwrap().hedge,
            Some(HedgeConfig {
                min_delay_ms: 50.0,
                max_delay_ms: 50.0,
                max_hedges: 3
            })
        );
    }

    #[test]
    fn invalid_hedge_values_name_their_key() {
        let cases = [
            (
                json!({"min_delay_ms": -1}),
                "policies[0].hedge.min_delay_ms: must be a finite number >= 0, got -1",
            ),
            (
                json!({"max_delay_ms": 0}),
                "policies[0].hedge.max_delay_ms: must be a finite number > 0, got 0",
            ),
            (
                json!({"max_delay_ms": -5}),
                "policies[0].hedge.max_delay_ms: must be a finite number > 0, got -5",
            ),
            (
                json!({"min_delay_ms": 300, "max_delay_ms": 200}),
                "policies[0].hedge.min_delay_ms: must be <= max_delay_ms, got 300",
            ),
            (
                json!({"max_hedges": 0}),
                "policies[0].hedge.max_hedges: must be between 1 and 3, got 0",
            ),
            (
                json!({"max_hedges": 4}),
                "policies[0].hedge.max_hedges: must be between 1 and 3, got 4",
            ),
        ];
        for (hedge, expected) in cases {
            assert_eq!(policy(json!({ "hedge": hedge })).unwrap_err(), expected);
        }
    }

    #[test]
    fn non_finite_delays_are_rejected() {
        // JSON cannot spell them, but a config built in code can.
        let infinite = HedgeConfig {
            max_delay_ms: f64::INFINITY,
            ..HedgeConfig::default()
        };
        let nan = HedgeConfig {
            min_delay_ms: f64::NAN,
            ..HedgeConfig::default()
        };
        assert!(infinite.validate("h").is_err());
        assert!(nan.validate("h").is_err());
        assert_eq!(HedgeConfig::default().validate("h"), Ok(()));
    }

    #[test]
    fn unknown_hedge_key_is_rejected() {
        let message = policy(json!({"hedge": {"delay_ms": 5}})).unwrap_err();
        assert!(
            message.starts_with("policies[0].hedge.delay_ms: unknown field `delay_ms`"),
            "{message}"
        );
    }

    #[test]
    fn content_fallback_parses_its_three_values() {
        for fallback in [
            ContentFallback::None,
            ContentFallback::NextTier,
            ContentFallback::Next,
        ] {
            let parsed = policy(json!({"content_fallback": fallback.as_str()}))
                .unwrap()
                .content_fallback;
            assert_eq!(parsed, fallback);
        }
        let message = policy(json!({"content_fallback": "retry"})).unwrap_err();
        assert!(
            message.starts_with("policies[0].content_fallback: unknown variant `retry`"),
            "{message}"
        );
    }
}
