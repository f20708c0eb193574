//! The router's errors as Python exceptions.

use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

use crate::RouterError;

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

/// A lease could not be had: the deployment is out of rotation or a budget
/// is spent. `retry_after_s` says when it could succeed (None: waiting cannot help).
#[pyclass(frozen, extends = PyRouterError, name = "DeploymentUnavailableError", module = "router_core")]
pub struct PyDeploymentUnavailableError {
    #[pyo3(get)]
    deployment: String,
    #[pyo3(get)]
    detail: String,
    #[pyo3(get)]
    retry_after_s: Option<f64>,
    /// Refused by a budget or a provider's 429 cool-down, not for being out
    /// of rotation (open circuit, outlier, rejected credentials).
    #[pyo3(get)]
    rate_limited: bool,
}

#[pymethods]
impl PyDeploymentUnavailableError {
    #[new]
    #[pyo3(signature = (deployment, detail, retry_after_s = None, rate_limited = false))]
    fn new(
        deployment: String,
        detail: String,
        retry_after_s: Option<f64>,
        rate_limited: bool,
    ) -> PyClassInitializer<Self> {
        PyClassInitializer::from(PyRouterError).add_subclass(PyDeploymentUnavailableError {
            deployment,
            detail,
            retry_after_s,
            rate_limited,
        })
    }

    fn __str__(&self) -> String {
        RouterError::Unavailable {
            deployment: self.deployment.clone(),
            detail: self.detail.clone(),
            retry_after: None,
            rate_limited: self.rate_limited,
        }
        .to_string()
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
pub(crate) fn to_py_err(py: Python<'_>, err: RouterError) -> PyErr {
    let exception = match err {
        RouterError::Config(e) => config_error(py).and_then(|class| class.call1((e.to_string(),))),
        RouterError::UnknownModelGroup { name, known } => py
            .get_type::<PyUnknownModelGroupError>()
            .call1((name, known)),
        RouterError::UnknownDeployment(id) => {
            py.get_type::<PyUnknownDeploymentError>().call1((id,))
        }
        RouterError::Unavailable {
            deployment,
            detail,
            retry_after,
            rate_limited,
        } => py.get_type::<PyDeploymentUnavailableError>().call1((
            deployment,
            detail,
            retry_after.map(|d| d.as_secs_f64()),
            rate_limited,
        )),
        RouterError::InvalidLatency(_)
        | RouterError::UnknownMethod(_)
        | RouterError::UnknownStatus(_) => return PyValueError::new_err(err.to_string()),
    };
    exception.map_or_else(|e| e, PyErr::from_value)
}
