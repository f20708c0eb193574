//! Switchboard's routing core: compile a JSON config into an immutable table,
//! then answer "which deployments, in what order?" in microseconds.
//!
//! The crate knows nothing of Python; the binding in `python` is compiled only
//! with the `python` feature (maturin turns it on).

mod attempts;
mod budget;
mod calibration;
mod clock;
mod config;
mod error;
mod filter;
mod health;
mod lease;
mod matcher;
mod measures;
mod ranking;
mod ratelimit;
mod router;
mod state;
mod stats;
mod strategy;
mod table;
#[cfg(test)]
mod testing;
mod tokens;
mod weights;

#[cfg(feature = "python")]
mod python;

pub use attempts::{ContentFallback, Hedge, HedgeConfig};
pub use budget::{
    reserve as reserve_dollars, BudgetSpec, DollarBudget, Hold, Overspent, Period, PooledView, When,
};
pub use calibration::{
    CALIBRATION_ALPHA, FULL_WEIGHT_TOKENS, MAX_INPUT_TOKEN_RATIO, MIN_INPUT_TOKEN_RATIO,
};
pub use clock::{Clock, Nanos};
pub use config::{
    Config, ConstraintsConfig, DeploymentConfig, ExperimentConfig, ModelGroupConfig, PolicyConfig,
    Priority, Pruned, ScoringConfig, ShadowConfig, StickyKey, TargetConfig, VariantConfig,
    AUTO_GROUP, CAPABILITIES, DEPLOYMENT_KEYS, MAX_SHADOWS, MAX_SHADOW_IN_FLIGHT, MAX_VARIANTS,
};
pub use error::{ConfigError, RouterError};
pub use filter::Filter;
pub use health::{
    eject_outliers, Admission, BreakerState, Health, HealthNews, HealthPolicy, HealthSnapshot,
    OutcomeClass, OutlierPolicy, RateGate, Told, UnavailableReason, UnknownOutcomeClass,
};
pub use lease::Lease;
pub use matcher::MatcherConfig;
pub use measures::{
    CallMeasures, Distribution, Extra, NotABound, CALL_METHODS, DURATION_BOUNDS_S,
    FINE_DURATION_BOUNDS_S, GRPC_STATUSES, TOKEN_BOUNDS,
};
pub use ratelimit::{
    release, reserve, reserve_keeping, settle, Budget, Denied, Keep, Limit, LimitKind, LimitSpec,
    Refill, Reservation,
};
pub use router::{
    Assignment, Candidate, Decision, Preference, Rejection, RouteRequest, Router, ShadowCopy,
};
pub use state::Region;
pub use stats::{DeploymentMeasures, DeploymentStats, Outcome, EWMA_ALPHA};
pub use strategy::Strategy;
pub use table::MAX_NAMES;
pub use tokens::{
    estimate_input_tokens, estimate_text_tokens, TOKENS_PER_IMAGE, TOKENS_PER_MESSAGE,
};

// The extension module maturin builds: this export list is the whole Python
// API, and `router_core/__init__.pyi` types it (checked by mypy.stubtest).
/// Switchboard's routing core: build a Router once from JSON config, then route
/// requests and record their outcomes from any thread.
#[cfg(feature = "python")]
#[pyo3::pymodule]
mod router_core {
    #[pymodule_export]
    use crate::python::config::describe_config;
    #[pymodule_export]
    use crate::python::estimate_tokens;
    #[pymodule_export]
    use crate::python::{
        PyBudgetHold, PyBudgetRefusal, PyCallMeasures, PyCandidate, PyCandidates, PyCandidatesIter,
        PyDecision, PyDeploymentMeasures, PyDeploymentStats, PyDeploymentUnavailableError,
        PyDistribution, PyHedge, PyLease, PyPooledBudget, PyRejection, PyRouter, PyRouterError,
        PyShadowCopy, PyUnknownDeploymentError, PyUnknownModelGroupError,
    };

    /// `ConfigError` has two bases, so it is a class built at import (see `python::config_error`).
    #[pymodule_init]
    fn init(module: &pyo3::Bound<'_, pyo3::types::PyModule>) -> pyo3::PyResult<()> {
        use pyo3::types::PyModuleMethods;
        module.add("ConfigError", crate::python::config_error(module.py())?)?;
        let keys = pyo3::types::PyTuple::new(module.py(), crate::DEPLOYMENT_KEYS)?;
        module.add("DEPLOYMENT_KEYS", keys)?;
        let methods = pyo3::types::PyTuple::new(module.py(), crate::CALL_METHODS)?;
        module.add("CALL_METHODS", methods)?;
        let bounds = pyo3::types::PyTuple::new(module.py(), crate::DURATION_BOUNDS_S)?;
        module.add("DURATION_BOUNDS_S", bounds)?;
        let bounds = pyo3::types::PyTuple::new(module.py(), crate::TOKEN_BOUNDS)?;
        module.add("TOKEN_BOUNDS", bounds)
    }
}
