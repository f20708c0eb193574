//! What a routing decision looks like from Python: the decision, its
//! candidates and rejections, the policy's hedging, and what the policy
//! evaluates (its experiment variant, its shadow copy).

use pyo3::prelude::*;
use pyo3::types::PyTuple;

use super::PyLease;
use crate::{Decision, Hedge, ShadowCopy};

/// A routing decision: candidates best first, and why the others were rejected.
#[pyclass(frozen, get_all, name = "Decision", module = "router_core")]
pub struct PyDecision {
    model_group: String,
    policy: Option<String>,
    strategy: &'static str,
    candidates: Py<PyTuple>,
    rejected: Py<PyTuple>,
    lease: Option<Py<PyLease>>,
    retry_after_s: Option<f64>,
    hedge: Option<Py<PyHedge>>,
    content_fallback: &'static str,
    experiment: Option<(String, String)>,
    shadow: Option<Py<PyShadowCopy>>,
}

impl PyDecision {
    pub(super) fn new(py: Python<'_>, decision: Decision) -> PyResult<Self> {
        let candidates = decision.candidates.into_iter().map(|c| PyCandidate {
            deployment: c.deployment.to_string(),
            score: c.score,
            tier: c.tier,
        });
        let rejected = decision.rejected.into_iter().map(|r| PyRejection {
            deployment: r.deployment.to_string(),
            filter: r.filter.as_str(),
            detail: r.detail,
        });
        Ok(PyDecision {
            model_group: decision.model_group.to_string(),
            policy: decision.policy.map(|p| p.to_string()),
            strategy: decision.strategy.as_str(),
            candidates: PyTuple::new(py, candidates)?.unbind(),
            rejected: PyTuple::new(py, rejected)?.unbind(),
            lease: decision
                .lease
                .map(|lease| Py::new(py, PyLease::new(lease)))
                .transpose()?,
            retry_after_s: decision.retry_after.map(|d| d.as_secs_f64()),
            hedge: decision
                .hedge
                .map(|hedge| Py::new(py, PyHedge::from(hedge)))
                .transpose()?,
            content_fallback: decision.content_fallback.as_str(),
            experiment: decision
                .experiment
                .map(|a| (a.experiment.to_string(), a.variant.to_string())),
            shadow: decision
                .shadow
                .map(|copy| PyShadowCopy::new(py, copy).and_then(|c| Py::new(py, c)))
                .transpose()?,
        })
    }
}

#[pymethods]
impl PyDecision {
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "Decision(model_group={:?}, policy={}, strategy={:?}, candidates={}, rejected={}, \
             lease={}, retry_after_s={}, hedge={}, content_fallback={:?}, experiment={}, \
             shadow={})",
            self.model_group,
            repr_option(self.policy.as_deref()),
            self.strategy,
            self.candidates.bind(py).repr()?,
            self.rejected.bind(py).repr()?,
            match &self.lease {
                Some(lease) => lease.bind(py).repr()?.to_string(),
                None => "None".to_owned(),
            },
            repr_option(self.retry_after_s),
            match &self.hedge {
                Some(hedge) => hedge.get().__repr__(),
                None => "None".to_owned(),
            },
            self.content_fallback,
            match &self.experiment {
                Some((experiment, variant)) => format!("({experiment:?}, {variant:?})"),
                None => "None".to_owned(),
            },
            match &self.shadow {
                Some(shadow) => shadow.bind(py).repr()?.to_string(),
                None => "None".to_owned(),
            },
        ))
    }
}

/// The deployments a sampled request is to be copied to (the matched policy's
/// shadow), and the policy's bound on shadow calls in flight.
#[pyclass(frozen, get_all, name = "ShadowCopy", module = "router_core")]
pub struct PyShadowCopy {
    deployments: Py<PyTuple>,
    max_in_flight: u32,
}

impl PyShadowCopy {
    fn new(py: Python<'_>, copy: ShadowCopy) -> PyResult<Self> {
        let deployments = copy.deployments.iter().map(|d| d.to_string());
        Ok(PyShadowCopy {
            deployments: PyTuple::new(py, deployments)?.unbind(),
            max_in_flight: copy.max_in_flight,
        })
    }
}

#[pymethods]
impl PyShadowCopy {
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "ShadowCopy(deployments={}, max_in_flight={})",
            self.deployments.bind(py).repr()?,
            self.max_in_flight
        ))
    }
}

/// The matched policy's hedging: start the next candidate alongside a first
/// attempt silent past its deployment's tail estimate, clamped to
/// [min_delay_ms, max_delay_ms], at most `max_hedges` times per request.
#[pyclass(frozen, get_all, name = "Hedge", module = "router_core")]
pub struct PyHedge {
    min_delay_ms: f64,
    max_delay_ms: f64,
    max_hedges: u32,
}

impl From<Hedge> for PyHedge {
    fn from(hedge: Hedge) -> Self {
        PyHedge {
            min_delay_ms: hedge.min_delay_ms,
            max_delay_ms: hedge.max_delay_ms,
            max_hedges: hedge.max_hedges,
        }
    }
}

#[pymethods]
impl PyHedge {
    fn __repr__(&self) -> String {
        format!(
            "Hedge(min_delay_ms={:?}, max_delay_ms={:?}, max_hedges={})",
            self.min_delay_ms, self.max_delay_ms, self.max_hedges
        )
    }
}

/// A deployment to try, with its strategy score in [0, 1] and its tier (0:
/// the primary targets, n: the n-th fallback).
#[pyclass(frozen, get_all, name = "Candidate", module = "router_core")]
pub struct PyCandidate {
    deployment: String,
    score: f64,
    tier: u32,
}

#[pymethods]
impl PyCandidate {
    fn __repr__(&self) -> String {
        format!(
            "Candidate(deployment={:?}, score={:?}, tier={})",
            self.deployment, self.score, self.tier
        )
    }
}

/// A deployment a filter left out, with the reason.
#[pyclass(frozen, get_all, name = "Rejection", module = "router_core")]
pub struct PyRejection {
    deployment: String,
    filter: &'static str,
    detail: String,
}

#[pymethods]
impl PyRejection {
    fn __repr__(&self) -> String {
        format!(
            "Rejection(deployment={:?}, filter={:?}, detail={:?})",
            self.deployment, self.filter, self.detail
        )
    }
}

/// Rust's `Debug` for the value, which reads as Python for strings and floats,
/// or Python's `None`.
pub(crate) fn repr_option<T: std::fmt::Debug>(value: Option<T>) -> String {
    value.map_or_else(|| "None".to_owned(), |v| format!("{v:?}"))
}
