//! What a router reports through Python: each deployment's counters, health
//! and budget (`stats`), its distributions (`measures`), and calls per model
//! group (`call_measures`).

use std::collections::HashMap;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use super::repr_option;
use crate::{CallMeasures, DeploymentMeasures, DeploymentStats, Distribution};

/// One deployment's counters, health and budget at the time of `stats()`.
#[pyclass(frozen, get_all, name = "DeploymentStats", module = "router_core")]
pub struct PyDeploymentStats {
    deployment: String,
    requests: u64,
    failures: u64,
    in_flight: u64,
    input_tokens: u64,
    output_tokens: u64,
    state: &'static str,
    unavailable_reason: Option<&'static str>,
    unavailable_for_s: Option<f64>,
    consecutive_failures: u32,
    error_rate: Option<f64>,
    ewma_latency_ms: Option<f64>,
    tail_latency_ms: Option<f64>,
    ewma_ttft_ms: Option<f64>,
    tail_ttft_ms: Option<f64>,
    headroom: f64,
    input_token_ratio: f64,
}

impl From<DeploymentStats> for PyDeploymentStats {
    fn from(s: DeploymentStats) -> Self {
        PyDeploymentStats {
            deployment: s.deployment,
            requests: s.requests,
            failures: s.failures,
            in_flight: s.in_flight,
            input_tokens: s.input_tokens,
            output_tokens: s.output_tokens,
            state: s.state.as_str(),
            unavailable_reason: s.unavailable.map(|(reason, _)| reason),
            unavailable_for_s: s.unavailable.map(|(_, left)| left.as_secs_f64()),
            consecutive_failures: s.health.consecutive_failures,
            error_rate: s.health.error_rate,
            ewma_latency_ms: s.health.ewma_latency_ms,
            tail_latency_ms: s.health.tail_latency_ms,
            ewma_ttft_ms: s.health.ewma_ttft_ms,
            tail_ttft_ms: s.health.tail_ttft_ms,
            headroom: s.headroom,
            input_token_ratio: s.input_token_ratio,
        }
    }
}

#[pymethods]
impl PyDeploymentStats {
    fn __repr__(&self) -> String {
        format!(
            "DeploymentStats(deployment={:?}, requests={}, failures={}, in_flight={}, state={:?}, \
             unavailable_reason={}, error_rate={}, tail_latency_ms={}, tail_ttft_ms={}, \
             headroom={:?}, input_token_ratio={:?})",
            self.deployment,
            self.requests,
            self.failures,
            self.in_flight,
            self.state,
            repr_option(self.unavailable_reason),
            repr_option(self.error_rate),
            repr_option(self.tail_latency_ms),
            repr_option(self.tail_ttft_ms),
            self.headroom,
            self.input_token_ratio,
        )
    }
}

/// Counts per bucket of a histogram read at one moment: `counts[i]` values
/// were at most `bounds[i]` and above the bound before it; the last count,
/// above every bound. Durations are in seconds.
#[pyclass(frozen, name = "Distribution", module = "router_core")]
pub struct PyDistribution(Distribution);

#[pymethods]
impl PyDistribution {
    #[getter]
    fn bounds(&self) -> &[f64] {
        self.0.bounds
    }

    #[getter]
    fn counts(&self) -> Vec<u64> {
        self.0.counts.clone()
    }

    #[getter]
    fn sum(&self) -> f64 {
        self.0.sum
    }

    #[getter]
    fn count(&self) -> u64 {
        self.0.count()
    }

    /// The value below which a share `q` (0 to 1) of the values fall,
    /// interpolated within its bucket; the last bound when above them all;
    /// None when empty or `q` is out of range.
    fn quantile(&self, q: f64) -> Option<f64> {
        self.0.quantile(q)
    }

    /// The same values counted at the GenAI conventions' duration bounds
    /// (`DURATION_BOUNDS_S`), for exporters; ValueError unless these are
    /// durations at finer bounds.
    fn coarsened(&self) -> PyResult<PyDistribution> {
        self.0
            .at_bounds(&crate::DURATION_BOUNDS_S)
            .map(PyDistribution)
            .map_err(|e| PyValueError::new_err(e.to_string()))
    }

    fn __repr__(&self) -> String {
        format!(
            "Distribution(count={}, sum={:?}, buckets={})",
            self.0.count(),
            self.0.sum,
            self.0.counts.len()
        )
    }
}

/// A deployment's attempts as distributions, at the time of `measures()`.
#[pyclass(frozen, get_all, name = "DeploymentMeasures", module = "router_core")]
pub struct PyDeploymentMeasures {
    deployment: String,
    /// Attempts per outcome class name, for the classes that ended any.
    outcomes: HashMap<&'static str, u64>,
    cost_usd: f64,
    /// Durations of successful attempts, quarter-octave buckets.
    latency: Py<PyDistribution>,
    /// Times to first token of successful streamed attempts, likewise.
    first_token: Py<PyDistribution>,
    /// Durations of failed attempts per outcome class, at the conventions' bounds.
    failed_latency: HashMap<&'static str, Py<PyDistribution>>,
    input_tokens: Py<PyDistribution>,
    output_tokens: Py<PyDistribution>,
}

impl PyDeploymentMeasures {
    pub(crate) fn new(py: Python<'_>, m: DeploymentMeasures) -> PyResult<Self> {
        let wrap = |d: Distribution| Py::new(py, PyDistribution(d));
        Ok(PyDeploymentMeasures {
            deployment: m.deployment,
            outcomes: m
                .outcomes
                .into_iter()
                .map(|(c, n)| (c.as_str(), n))
                .collect(),
            cost_usd: m.cost_usd,
            latency: wrap(m.latency)?,
            first_token: wrap(m.first_token)?,
            failed_latency: m
                .failed_latency
                .into_iter()
                .map(|(c, d)| Ok((c.as_str(), wrap(d)?)))
                .collect::<PyResult<_>>()?,
            input_tokens: wrap(m.input_tokens)?,
            output_tokens: wrap(m.output_tokens)?,
        })
    }
}

#[pymethods]
impl PyDeploymentMeasures {
    fn __repr__(&self) -> String {
        format!(
            "DeploymentMeasures(deployment={:?}, outcomes={:?}, cost_usd={:?})",
            self.deployment, self.outcomes, self.cost_usd
        )
    }
}

/// One method's calls to one model group ("" for those that reached none).
#[pyclass(frozen, get_all, name = "CallMeasures", module = "router_core")]
pub struct PyCallMeasures {
    model_group: String,
    method: &'static str,
    /// Calls per gRPC status code number, for the codes that ended any.
    statuses: HashMap<u8, u64>,
    duration: Py<PyDistribution>,
    retries: u64,
    fallbacks: u64,
    hedges: u64,
}

impl PyCallMeasures {
    pub(crate) fn new(py: Python<'_>, m: CallMeasures) -> PyResult<Self> {
        Ok(PyCallMeasures {
            model_group: m.model_group,
            method: m.method,
            statuses: m.statuses.into_iter().collect(),
            duration: Py::new(py, PyDistribution(m.duration))?,
            retries: m.retries,
            fallbacks: m.fallbacks,
            hedges: m.hedges,
        })
    }
}

#[pymethods]
impl PyCallMeasures {
    fn __repr__(&self) -> String {
        format!(
            "CallMeasures(model_group={:?}, method={:?}, statuses={:?})",
            self.model_group, self.method, self.statuses
        )
    }
}
