//! Configs from Python: parsed, checked and pruned in one place, for the
//! `Router` constructor, `Router.reload` and `describe_config`.

use pyo3::prelude::*;

use super::to_py_err;
use crate::{Config, Pruned};

/// Parses and validates `config_json`, then leaves out the deployments `without`.
pub(crate) fn parse(
    py: Python<'_>,
    config_json: &str,
    without: &[String],
) -> PyResult<(Config, Pruned)> {
    Config::from_json(config_json)
        .and_then(|config| config.without(without))
        .map_err(|e| to_py_err(py, e.into()))
}

/// What `config_json` compiles to, as JSON text: `config` holds every
/// deployment with its defaults filled in, the model groups with their
/// strategies, the default group, and the policies in the order they are
/// tried with the strategy each uses; `left_out` what leaving the deployments
/// `without` removed (deployments, model_groups, policies, fallbacks as
/// [policy id, index], experiment variants as [policy id, variant] and shadow
/// deployments as [policy id, deployment]). Raises ConfigError naming the key, as `Router` does.
#[pyfunction]
#[pyo3(signature = (config_json, *, without = Vec::new()))]
#[pyo3(text_signature = "(config_json, *, without=())")]
pub fn describe_config(
    py: Python<'_>,
    config_json: &str,
    without: Vec<String>,
) -> PyResult<String> {
    let (config, pruned) = parse(py, config_json, &without)?;
    let described = serde_json::json!({
        "config": config.describe(),
        "left_out": {
            "deployments": pruned.deployments,
            "model_groups": pruned.model_groups,
            "policies": pruned.policies,
            "fallbacks": pruned.fallbacks,
            "variants": pruned.variants,
            "shadows": pruned.shadows,
        },
    });
    Ok(described.to_string())
}
