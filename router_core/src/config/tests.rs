//! The schema and its checks, key by key.

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
    assert_eq!(config.deployments[1].capabilities, ["streaming"]);
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
    config["custom_capabilities"] = json!(names);
    // "streaming" on deployments[0] is the first; c62 is the 64th.
    assert_eq!(
        error_for(config),
        "deployments[1].capabilities[62]: more than 63 distinct capabilities"
    );
}

#[test]
fn a_deployment_needs_only_its_id_and_context_window() {
    let config = Config::from_json(
        &json!({
            "deployments": [{"id": "a", "context_window": 1000}],
            "model_groups": [{"name": "g", "deployments": ["a"]}]
        })
        .to_string(),
    )
    .unwrap();
    let a = &config.deployments[0];
    assert_eq!(
        (
            a.region.as_str(),
            a.capabilities.as_slice(),
            a.input_price_per_mtok,
            a.output_price_per_mtok
        ),
        ("unspecified", ["streaming".to_owned()].as_slice(), 0.0, 0.0)
    );
}

#[test]
fn deployment_keys_are_exactly_the_fields() {
    let mut every = serde_json::Map::new();
    for key in DEPLOYMENT_KEYS {
        every.insert(key.to_owned(), json!(null));
    }
    every.insert("id".into(), json!("a"));
    every.insert("region".into(), json!("eu"));
    every.insert("context_window".into(), json!(1));
    every.insert("capabilities".into(), json!([]));
    every.insert("input_price_per_mtok".into(), json!(0.0));
    every.insert("output_price_per_mtok".into(), json!(0.0));
    every.insert("weight".into(), json!(1.0));
    every.insert("priority".into(), json!(0));
    let parsed: Result<DeploymentConfig, _> = serde_json::from_value(Value::Object(every.clone()));
    assert!(parsed.is_ok(), "every listed key is a field: {parsed:?}");
    every.insert("other".into(), json!(1));
    let parsed: Result<DeploymentConfig, _> = serde_json::from_value(Value::Object(every));
    assert!(
        parsed
            .unwrap_err()
            .to_string()
            .contains(&format!("expected one of {}", {
                let quoted: Vec<String> =
                    DEPLOYMENT_KEYS.iter().map(|k| format!("`{k}`")).collect();
                quoted.join(", ")
            })),
        "every field is a listed key, in order"
    );
}

fn pruning() -> Config {
    Config::from_json(
        &json!({
            "default_group": "main",
            "deployments": [
                {"id": "a", "context_window": 1000},
                {"id": "b", "context_window": 1000},
                {"id": "c", "context_window": 1000}
            ],
            "model_groups": [
                {"name": "main", "strategy": "priority", "deployments": ["a", "b"]},
                {"name": "spare", "deployments": ["c"]}
            ],
            "policies": [
                {"id": "to-spare", "when": {"field": "task", "eq": "x"}, "route_to": {"groups": ["spare"]}},
                {"id": "mixed", "route_to": {"deployments": ["b", "c"]},
                 "fallback": [{"groups": ["spare"]}, {"deployments": ["a"]}]}
            ]
        })
        .to_string(),
    )
    .unwrap()
}

#[test]
fn leaving_deployments_out_takes_what_named_only_them() {
    let (config, pruned) = pruning().without(&["c"]).unwrap();
    assert_eq!(
        pruned,
        Pruned {
            deployments: vec!["c".into()],
            model_groups: vec!["spare".into()],
            policies: vec!["to-spare".into()],
            fallbacks: vec![("mixed".into(), 0)],
            ..Pruned::default()
        }
    );
    let ids: Vec<&str> = config.deployments.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    let mixed = &config.policies[0];
    assert_eq!(
        (
            mixed.id.as_str(),
            mixed.route_to.deployments.as_slice(),
            mixed.fallback.len()
        ),
        ("mixed", ["b".to_owned()].as_slice(), 1)
    );
    let (_, nothing) = pruning().without::<&str>(&[]).unwrap();
    assert_eq!(nothing, Pruned::default());
}

#[test]
fn leaving_out_the_default_groups_last_deployment_or_an_unknown_one_is_an_error() {
    assert_eq!(
        pruning().without(&["a", "b"]).unwrap_err().to_string(),
        "default_group: model group \"main\" has no deployment left"
    );
    assert_eq!(
        pruning().without(&["a", "zz"]).unwrap_err().to_string(),
        "without[1]: unknown deployment \"zz\""
    );
}

#[test]
fn describe_fills_in_defaults_and_each_policys_strategy() {
    let described = pruning().describe();
    assert_eq!(described["deployments"][0]["region"], "unspecified");
    assert_eq!(
        described["deployments"][0]["capabilities"],
        json!(["streaming"])
    );
    assert_eq!(described["model_groups"][0]["strategy"], "priority");
    assert_eq!(
        described["policies"][0]["strategy"], "weighted",
        "the strategy of its one group"
    );
    assert_eq!(described["policies"][1]["strategy"], "weighted");
    assert_eq!(
        described["policies"][0]["when"],
        json!({"field": "task", "eq": "x"})
    );
    assert_eq!(
        described["policies"][1]["fallback"][1],
        json!({"groups": [], "deployments": ["a"]})
    );
    assert_eq!(described["default_group"], "main");
}

#[test]
fn ids_and_group_names_are_names() {
    for (bad, key) in [
        ("-a", "deployments[0].id"),
        ("a b", "deployments[0].id"),
        ("é", "deployments[0].id"),
    ] {
        let mut config = valid();
        config["deployments"][0]["id"] = json!(bad);
        assert!(error_for(config).starts_with(&format!("{key}: {bad:?} is not a valid name")));
    }
    let mut config = valid();
    config["model_groups"][0]["name"] = json!("x".repeat(129));
    assert!(error_for(config).starts_with("model_groups[0].name: "));
    let mut config = valid();
    config["deployments"][0]["id"] = json!("openai/gpt-4o:2024@eu.1_x");
    config["model_groups"][0]["deployments"][0] = json!("openai/gpt-4o:2024@eu.1_x");
    assert!(Config::from_json(&config.to_string()).is_ok());
}

#[test]
fn capabilities_are_known_or_declared() {
    let mut config = valid();
    config["deployments"][0]["capabilities"] = json!(["streaming", "streming"]);
    assert_eq!(
        error_for(config.clone()),
        "deployments[0].capabilities[1]: unknown capability \"streming\" (known: streaming, vision, \
         tools, json_mode, json_schema; declare others under custom_capabilities)"
    );
    config["custom_capabilities"] = json!(["streming"]);
    assert!(Config::from_json(&config.to_string()).is_ok());
    let mut config = valid();
    config["policies"] = json!([{"id": "p", "route_to": {"groups": ["echo"]},
                                 "constraints": {"capabilities": ["vison"]}}]);
    assert!(error_for(config)
        .starts_with("policies[0].constraints.capabilities[0]: unknown capability"));
}

#[test]
fn leaving_deployments_out_prunes_experiment_variants_and_shadows() {
    let config = Config::from_json(
        &json!({
            "deployments": [
                {"id": "a", "context_window": 1000},
                {"id": "b", "context_window": 1000},
                {"id": "c", "context_window": 1000}
            ],
            "model_groups": [{"name": "main", "deployments": ["a", "b", "c"]}],
            "policies": [
                {"id": "ab", "experiment": {"id": "x", "variants": [
                    {"deployments": ["c"]}, {"deployments": ["b"]}]},
                 "shadow": {"deployments": ["c"], "sample": 0.1}},
                {"id": "only-c", "experiment": {"id": "y", "variants": [{"deployments": ["c"]}]}}
            ]
        })
        .to_string(),
    )
    .unwrap();
    let (config, pruned) = config.without(&["c"]).unwrap();
    assert_eq!(
        pruned.variants,
        [
            ("ab".to_owned(), "0".to_owned()),
            ("only-c".to_owned(), "0".to_owned())
        ]
    );
    assert_eq!(pruned.shadows, [("ab".to_owned(), "c".to_owned())]);
    assert_eq!(pruned.policies, ["only-c"]);
    let ab = &config.policies[0];
    let variants = &ab.experiment.as_ref().unwrap().variants;
    assert_eq!(
        (
            variants.len(),
            variants[0].name.as_deref(),
            ab.shadow.is_none()
        ),
        (1, Some("1"), true),
        "the variant left keeps the name of its place in the config"
    );
}
