//! Converting what a cluster link passes through the Python API: bucket
//! kinds and health news by name, durations in seconds.

use pyo3::exceptions::PyValueError;
use pyo3::PyResult;

use crate::{Budget, HealthNews, LimitKind};

pub(crate) fn kind(name: &str) -> PyResult<LimitKind> {
    match name {
        "requests" => Ok(LimitKind::Requests),
        "tokens" => Ok(LimitKind::Tokens),
        _ => Err(PyValueError::new_err(format!(
            "kind must be 'requests' or 'tokens', not {name:?}"
        ))),
    }
}

pub(crate) fn kind_name(kind: LimitKind) -> &'static str {
    match kind {
        LimitKind::Requests => "requests",
        LimitKind::Tokens => "tokens",
    }
}

/// (key, kind, per_minute, level) as `Router.budgets` returns each bucket.
pub(crate) fn budget((key, budget): (String, Budget)) -> (String, &'static str, u32, f64) {
    (key, kind_name(budget.kind), budget.per_minute, budget.level)
}

/// (deployment, kind, seconds) as `Router.health_news` returns each change.
pub(crate) fn news_tuple(
    (deployment, news): (std::sync::Arc<str>, HealthNews),
) -> (String, &'static str, f64) {
    (
        deployment.to_string(),
        news.as_str(),
        news.for_nanos() as f64 / 1e9,
    )
}

/// News from another host: a known kind and a duration in [0, 1 day].
pub(crate) fn news(kind: &str, seconds: f64) -> PyResult<HealthNews> {
    if !(0.0..=86_400.0).contains(&seconds) {
        return Err(PyValueError::new_err(format!(
            "seconds must be within [0, 86400], not {seconds}"
        )));
    }
    HealthNews::parse(kind, (seconds * 1e9) as u64).ok_or_else(|| {
        PyValueError::new_err(format!(
            "kind must be 'circuit_open', 'circuit_closed' or 'cooling_down', not {kind:?}"
        ))
    })
}
