//! Policy conditions: a small expression language over a request's routing
//! features, compiled once so that matching allocates nothing.
//!
//! In config a condition is one of
//! `{"all": [..]}`, `{"any": [..]}`, `{"not": {..}}`, or a field test such as
//! `{"field": "task", "in": ["code"]}`, `{"field": "input_tokens", "gt": 8000}`,
//! `{"field": "metadata.team", "prefix": "ml-"}`, `{"field": "tags", "contains": "urgent"}`.

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::error::ConfigError;
use crate::router::RouteRequest;

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MatcherConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<Vec<MatcherConfig>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any: Option<Vec<MatcherConfig>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not: Option<Box<MatcherConfig>>,
    /// The feature a test reads; see [`Field`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eq: Option<serde_json::Value>,
    #[serde(default, rename = "in", skip_serializing_if = "Option::is_none")]
    pub one_of: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gt: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gte: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lt: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lte: Option<f64>,
    /// True: the feature is set (non-empty, or a number present); false: it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exists: Option<bool>,
}

/// A request feature a condition can read.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Field {
    Model,
    Tenant,
    ApiKey,
    Task,
    AffinityKey,
    Metadata(Box<str>),
    Tags,
    Capabilities,
    Regions,
    InputTokens,
    MaxOutputTokens,
    MaxCostUsd,
    LatencyTargetMs,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Text,
    Set,
    Number,
}

impl Field {
    fn parse(name: &str) -> Option<Field> {
        Some(match name {
            "model" => Field::Model,
            "tenant" => Field::Tenant,
            "api_key" => Field::ApiKey,
            "task" => Field::Task,
            "affinity_key" => Field::AffinityKey,
            "tags" => Field::Tags,
            "capabilities" => Field::Capabilities,
            "regions" => Field::Regions,
            "input_tokens" => Field::InputTokens,
            "max_output_tokens" => Field::MaxOutputTokens,
            "max_cost_usd" => Field::MaxCostUsd,
            "latency_target_ms" => Field::LatencyTargetMs,
            _ => Field::Metadata(
                name.strip_prefix("metadata.")
                    .filter(|k| !k.is_empty())?
                    .into(),
            ),
        })
    }

    fn kind(&self) -> Kind {
        match self {
            Field::Tags | Field::Capabilities | Field::Regions => Kind::Set,
            Field::InputTokens
            | Field::MaxOutputTokens
            | Field::MaxCostUsd
            | Field::LatencyTargetMs => Kind::Number,
            _ => Kind::Text,
        }
    }

    fn text<'r, S: AsRef<str>>(&self, request: &'r RouteRequest<'r, S>) -> &'r str {
        match self {
            Field::Model => request.model,
            Field::Tenant => request.tenant,
            Field::ApiKey => request.api_key,
            Field::Task => request.task,
            Field::AffinityKey => request.affinity_key,
            Field::Metadata(key) => request.metadata_value(key),
            _ => "",
        }
    }

    fn set<'r, S: AsRef<str>>(&self, request: &'r RouteRequest<'r, S>) -> &'r [S] {
        match self {
            Field::Tags => request.tags,
            Field::Capabilities => request.capabilities,
            Field::Regions => request.regions,
            _ => &[],
        }
    }

    fn number<S>(&self, request: &RouteRequest<'_, S>) -> Option<f64> {
        match self {
            Field::InputTokens => Some(f64::from(request.input_tokens)),
            Field::MaxOutputTokens => {
                (request.max_output_tokens > 0).then(|| f64::from(request.max_output_tokens))
            }
            Field::MaxCostUsd => request.max_cost_usd,
            Field::LatencyTargetMs => request.latency_target_ms,
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Test {
    Equals(Box<str>),
    OneOf(Box<[Box<str>]>),
    Prefix(Box<str>),
    Pattern(Regex),
    Contains(Box<str>),
    /// Any element of the set is one of these.
    Intersects(Box<[Box<str>]>),
    Compare(Comparison, f64),
    Exists(bool),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Comparison {
    Eq,
    Gt,
    Gte,
    Lt,
    Lte,
}

/// A compiled condition.
#[derive(Debug, Clone)]
pub(crate) enum Matcher {
    All(Box<[Matcher]>),
    Any(Box<[Matcher]>),
    Not(Box<Matcher>),
    Field(Field, Test),
}

impl Matcher {
    pub(crate) fn compile(config: &MatcherConfig, key: &str) -> Result<Matcher, ConfigError> {
        let forms = [
            config.all.is_some(),
            config.any.is_some(),
            config.not.is_some(),
            config.field.is_some(),
        ];
        if forms.iter().filter(|&&set| set).count() != 1 {
            return Err(invalid(key, "needs exactly one of all, any, not or field"));
        }
        let compile_all =
            |items: &[MatcherConfig], name: &str| -> Result<Box<[Matcher]>, ConfigError> {
                if items.is_empty() {
                    return Err(ConfigError::Empty {
                        key: format!("{key}.{name}"),
                    });
                }
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| Matcher::compile(item, &format!("{key}.{name}[{i}]")))
                    .collect()
            };
        if let Some(items) = &config.all {
            return Ok(Matcher::All(compile_all(items, "all")?));
        }
        if let Some(items) = &config.any {
            return Ok(Matcher::Any(compile_all(items, "any")?));
        }
        if let Some(inner) = &config.not {
            return Ok(Matcher::Not(Box::new(Matcher::compile(
                inner,
                &format!("{key}.not"),
            )?)));
        }
        let name = config.field.as_deref().unwrap_or_default();
        let field = Field::parse(name).ok_or_else(|| {
            invalid(
                &format!("{key}.field"),
                &format!(
                    "unknown field {name:?}; expected model, tenant, api_key, task, affinity_key, tags, \
                     capabilities, regions, input_tokens, max_output_tokens, max_cost_usd, \
                     latency_target_ms or metadata.<key>"
                ),
            )
        })?;
        let test = compile_test(config, field.kind(), key)?;
        Ok(Matcher::Field(field, test))
    }

    pub(crate) fn matches<S: AsRef<str>>(&self, request: &RouteRequest<'_, S>) -> bool {
        match self {
            Matcher::All(items) => items.iter().all(|m| m.matches(request)),
            Matcher::Any(items) => items.iter().any(|m| m.matches(request)),
            Matcher::Not(inner) => !inner.matches(request),
            Matcher::Field(field, test) => test_field(field, test, request),
        }
    }
}

fn test_field<S: AsRef<str>>(field: &Field, test: &Test, request: &RouteRequest<'_, S>) -> bool {
    match field.kind() {
        Kind::Text => {
            let value = field.text(request);
            match test {
                Test::Equals(expected) => value == &**expected,
                Test::OneOf(options) => options.iter().any(|o| value == &**o),
                Test::Prefix(prefix) => value.starts_with(&**prefix),
                Test::Pattern(pattern) => pattern.is_match(value),
                Test::Exists(wanted) => value.is_empty() != *wanted,
                _ => false,
            }
        }
        Kind::Set => {
            let values = field.set(request);
            match test {
                Test::Contains(item) => values.iter().any(|v| v.as_ref() == &**item),
                Test::Intersects(options) => values
                    .iter()
                    .any(|v| options.iter().any(|o| v.as_ref() == &**o)),
                Test::Exists(wanted) => values.is_empty() != *wanted,
                _ => false,
            }
        }
        Kind::Number => {
            let value = field.number(request);
            match (test, value) {
                (Test::Exists(wanted), _) => value.is_some() == *wanted,
                (Test::Compare(op, bound), Some(value)) => match op {
                    Comparison::Eq => value == *bound,
                    Comparison::Gt => value > *bound,
                    Comparison::Gte => value >= *bound,
                    Comparison::Lt => value < *bound,
                    Comparison::Lte => value <= *bound,
                },
                _ => false,
            }
        }
    }
}

fn compile_test(config: &MatcherConfig, kind: Kind, key: &str) -> Result<Test, ConfigError> {
    let mut tests: Vec<(&str, Test)> = Vec::new();
    if let Some(value) = &config.eq {
        let test = match (kind, value) {
            (Kind::Number, serde_json::Value::Number(n)) => {
                Test::Compare(Comparison::Eq, n.as_f64().unwrap_or(f64::NAN))
            }
            (Kind::Text, serde_json::Value::String(s)) => Test::Equals(s.as_str().into()),
            _ => {
                return Err(invalid(
                    &format!("{key}.eq"),
                    &format!("must be a {} for this field", kind_name(kind)),
                ))
            }
        };
        tests.push(("eq", test));
    }
    if let Some(options) = &config.one_of {
        let options: Box<[Box<str>]> = options.iter().map(|o| o.as_str().into()).collect();
        let test = if kind == Kind::Set {
            Test::Intersects(options)
        } else {
            Test::OneOf(options)
        };
        tests.push(("in", test));
    }
    if let Some(prefix) = &config.prefix {
        tests.push(("prefix", Test::Prefix(prefix.as_str().into())));
    }
    if let Some(pattern) = &config.regex {
        let regex =
            Regex::new(pattern).map_err(|e| invalid(&format!("{key}.regex"), &e.to_string()))?;
        tests.push(("regex", Test::Pattern(regex)));
    }
    if let Some(item) = &config.contains {
        tests.push(("contains", Test::Contains(item.as_str().into())));
    }
    for (name, op, bound) in [
        ("gt", Comparison::Gt, config.gt),
        ("gte", Comparison::Gte, config.gte),
        ("lt", Comparison::Lt, config.lt),
        ("lte", Comparison::Lte, config.lte),
    ] {
        if let Some(bound) = bound {
            if !bound.is_finite() {
                return Err(invalid(&format!("{key}.{name}"), "must be a finite number"));
            }
            tests.push((name, Test::Compare(op, bound)));
        }
    }
    if let Some(wanted) = config.exists {
        tests.push(("exists", Test::Exists(wanted)));
    }
    if tests.len() != 1 {
        return Err(invalid(key, "a field test needs exactly one of eq, in, prefix, regex, contains, gt, gte, lt, lte, exists"));
    }
    let (name, test) = tests.pop().expect("exactly one test");
    let allowed = match &test {
        Test::Equals(_) | Test::OneOf(_) | Test::Intersects(_) | Test::Exists(_) => true,
        Test::Prefix(_) | Test::Pattern(_) => kind == Kind::Text,
        Test::Contains(_) => kind == Kind::Set,
        Test::Compare(..) => kind == Kind::Number,
    };
    if !allowed || (kind == Kind::Number && matches!(test, Test::OneOf(_) | Test::Intersects(_))) {
        return Err(invalid(
            &format!("{key}.{name}"),
            &format!("does not apply to a {} field", kind_name(kind)),
        ));
    }
    Ok(test)
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Text => "text",
        Kind::Set => "list",
        Kind::Number => "number",
    }
}

fn invalid(key: &str, message: &str) -> ConfigError {
    ConfigError::Schema {
        key: key.to_owned(),
        message: message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compile(value: serde_json::Value) -> Result<Matcher, ConfigError> {
        let config: MatcherConfig = serde_json::from_value(value).unwrap();
        Matcher::compile(&config, "policies[0].when")
    }

    fn request() -> RouteRequest<'static> {
        RouteRequest {
            task: "code",
            tenant: "acme-eu",
            tags: &["urgent", "beta"],
            metadata: &[("team", "ml-research")],
            input_tokens: 9_000,
            ..RouteRequest::new("auto")
        }
    }

    #[test]
    fn field_tests_match_their_kind() {
        let cases = [
            (json!({"field": "task", "eq": "code"}), true),
            (json!({"field": "task", "in": ["chat", "summarize"]}), false),
            (json!({"field": "tenant", "prefix": "acme-"}), true),
            (json!({"field": "tenant", "regex": "-(eu|us)$"}), true),
            (json!({"field": "tags", "contains": "urgent"}), true),
            (json!({"field": "tags", "in": ["beta", "x"]}), true),
            (json!({"field": "metadata.team", "prefix": "ml-"}), true),
            (json!({"field": "metadata.owner", "exists": true}), false),
            (json!({"field": "input_tokens", "gt": 8000}), true),
            (json!({"field": "input_tokens", "lte": 8000}), false),
            (json!({"field": "max_output_tokens", "exists": false}), true),
            (json!({"field": "max_cost_usd", "lt": 1.0}), false),
            (json!({"field": "affinity_key", "exists": false}), true),
            (json!({"field": "model", "eq": "auto"}), true),
        ];
        for (condition, expected) in cases {
            let matcher = compile(condition.clone()).unwrap();
            assert_eq!(matcher.matches(&request()), expected, "{condition}");
        }
    }

    #[test]
    fn combinators_compose() {
        let matcher = compile(json!({"all": [
            {"field": "task", "eq": "code"},
            {"any": [{"field": "input_tokens", "gt": 100000}, {"field": "tags", "contains": "urgent"}]},
            {"not": {"field": "tenant", "eq": "blocked"}}
        ]}))
        .unwrap();
        assert!(matcher.matches(&request()));
        let other = RouteRequest {
            tags: &[],
            ..request()
        };
        assert!(!matcher.matches(&other));
    }

    #[test]
    fn bad_conditions_name_their_key() {
        let cases = [
            (
                json!({}),
                "policies[0].when: needs exactly one of all, any, not or field",
            ),
            (
                json!({"field": "task", "eq": "x", "all": []}),
                "policies[0].when: needs exactly one",
            ),
            (
                json!({"all": []}),
                "policies[0].when.all: must not be empty",
            ),
            (
                json!({"field": "colour", "eq": "red"}),
                "policies[0].when.field: unknown field \"colour\"",
            ),
            (
                json!({"field": "task"}),
                "policies[0].when: a field test needs exactly one",
            ),
            (
                json!({"field": "task", "gt": 3}),
                "policies[0].when.gt: does not apply to a text field",
            ),
            (
                json!({"field": "input_tokens", "eq": "many"}),
                "policies[0].when.eq: must be a number",
            ),
            (
                json!({"field": "tags", "prefix": "x"}),
                "policies[0].when.prefix: does not apply to a list field",
            ),
            (
                json!({"any": [{"field": "task", "regex": "("}]}),
                "policies[0].when.any[0].regex: regex parse error",
            ),
            (
                json!({"field": "input_tokens", "in": ["1"]}),
                "policies[0].when.in: does not apply to a number",
            ),
        ];
        for (condition, expected) in cases {
            let message = compile(condition.clone()).unwrap_err().to_string();
            assert!(message.starts_with(expected), "{condition}: {message}");
        }
    }
}
