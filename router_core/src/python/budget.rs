//! Budgets in dollars through Python: a hold to settle, or the refusal that
//! says which budget and period had too little left.

use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use pyo3::prelude::*;

use crate::{BudgetSpec, Hold, Overspent, PooledView};

/// Dollars reserved for one call on its owners' budgets. `settle` with what
/// the call cost; `release` (or letting it go) gives the reservation back.
#[pyclass(frozen, name = "BudgetHold", module = "router_core")]
pub struct PyBudgetHold(Mutex<Option<Hold>>);

impl PyBudgetHold {
    pub(crate) fn new(hold: Hold) -> Self {
        PyBudgetHold(Mutex::new(Some(hold)))
    }

    fn take(&self) -> Option<Hold> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

#[pymethods]
impl PyBudgetHold {
    /// What was reserved, in USD (0 once settled or released).
    #[getter]
    fn reserved_usd(&self) -> f64 {
        let hold = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        hold.as_ref().map_or(0.0, Hold::reserved_usd)
    }

    /// Replaces the reservation with `actual_usd`; a no-op once settled or released.
    #[pyo3(signature = (actual_usd, *, now_s = None))]
    fn settle(&self, actual_usd: f64, now_s: Option<f64>) {
        if let Some(hold) = self.take() {
            hold.settle(actual_usd, now_s.unwrap_or_else(unix_now));
        }
    }

    /// Gives the reservation back (the call spent nothing); a no-op once settled.
    fn release(&self) {
        drop(self.take());
    }
}

/// Why a reservation was refused: `owners[owner_index]`'s `period` budget
/// ("daily", "monthly" or "total") of `limit_usd` had only `left_usd` left;
/// it starts again at `resets_at_s` (seconds since the epoch; None for the total).
#[pyclass(frozen, get_all, name = "BudgetRefusal", module = "router_core")]
pub struct PyBudgetRefusal {
    owner_index: usize,
    period: &'static str,
    limit_usd: f64,
    left_usd: f64,
    asked_usd: f64,
    resets_at_s: Option<f64>,
    /// For want of this host's allowance from a pooled budget: a fresh draw
    /// from the pool may admit it.
    pooled: bool,
}

impl From<Overspent> for PyBudgetRefusal {
    fn from(o: Overspent) -> Self {
        PyBudgetRefusal {
            owner_index: o.owner_index,
            period: o.period.as_str(),
            limit_usd: o.limit_usd,
            left_usd: o.left_usd,
            asked_usd: o.asked_usd,
            resets_at_s: o.resets_at_s,
            pooled: o.pooled,
        }
    }
}

#[pymethods]
impl PyBudgetRefusal {
    fn __repr__(&self) -> String {
        format!(
            "BudgetRefusal(owner_index={}, period={:?}, limit_usd={:?}, left_usd={:?}, asked_usd={:?})",
            self.owner_index, self.period, self.limit_usd, self.left_usd, self.asked_usd
        )
    }
}

/// An owner as Python names it: (key, daily_usd, monthly_usd, total_usd).
pub(crate) type Owner = (String, Option<f64>, Option<f64>, Option<f64>);

pub(crate) fn spec((_, daily_usd, monthly_usd, total_usd): &Owner) -> BudgetSpec {
    BudgetSpec {
        daily_usd: *daily_usd,
        monthly_usd: *monthly_usd,
        total_usd: *total_usd,
    }
}

pub(crate) fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// One owner's budget as this host sees it, for the link that pools it with
/// other hosts': its bounds in USD (None: unbounded), the day and month it
/// is now (numbered from the epoch), what this host counts as spent in them
/// and in all (nano-USD), and the allowance it holds of the pool (nano-USD,
/// negative when it owes) with the day and month it was drawn for.
#[pyclass(frozen, get_all, name = "PooledBudget", module = "router_core")]
pub struct PyPooledBudget {
    owner: String,
    daily_usd: Option<f64>,
    monthly_usd: Option<f64>,
    total_usd: Option<f64>,
    day: u32,
    month: u32,
    spent_nanos: (i64, i64, i64),
    allowance_nanos: i64,
    allowance_day: u32,
    allowance_month: u32,
}

impl PyPooledBudget {
    pub(crate) fn new(owner: String, view: PooledView) -> Self {
        PyPooledBudget {
            owner,
            daily_usd: view.spec.daily_usd,
            monthly_usd: view.spec.monthly_usd,
            total_usd: view.spec.total_usd,
            day: view.when.day,
            month: view.when.month,
            spent_nanos: view.spent_nanos,
            allowance_nanos: view.allowance_nanos,
            allowance_day: view.allowance_when.day,
            allowance_month: view.allowance_when.month,
        }
    }
}

#[pymethods]
impl PyPooledBudget {
    fn __repr__(&self) -> String {
        format!(
            "PooledBudget(owner={:?}, allowance_nanos={})",
            self.owner, self.allowance_nanos
        )
    }
}
