//! What a routing decision looks like from Python: the decision, its
//! candidates and rejections, the policy's hedging, and what the policy
//! evaluates (its experiment variant, its shadow copy).

use std::sync::{Mutex, MutexGuard, PoisonError};

use pyo3::exceptions::{PyIndexError, PyStopIteration};
use pyo3::prelude::*;
use pyo3::types::{PySlice, PyTuple};

use super::PyLease;
use crate::{Candidate, Decision, Hedge, Rejection, ShadowCopy};

/// A routing decision: candidates best first, and why the others were rejected.
#[pyclass(frozen, name = "Decision", module = "router_core")]
pub struct PyDecision {
    #[pyo3(get)]
    model_group: String,
    #[pyo3(get)]
    policy: Option<String>,
    #[pyo3(get)]
    strategy: &'static str,
    #[pyo3(get)]
    candidates: Py<PyCandidates>,
    #[pyo3(get)]
    lease: Option<Py<PyLease>>,
    #[pyo3(get)]
    retry_after_s: Option<f64>,
    #[pyo3(get)]
    hedge: Option<Py<PyHedge>>,
    #[pyo3(get)]
    content_fallback: &'static str,
    #[pyo3(get)]
    experiment: Option<(String, String)>,
    #[pyo3(get)]
    shadow: Option<Py<PyShadowCopy>>,
}

impl PyDecision {
    pub(super) fn new(py: Python<'_>, mut decision: Decision) -> PyResult<Self> {
        Ok(PyDecision {
            model_group: decision.model_group.to_string(),
            policy: decision.policy.as_ref().map(|p| p.to_string()),
            strategy: decision.strategy.as_str(),
            lease: decision
                .lease
                .take()
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
                .take()
                .map(|a| (a.experiment.to_string(), a.variant.to_string())),
            shadow: decision
                .shadow
                .take()
                .map(|copy| PyShadowCopy::new(py, copy).and_then(|c| Py::new(py, c)))
                .transpose()?,
            candidates: Py::new(
                py,
                PyCandidates {
                    decision: Mutex::new(decision),
                },
            )?,
        })
    }
}

/// The candidates of a decision, drawn as they are asked for: indexing draws
/// up to the index, iterating draws one at a time, `len()` (and a negative
/// index, a slice or repr) draws them all.
#[pyclass(frozen, sequence, name = "Candidates", module = "router_core")]
pub struct PyCandidates {
    decision: Mutex<Decision>,
}

impl PyCandidates {
    /// The decision; drawing never runs Python code, so the lock cannot be re-entered.
    fn lock(&self) -> MutexGuard<'_, Decision> {
        self.decision.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Candidate `index`, drawing up to it.
    fn get(&self, index: usize) -> Option<Candidate> {
        let mut decision = self.lock();
        decision
            .draw(index)
            .then(|| decision.candidates[index].clone())
    }

    fn all(&self) -> Vec<Candidate> {
        let mut decision = self.lock();
        decision.draw_all();
        decision.candidates.clone()
    }

    fn rejected(&self, complete: bool) -> Vec<Rejection> {
        let mut decision = self.lock();
        if complete {
            decision.draw_all();
        }
        decision.rejected.clone()
    }
}

#[pymethods]
impl PyCandidates {
    fn __len__(&self) -> usize {
        let mut decision = self.lock();
        decision.draw_all();
        decision.candidates.len()
    }

    fn __bool__(&self) -> bool {
        self.lock().draw(0)
    }

    fn __getitem__<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if let Ok(slice) = key.cast::<PySlice>() {
            let all = self.all();
            let indices = slice.indices(all.len() as isize)?;
            let picked: Vec<Candidate> = (0..indices.slicelength)
                .map(|k| all[(indices.start + k as isize * indices.step) as usize].clone())
                .collect();
            return Ok(candidates_tuple(py, picked)?.into_any());
        }
        let index: isize = key.extract()?;
        let candidate = match usize::try_from(index) {
            Ok(index) => self.get(index),
            Err(_) => {
                let mut all = self.all();
                let from_end = index.unsigned_abs();
                (from_end <= all.len()).then(|| all.swap_remove(all.len() - from_end))
            }
        };
        let candidate =
            candidate.ok_or_else(|| PyIndexError::new_err("candidate index out of range"))?;
        Ok(Bound::new(py, PyCandidate::from(candidate))?.into_any())
    }

    fn __iter__(slf: Py<Self>) -> PyCandidatesIter {
        PyCandidatesIter {
            candidates: slf,
            next: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// The candidates drawn so far, without drawing more.
    #[getter]
    fn drawn<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let drawn = self.lock().candidates.clone();
        candidates_tuple(py, drawn)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "Candidates({})",
            candidates_tuple(py, self.all())?.repr()?
        ))
    }
}

fn candidates_tuple<'py>(
    py: Python<'py>,
    candidates: impl IntoIterator<Item = Candidate, IntoIter: ExactSizeIterator>,
) -> PyResult<Bound<'py, PyTuple>> {
    PyTuple::new(py, candidates.into_iter().map(PyCandidate::from))
}

fn rejections_tuple<'py>(
    py: Python<'py>,
    rejected: Vec<Rejection>,
) -> PyResult<Bound<'py, PyTuple>> {
    PyTuple::new(
        py,
        rejected.into_iter().map(|r| PyRejection {
            deployment: r.deployment.to_string(),
            filter: r.filter.as_str(),
            detail: r.detail,
        }),
    )
}

/// Iterates a decision's candidates, drawing each when it is reached.
#[pyclass(frozen, name = "CandidatesIterator", module = "router_core")]
pub struct PyCandidatesIter {
    candidates: Py<PyCandidates>,
    next: std::sync::atomic::AtomicUsize,
}

#[pymethods]
impl PyCandidatesIter {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self) -> PyResult<PyCandidate> {
        let index = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match self.candidates.get().get(index) {
            Some(candidate) => Ok(candidate.into()),
            None => Err(PyStopIteration::new_err(())),
        }
    }
}

#[pymethods]
impl PyDecision {
    /// Why deployments were left out: every one of them, so reading this draws
    /// every candidate.
    #[getter]
    fn rejected<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        rejections_tuple(py, self.candidates.get().rejected(true))
    }

    /// (candidates, rejections) as far as drawn: what the call has looked at,
    /// without drawing more.
    #[getter]
    fn drawn<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyTuple>, Bound<'py, PyTuple>)> {
        let candidates = self.candidates.get();
        let (drawn, rejected) = {
            let decision = candidates.lock();
            (decision.candidates.clone(), decision.rejected.clone())
        };
        Ok((
            candidates_tuple(py, drawn)?,
            rejections_tuple(py, rejected)?,
        ))
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "Decision(model_group={:?}, policy={}, strategy={:?}, candidates={}, rejected={}, \
             lease={}, retry_after_s={}, hedge={}, content_fallback={:?}, experiment={}, \
             shadow={})",
            self.model_group,
            repr_option(self.policy.as_deref()),
            self.strategy,
            self.candidates.get().__repr__(py)?,
            self.rejected(py)?.repr()?,
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

impl From<Candidate> for PyCandidate {
    fn from(candidate: Candidate) -> Self {
        PyCandidate {
            deployment: candidate.deployment.to_string(),
            score: candidate.score,
            tier: candidate.tier,
        }
    }
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
