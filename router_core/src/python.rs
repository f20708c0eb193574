//! The Python binding (feature `python`). Classes are frozen: the router's
//! state lives behind atomics and `ArcSwap`, so Python threads share one
//! `Router` without runtime borrow errors. Rust errors become Python
//! exceptions in exactly one place, [`to_py_err`].

use std::collections::HashMap;

use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

use crate::{Decision, DeploymentStats, Outcome, RouteRequest, Router, RouterError};

/// Routes requests across a config's model groups; safe to share across threads.
#[pyclass(frozen, name = "Router", module = "router_core")]
pub struct PyRouter(Router);

#[pymethods]
impl PyRouter {
    #[new]
    fn new(py: Python<'_>, config_json: &str) -> PyResult<Self> {
        Router::new(config_json)
            .map(PyRouter)
            .map_err(|e| to_py_err(py, e))
    }

    // The GIL stays held during the decision: it takes about a microsecond,
    // about what releasing and re-taking the GIL costs, and re-taking it makes
    // the caller queue behind whichever thread grabbed it meanwhile. Measured
    // with 8 Python threads routing over 4 deployments: ~2 µs per route held,
    // 5-9 µs with `Python::detach`.
    /// Orders the deployments for one request: by the first matching policy,
    /// else by the model group ("auto": the default group).
    #[pyo3(signature = (
        model, *, input_tokens = 0, max_output_tokens = 0, capabilities = Vec::new(),
        regions = Vec::new(), tenant = "", api_key = "", task = "", tags = Vec::new(),
        metadata = None, max_cost_usd = None, latency_target_ms = None, affinity_key = "",
        seed = None, dry_run = false,
    ))]
    // pyo3 renders `Vec::new()` defaults as `...`; show the Python equivalent.
    #[pyo3(
        text_signature = "($self, model, *, input_tokens=0, max_output_tokens=0, capabilities=(), \
                             regions=(), tenant='', api_key='', task='', tags=(), metadata=None, \
                             max_cost_usd=None, latency_target_ms=None, affinity_key='', seed=None, \
                             dry_run=False)"
    )]
    #[allow(clippy::too_many_arguments)] // mirrors the Python keyword arguments
    fn route(
        &self,
        py: Python<'_>,
        model: &str,
        input_tokens: u32,
        max_output_tokens: u32,
        capabilities: Vec<String>,
        regions: Vec<String>,
        tenant: &str,
        api_key: &str,
        task: &str,
        tags: Vec<String>,
        metadata: Option<HashMap<String, String>>,
        max_cost_usd: Option<f64>,
        latency_target_ms: Option<f64>,
        affinity_key: &str,
        seed: Option<u64>,
        dry_run: bool,
    ) -> PyResult<PyDecision> {
        let metadata: Vec<(String, String)> = metadata.into_iter().flatten().collect();
        let request = RouteRequest {
            model,
            tenant,
            api_key,
            task,
            tags: &tags,
            metadata: &metadata,
            input_tokens,
            max_output_tokens,
            capabilities: &capabilities,
            regions: &regions,
            max_cost_usd,
            latency_target_ms,
            affinity_key,
            seed,
            dry_run,
        };
        let decision = self.0.route(&request).map_err(|e| to_py_err(py, e))?;
        PyDecision::new(py, decision)
    }

    /// Counts one attempt's outcome against a deployment.
    #[pyo3(signature = (deployment, *, success, latency_ms, input_tokens = 0, output_tokens = 0))]
    fn record(
        &self,
        py: Python<'_>,
        deployment: &str,
        success: bool,
        latency_ms: f64,
        input_tokens: u32,
        output_tokens: u32,
    ) -> PyResult<()> {
        let outcome = Outcome {
            deployment,
            success,
            latency_ms,
            input_tokens,
            output_tokens,
        };
        self.0.record(&outcome).map_err(|e| to_py_err(py, e))
    }

    /// One snapshot per deployment of the current config, in config order.
    fn stats(&self) -> Vec<PyDeploymentStats> {
        self.0
            .stats()
            .into_iter()
            .map(PyDeploymentStats::from)
            .collect()
    }

    /// Swaps in a new config atomically, keeping stats of surviving deployment ids.
    fn reload(&self, py: Python<'_>, config_json: &str) -> PyResult<()> {
        self.0.reload(config_json).map_err(|e| to_py_err(py, e))
    }

    /// Group name -> deployment ids.
    fn model_groups<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let groups = PyDict::new(py);
        for (name, deployments) in self.0.model_groups() {
            groups.set_item(name, deployments)?;
        }
        Ok(groups)
    }

    #[getter]
    fn default_group(&self) -> Option<String> {
        self.0.default_group()
    }

    fn __repr__(&self) -> String {
        let groups: Vec<String> = self
            .0
            .model_groups()
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        format!(
            "Router(default_group={}, model_groups={groups:?})",
            repr_option(self.0.default_group())
        )
    }
}

/// A routing decision: candidates best first, and why the others were rejected.
#[pyclass(frozen, get_all, name = "Decision", module = "router_core")]
pub struct PyDecision {
    model_group: String,
    policy: Option<String>,
    strategy: &'static str,
    candidates: Py<PyTuple>,
    rejected: Py<PyTuple>,
}

impl PyDecision {
    fn new(py: Python<'_>, decision: Decision) -> PyResult<Self> {
        let candidates = decision.candidates.into_iter().map(|c| PyCandidate {
            deployment: c.deployment.to_string(),
            score: c.score,
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
        })
    }
}

#[pymethods]
impl PyDecision {
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "Decision(model_group={:?}, policy={}, strategy={:?}, candidates={}, rejected={})",
            self.model_group,
            repr_option(self.policy.as_deref()),
            self.strategy,
            self.candidates.bind(py).repr()?,
            self.rejected.bind(py).repr()?,
        ))
    }
}

/// A deployment to try, with its strategy score in [0, 1].
#[pyclass(frozen, get_all, name = "Candidate", module = "router_core")]
pub struct PyCandidate {
    deployment: String,
    score: f64,
}

#[pymethods]
impl PyCandidate {
    fn __repr__(&self) -> String {
        format!(
            "Candidate(deployment={:?}, score={:?})",
            self.deployment, self.score
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

/// A snapshot of one deployment's outcome counters.
#[pyclass(frozen, get_all, name = "DeploymentStats", module = "router_core")]
pub struct PyDeploymentStats {
    deployment: String,
    requests: u64,
    failures: u64,
    consecutive_failures: u64,
    ewma_latency_ms: Option<f64>,
    input_tokens: u64,
    output_tokens: u64,
}

impl From<DeploymentStats> for PyDeploymentStats {
    fn from(s: DeploymentStats) -> Self {
        PyDeploymentStats {
            deployment: s.deployment,
            requests: s.requests,
            failures: s.failures,
            consecutive_failures: s.consecutive_failures,
            ewma_latency_ms: s.ewma_latency_ms,
            input_tokens: s.input_tokens,
            output_tokens: s.output_tokens,
        }
    }
}

#[pymethods]
impl PyDeploymentStats {
    fn __repr__(&self) -> String {
        format!(
            "DeploymentStats(deployment={:?}, requests={}, failures={}, consecutive_failures={}, \
             ewma_latency_ms={}, input_tokens={}, output_tokens={})",
            self.deployment,
            self.requests,
            self.failures,
            self.consecutive_failures,
            repr_option(self.ewma_latency_ms),
            self.input_tokens,
            self.output_tokens,
        )
    }
}

/// Rust's `Debug` for the value, which reads as Python for strings and floats,
/// or Python's `None`.
fn repr_option<T: std::fmt::Debug>(value: Option<T>) -> String {
    value.map_or_else(|| "None".to_owned(), |v| format!("{v:?}"))
}

/// Base class of every error raised by the router.
#[pyclass(frozen, subclass, extends = PyException, name = "RouterError", module = "router_core")]
pub struct PyRouterError;

#[pymethods]
impl PyRouterError {
    // Like any exception, it accepts arbitrary positional arguments, which
    // `BaseException.__init__` stores in `args`.
    #[new]
    #[pyo3(signature = (*_args))]
    fn new(_args: &Bound<'_, PyTuple>) -> Self {
        PyRouterError
    }
}

/// `model` named no group (or was "auto" with no default group); `known`
/// lists the configured groups, sorted.
#[pyclass(frozen, extends = PyRouterError, name = "UnknownModelGroupError", module = "router_core")]
pub struct PyUnknownModelGroupError {
    #[pyo3(get)]
    name: String,
    #[pyo3(get)]
    known: Vec<String>,
}

#[pymethods]
impl PyUnknownModelGroupError {
    #[new]
    fn new(name: String, known: Vec<String>) -> PyClassInitializer<Self> {
        PyClassInitializer::from(PyRouterError)
            .add_subclass(PyUnknownModelGroupError { name, known })
    }

    fn __str__(&self) -> String {
        let (name, known) = (self.name.clone(), self.known.clone());
        RouterError::UnknownModelGroup { name, known }.to_string()
    }
}

/// `record` named a deployment that is not in the current config.
#[pyclass(frozen, extends = PyRouterError, name = "UnknownDeploymentError", module = "router_core")]
pub struct PyUnknownDeploymentError {
    #[pyo3(get)]
    deployment: String,
}

#[pymethods]
impl PyUnknownDeploymentError {
    #[new]
    fn new(deployment: String) -> PyClassInitializer<Self> {
        PyClassInitializer::from(PyRouterError)
            .add_subclass(PyUnknownDeploymentError { deployment })
    }

    fn __str__(&self) -> String {
        RouterError::UnknownDeployment(self.deployment.clone()).to_string()
    }
}

/// `ConfigError(RouterError, ValueError)`. A pyclass can extend only one
/// native base, so this one class is built by calling `type()`; callers may
/// then catch a bad config as either a router error or a `ValueError`.
pub(crate) fn config_error(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    static CONFIG_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    CONFIG_ERROR
        .get_or_try_init(py, || {
            let bases = (
                py.get_type::<PyRouterError>(),
                py.get_type::<PyValueError>(),
            );
            let namespace = PyDict::new(py);
            namespace.set_item("__module__", "router_core")?;
            namespace.set_item(
                "__doc__",
                "The config JSON is malformed or invalid; the message names the key.",
            )?;
            let class = py
                .get_type::<PyType>()
                .call1(("ConfigError", bases, namespace))?;
            Ok(class.cast_into::<PyType>()?.unbind())
        })
        .map(|class| class.bind(py))
}

/// The one mapping from Rust errors to Python exceptions. Exceptions are built
/// by calling their class, as Python code would, so `args` and `str()` agree
/// whichever side raised them.
fn to_py_err(py: Python<'_>, err: RouterError) -> PyErr {
    let exception = match err {
        RouterError::Config(e) => config_error(py).and_then(|class| class.call1((e.to_string(),))),
        RouterError::UnknownModelGroup { name, known } => py
            .get_type::<PyUnknownModelGroupError>()
            .call1((name, known)),
        RouterError::UnknownDeployment(id) => {
            py.get_type::<PyUnknownDeploymentError>().call1((id,))
        }
        RouterError::InvalidLatency(_) => return PyValueError::new_err(err.to_string()),
    };
    exception.map_or_else(|e| e, PyErr::from_value)
}
