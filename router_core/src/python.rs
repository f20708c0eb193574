//! The Python binding (feature `python`). Classes are frozen: the router's
//! state lives behind atomics and `ArcSwap`, so Python threads share one
//! `Router` without runtime borrow errors. Rust errors become Python
//! exceptions in exactly one place, [`to_py_err`].

mod budget;
mod cluster;
pub(crate) mod config;
mod decision;
mod errors;
mod stats;

pub use budget::{PyBudgetHold, PyBudgetRefusal, PyPooledBudget};
pub(crate) use decision::repr_option;
pub use decision::{
    PyCandidate, PyCandidates, PyCandidatesIter, PyDecision, PyHedge, PyRejection, PyShadowCopy,
};
pub use errors::*;
pub use stats::{PyCallMeasures, PyDeploymentMeasures, PyDeploymentStats, PyDistribution};

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::PyDict;

use crate::{
    estimate_input_tokens, Clock, Extra, Lease, Outcome, OutcomeClass, Preference, Region,
    RouteRequest, Router,
};

/// Estimated input tokens of a request: its texts (message parts, tool-call
/// names and arguments, tool definitions as JSON), plus 4 per message and
/// 765 per image. Within a few percent of cl100k/o200k for English, code and
/// JSON; a deployment's router calibrates it against what the provider reports.
#[pyfunction]
#[pyo3(signature = (texts, *, messages = 0, images = 0))]
pub fn estimate_tokens(py: Python<'_>, texts: Vec<PyBackedStr>, messages: u32, images: u32) -> u32 {
    let estimate = || estimate_input_tokens(&texts, messages, images);
    if texts.iter().map(|t| t.len()).sum::<usize>() < DETACH_FROM_BYTES {
        estimate()
    } else {
        py.detach(estimate)
    }
}

// The estimate takes 3-4 ns a byte (measured on the 2-core dev VM). Under 4 KiB
// that is at most ~15 µs, close to what releasing and re-taking a contended GIL
// costs (see `Router::route`); a 100 KB conversation takes ~300 µs, during which
// a held GIL stalled another Python thread to ~40% of its pace (66-129% when
// released), so larger inputs let other threads run.
const DETACH_FROM_BYTES: usize = 4 * 1024;

/// Routes requests across a config's model groups; safe to share across threads.
#[pyclass(frozen, name = "Router", module = "router_core")]
pub struct PyRouter(Router);

#[pymethods]
impl PyRouter {
    /// `manual_clock`: time stands still until `advance_clock` (for tests).
    /// `without`: deployment ids to leave out, with whatever names only them
    /// (see `describe_config`). `shared_state`: the path of a region (created
    /// if missing) that holds the router's state for every process opening it.
    #[new]
    #[pyo3(signature = (config_json, *, manual_clock = false, without = Vec::new(), shared_state = None))]
    #[pyo3(text_signature = "(config_json, *, manual_clock=False, without=(), shared_state=None)")]
    fn new(
        py: Python<'_>,
        config_json: &str,
        manual_clock: bool,
        without: Vec<String>,
        shared_state: Option<PathBuf>,
    ) -> PyResult<Self> {
        let (config, _) = config::parse(py, config_json, &without)?;
        let region = match shared_state {
            Some(path) => Some(Arc::new(Region::open(&path)?)),
            None => None,
        };
        let clock = match (manual_clock, &region) {
            (true, _) => Clock::manual(),
            // Shared levels are timed by every process: one clock for the host.
            (false, Some(_)) => Clock::Host,
            (false, None) => Clock::default(),
        };
        Ok(PyRouter(Router::sharing(&config, clock, region)))
    }

    /// Moves a manual clock forward; a ValueError on the real one.
    fn advance_clock(&self, seconds: f64) -> PyResult<()> {
        let by = Duration::try_from_secs_f64(seconds)
            .map_err(|e| PyValueError::new_err(format!("seconds: {e}")))?;
        if self.0.clock().advance(by) {
            Ok(())
        } else {
            Err(PyValueError::new_err(
                "advance_clock needs a Router built with manual_clock=True",
            ))
        }
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
        preference = None, seed = None, dry_run = false,
    ))]
    // pyo3 renders `Vec::new()` defaults as `...`; show the Python equivalent.
    #[pyo3(
        text_signature = "($self, model, *, input_tokens=0, max_output_tokens=0, capabilities=(), \
                             regions=(), tenant='', api_key='', task='', tags=(), metadata=None, \
                             max_cost_usd=None, latency_target_ms=None, affinity_key='', \
                             preference=None, seed=None, dry_run=False)"
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
        preference: Option<&str>,
        seed: Option<u64>,
        dry_run: bool,
    ) -> PyResult<PyDecision> {
        let preference = match preference {
            None => None,
            Some("cost") => Some(Preference::Cost),
            Some("latency") => Some(Preference::Latency),
            Some(other) => {
                return Err(PyValueError::new_err(format!(
                    "preference must be \"cost\", \"latency\" or None, got {other:?}"
                )))
            }
        };
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
            preference,
            seed,
            dry_run,
        };
        let decision = self.0.decide(&request).map_err(|e| to_py_err(py, e))?;
        PyDecision::new(py, decision)
    }

    /// A lease on `deployment` for a fallback attempt. `tokens`: the estimate,
    /// input plus max output; `input_tokens`: its input part, if known, which
    /// is reserved as the deployment counts it (calibrated) and which the
    /// outcome's reported input then calibrates. Raises DeploymentUnavailableError
    /// when it is out of rotation or a budget is spent, UnknownDeploymentError if unknown.
    #[pyo3(signature = (deployment, *, tokens = 0, input_tokens = 0, tenant = "", api_key = ""))]
    fn reserve(
        &self,
        py: Python<'_>,
        deployment: &str,
        tokens: u32,
        input_tokens: u32,
        tenant: &str,
        api_key: &str,
    ) -> PyResult<PyLease> {
        let input_tokens = input_tokens.min(tokens);
        self.0
            .reserve(
                deployment,
                tenant,
                api_key,
                input_tokens,
                tokens - input_tokens,
            )
            .map(PyLease::new)
            .map_err(|e| to_py_err(py, e))
    }

    /// A lease on `deployment` for a shadow call, the gateway's own copy of a
    /// request (`Decision.shadow`): only the deployment's budget is reserved
    /// (`tokens`, as `reserve`), and it is refused while that budget is within
    /// the share kept for callers (one `priority_reserve` more than the lowest
    /// priority leaves) or while a half-open breaker waits for a caller's probe.
    /// Raises DeploymentUnavailableError or UnknownDeploymentError.
    #[pyo3(signature = (deployment, *, tokens = 0, input_tokens = 0))]
    fn reserve_shadow(
        &self,
        py: Python<'_>,
        deployment: &str,
        tokens: u32,
        input_tokens: u32,
    ) -> PyResult<PyLease> {
        let input_tokens = input_tokens.min(tokens);
        self.0
            .reserve_shadow(deployment, input_tokens, tokens - input_tokens)
            .map(PyLease::new)
            .map_err(|e| to_py_err(py, e))
    }

    /// Settles a lease with its attempt's outcome. `outcome` is a class name:
    /// ok, rate_limited, overloaded, server_error, timeout, connection_error,
    /// context_window_exceeded, content_filtered, auth_error, bad_request or
    /// protocol_error. A lease settles once; later calls raise ValueError.
    /// Returns what the tokens used cost, in USD.
    #[pyo3(signature = (
        lease, *, outcome, latency_ms, ttft_ms = None, input_tokens = 0, output_tokens = 0,
        retry_after_s = None,
    ))]
    #[allow(clippy::too_many_arguments)] // mirrors the Python keyword arguments
    fn record(
        &self,
        py: Python<'_>,
        lease: &PyLease,
        outcome: &str,
        latency_ms: f64,
        ttft_ms: Option<f64>,
        input_tokens: u32,
        output_tokens: u32,
        retry_after_s: Option<f64>,
    ) -> PyResult<f64> {
        let class = outcome
            .parse::<OutcomeClass>()
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        let retry_after = retry_after_s
            .map(|s| {
                Duration::try_from_secs_f64(s)
                    .map_err(|e| PyValueError::new_err(format!("retry_after_s: {e}")))
            })
            .transpose()?;
        let outcome = Outcome {
            class,
            latency_ms,
            ttft_ms,
            input_tokens,
            output_tokens,
            retry_after,
        };
        self.0
            .record(lease.take()?, &outcome)
            .map_err(|e| to_py_err(py, e))
    }

    /// Gives back a lease whose attempt produced no outcome (abandoned or
    /// cancelled); its budget returns in full. Releasing twice is a no-op.
    fn release(&self, lease: &PyLease) {
        if let Ok(lease) = lease.take() {
            self.0.release(lease);
        }
    }

    /// Seconds until the deployment's rate-limit cool-down (a provider's 429)
    /// ends, or None when it is not cooling down. UnknownDeploymentError if unknown.
    fn cooling_down_for_s(&self, py: Python<'_>, deployment: &str) -> PyResult<Option<f64>> {
        self.0
            .cooling_down_for(deployment)
            .map(|wait| wait.map(|d| d.as_secs_f64()))
            .map_err(|e| to_py_err(py, e))
    }

    /// The deployment's tail estimate in ms (mean + 2 deviations) of its time
    /// to first token when `first_token`, else of its whole latency; None
    /// before its first measured success. UnknownDeploymentError if unknown.
    #[pyo3(signature = (deployment, *, first_token))]
    fn latency_tail_ms(
        &self,
        py: Python<'_>,
        deployment: &str,
        first_token: bool,
    ) -> PyResult<Option<f64>> {
        self.0
            .latency_tail_ms(deployment, first_token)
            .map_err(|e| to_py_err(py, e))
    }

    /// Takes the deployment out of rotation (`drained=True`) or puts it back; it
    /// holds across reloads and for every process sharing the router's region.
    /// UnknownDeploymentError if unknown.
    #[pyo3(signature = (deployment, drained))]
    fn set_drained(&self, py: Python<'_>, deployment: &str, drained: bool) -> PyResult<()> {
        self.0
            .set_drained(deployment, drained)
            .map_err(|e| to_py_err(py, e))
    }

    /// One snapshot per deployment of the current config, in config order.
    fn stats(&self) -> Vec<PyDeploymentStats> {
        self.0
            .stats()
            .into_iter()
            .map(PyDeploymentStats::from)
            .collect()
    }

    /// Reserves `amount_usd` on the budget of every one of `owners`, each
    /// (key, daily_usd, monthly_usd, total_usd) with None for no bound, or on
    /// none: a BudgetHold, or the BudgetRefusal naming the first budget with
    /// too little left. `now_s`: seconds since the epoch (default now).
    #[pyo3(signature = (owners, amount_usd, *, now_s = None))]
    fn reserve_budget(
        &self,
        py: Python<'_>,
        owners: Vec<budget::Owner>,
        amount_usd: f64,
        now_s: Option<f64>,
    ) -> PyResult<Py<PyAny>> {
        let named: Vec<(&str, crate::BudgetSpec)> = owners
            .iter()
            .map(|owner| (owner.0.as_str(), budget::spec(owner)))
            .collect();
        let now_s = now_s.unwrap_or_else(budget::unix_now);
        Ok(match self.0.reserve_budgets(&named, amount_usd, now_s) {
            Ok(hold) => Py::new(py, PyBudgetHold::new(hold))?.into_any(),
            Err(refused) => Py::new(py, PyBudgetRefusal::from(refused))?.into_any(),
        })
    }

    /// What `input_tokens` and `output_tokens` cost on `deployment` at its
    /// current prices, in USD (the formula leases settle with).
    /// UnknownDeploymentError if unknown.
    #[pyo3(signature = (deployment, input_tokens, output_tokens))]
    fn cost_usd(
        &self,
        py: Python<'_>,
        deployment: &str,
        input_tokens: u32,
        output_tokens: u32,
    ) -> PyResult<f64> {
        self.0
            .cost_usd(deployment, input_tokens, output_tokens)
            .map_err(|e| to_py_err(py, e))
    }

    /// Counts at least `spent_usd` (the day's, the month's, in all, in USD)
    /// as `owner`'s spending (owner as for `reserve_budget`): what a ledger
    /// recorded before this router began.
    #[pyo3(signature = (owner, spent_usd, *, now_s = None))]
    fn seed_budget(&self, owner: budget::Owner, spent_usd: (f64, f64, f64), now_s: Option<f64>) {
        let now_s = now_s.unwrap_or_else(budget::unix_now);
        self.0
            .seed_budget(&owner.0, budget::spec(&owner), spent_usd, now_s);
    }

    /// Whether reservations also need this host's allowance of each budget,
    /// drawn from a pool the hosts of a cluster share (`grant_dollars`).
    fn set_budgets_pooled(&self, pooled: bool) {
        self.0.set_budgets_pooled(pooled);
    }

    /// Adds `nanos` (nano-USD), drawn from the pool for `day` of `month`
    /// (numbered as PooledBudget's), to this host's allowance of `owner`'s
    /// budget; the pool had `pool_left_nanos` left beside it, bound by
    /// `period` ("daily", "monthly" or "total"). False for an unknown owner.
    #[pyo3(signature = (owner, nanos, day, month, pool_left_nanos, period))]
    fn grant_dollars(
        &self,
        owner: &str,
        nanos: i64,
        day: u32,
        month: u32,
        pool_left_nanos: i64,
        period: &str,
    ) -> PyResult<bool> {
        let period = crate::Period::named(period).ok_or_else(|| {
            pyo3::exceptions::PyValueError::new_err(format!("unknown period {period:?}"))
        })?;
        let when = crate::When { day, month };
        Ok(self
            .0
            .grant_dollars(owner, nanos, when, pool_left_nanos, period))
    }

    /// Takes out of this host's allowance of `owner`'s budget what goes back
    /// to the pool: what belongs to a day that is over, what is above
    /// `keep_nanos`, and any debt (negative). Each as (nanos, day, month it
    /// was drawn for); empty when nothing goes back.
    #[pyo3(signature = (owner, keep_nanos, *, now_s = None))]
    fn take_back_dollars(
        &self,
        owner: &str,
        keep_nanos: i64,
        now_s: Option<f64>,
    ) -> Vec<(i64, u32, u32)> {
        let now_s = now_s.unwrap_or_else(budget::unix_now);
        self.0.take_back_dollars(owner, keep_nanos, now_s)
    }

    /// `owner`'s budget as this host sees it (PooledBudget), or None.
    #[pyo3(signature = (owner, *, now_s = None))]
    fn pooled_budget(&self, owner: &str, now_s: Option<f64>) -> Option<PyPooledBudget> {
        let now_s = now_s.unwrap_or_else(budget::unix_now);
        self.0
            .pooled_budget(owner, now_s)
            .map(|view| PyPooledBudget::new(owner.to_owned(), view))
    }

    /// What `owner` spent (reservations included) in the day, the month and in
    /// all, in USD; None before its first reservation in this router.
    #[pyo3(signature = (owner, *, now_s = None))]
    fn budget_spent(&self, owner: &str, now_s: Option<f64>) -> Option<(f64, f64, f64)> {
        self.0
            .budget_spent(owner, now_s.unwrap_or_else(budget::unix_now))
    }

    /// Every deployment's attempts as distributions, in config order.
    fn measures(&self, py: Python<'_>) -> PyResult<Vec<PyDeploymentMeasures>> {
        let measures = self.0.measures();
        measures
            .into_iter()
            .map(|m| PyDeploymentMeasures::new(py, m))
            .collect()
    }

    /// Counts one call to `method` (one of `CALL_METHODS`) that ended with
    /// gRPC status code `status` after `duration_s`, and the retries,
    /// fallbacks and hedges it took, under `model_group`; a name that is no
    /// group of the config counts as "" (reaching none). ValueError for an
    /// unknown method, status or a bad duration.
    #[pyo3(signature = (model_group, method, status, duration_s, *, retries = 0, fallbacks = 0, hedges = 0))]
    #[allow(clippy::too_many_arguments)] // mirrors the Python keyword arguments
    fn record_call(
        &self,
        py: Python<'_>,
        model_group: &str,
        method: &str,
        status: u8,
        duration_s: f64,
        retries: u32,
        fallbacks: u32,
        hedges: u32,
    ) -> PyResult<()> {
        let extra = Extra {
            retries,
            fallbacks,
            hedges,
        };
        self.0
            .record_call(model_group, method, status, duration_s, extra)
            .map_err(|e| to_py_err(py, e))
    }

    /// Calls per model group and method, for those with any, in config
    /// order; those that reached no group last, as group "".
    fn call_measures(&self, py: Python<'_>) -> PyResult<Vec<PyCallMeasures>> {
        let measures = self.0.call_measures();
        measures
            .into_iter()
            .map(|m| PyCallMeasures::new(py, m))
            .collect()
    }

    /// Swaps in a new config atomically, keeping stats of surviving deployment
    /// ids; `without` as for the constructor. On error the current one stays.
    #[pyo3(signature = (config_json, *, without = Vec::new()))]
    #[pyo3(text_signature = "($self, config_json, *, without=())")]
    fn reload(&self, py: Python<'_>, config_json: &str, without: Vec<String>) -> PyResult<()> {
        let (config, _) = config::parse(py, config_json, &without)?;
        self.0.reload_config(&config);
        Ok(())
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

    /// From now on every rate limit refills itself at `share` (0..1) of its
    /// rate, up to that share of its capacity. At 0 a cluster link feeds
    /// them with `grant`, and what each bucket held is dropped.
    fn set_refill_share(&self, share: f64) -> PyResult<()> {
        if !(0.0..=1.0).contains(&share) {
            return Err(PyValueError::new_err(format!(
                "share must be within [0, 1], not {share}"
            )));
        }
        self.0.set_refill_share(share);
        Ok(())
    }

    #[getter]
    fn refill_share(&self) -> f64 {
        self.0.refill_share()
    }

    /// Every rate-limit bucket as (key, kind, per_minute, level): key is
    /// `deployment/<id>`, `tenant/<name>` or `api_key/<name>`, kind
    /// `requests` or `tokens`, level what it holds now (negative in debt).
    fn budgets(&self) -> Vec<(String, &'static str, u32, f64)> {
        self.0.budgets().into_iter().map(cluster::budget).collect()
    }

    /// Adds up to `amount` to a bucket (as `budgets` names it) and returns
    /// how much it took; 0 for a key the config no longer has.
    fn grant(&self, key: &str, kind: &str, amount: u32) -> PyResult<u32> {
        Ok(self.0.grant(key, cluster::kind(kind)?, amount))
    }

    /// Empties a bucket and returns the whole requests or tokens it held.
    fn take_back(&self, key: &str, kind: &str) -> PyResult<u32> {
        Ok(self.0.take_back(key, cluster::kind(kind)?))
    }

    /// What changed in the deployments' own health since the last call, as
    /// (deployment, kind, seconds): `circuit_open` and `cooling_down` for
    /// how long to keep it out, `circuit_closed` (0 s) to let it back in.
    fn health_news(&self) -> Vec<(String, &'static str, f64)> {
        self.0
            .health_news()
            .into_iter()
            .map(cluster::news_tuple)
            .collect()
    }

    /// Makes the next `health_news` tell again every circuit still open and
    /// every cool-down still running (news may have been lost).
    fn retell_health(&self) {
        self.0.retell_health();
    }

    /// Applies another host's news of a deployment (as `health_news` gives
    /// it); False when this router has no such deployment.
    fn hear(&self, deployment: &str, kind: &str, seconds: f64) -> PyResult<bool> {
        Ok(self.0.hear(deployment, cluster::news(kind, seconds)?))
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

/// Budget and an in-flight slot held for one attempt. `Router.record` settles
/// it, `Router.release` gives it back, once; collected unsettled, it gives
/// itself back.
#[pyclass(frozen, name = "Lease", module = "router_core")]
pub struct PyLease {
    #[pyo3(get)]
    deployment: String,
    #[pyo3(get)]
    tokens: u32,
    #[pyo3(get)]
    is_probe: bool,
    /// Taken by the first record or release.
    lease: Mutex<Option<Lease>>,
}

impl PyLease {
    fn new(lease: Lease) -> Self {
        PyLease {
            deployment: lease.deployment().to_owned(),
            tokens: lease.tokens(),
            is_probe: lease.is_probe(),
            lease: Mutex::new(Some(lease)),
        }
    }

    fn take(&self) -> PyResult<Lease> {
        self.lease
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .ok_or_else(|| PyValueError::new_err("this lease was already recorded or released"))
    }
}

#[pymethods]
impl PyLease {
    /// False once recorded or released.
    #[getter]
    fn active(&self) -> bool {
        self.lease
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    fn __repr__(&self) -> String {
        format!(
            "Lease(deployment={:?}, tokens={}, is_probe={}, active={})",
            self.deployment,
            self.tokens,
            if self.is_probe { "True" } else { "False" },
            if self.active() { "True" } else { "False" },
        )
    }
}
