//! Owners' budgets in dollars (see `budget`): reserved for a call's estimated
//! cost before it starts, settled with its actual cost. The caller names the
//! owners and their specs (a tenant's from the config, a key's from the
//! store); the router keeps their spending, in the host's region when it has one.

use crate::budget::{reserve, BudgetSpec, Hold, Overspent, Period, PooledView, When};
use crate::error::RouterError;

use super::Router;

impl Router {
    /// Reserves `amount_usd` on the budget of every one of `owners` (keys such
    /// as `tenant/acme`, each with its spec), or on none.
    pub fn reserve_budgets(
        &self,
        owners: &[(&str, BudgetSpec)],
        amount_usd: f64,
        now_s: f64,
    ) -> Result<Hold, Overspent> {
        let budgets: Vec<_> = owners
            .iter()
            .map(|(key, spec)| self.budgets.get(self.region.as_ref(), key, *spec))
            .collect();
        reserve(&budgets, amount_usd, now_s, self.budgets.pooled())
    }

    /// Whether reservations also need this host's allowance from a pool the
    /// hosts of a cluster share (fed by `grant_dollars`); off by default.
    pub fn set_budgets_pooled(&self, pooled: bool) {
        self.budgets.set_pooled(pooled);
    }

    /// Adds `nanos`, drawn from the pool for `when`'s day, to this host's
    /// allowance of `owner`'s budget (see `DollarBudget::grant`); false when
    /// the router has no such budget.
    pub fn grant_dollars(
        &self,
        owner: &str,
        nanos: i64,
        when: When,
        pool_left: i64,
        period: Period,
    ) -> bool {
        let Some(budget) = self.budgets.find(owner) else {
            return false;
        };
        budget.grant(nanos, when, pool_left, period);
        true
    }

    /// What this host's allowance of `owner`'s budget gives back to the pool
    /// (see `DollarBudget::take_back`).
    pub fn take_back_dollars(
        &self,
        owner: &str,
        keep_nanos: i64,
        now_s: f64,
    ) -> Vec<(i64, u32, u32)> {
        self.budgets
            .find(owner)
            .map_or_else(Vec::new, |budget| budget.take_back(keep_nanos, now_s))
    }

    /// `owner`'s budget as this host sees it, if it has one.
    pub fn pooled_budget(&self, owner: &str, now_s: f64) -> Option<PooledView> {
        Some(self.budgets.find(owner)?.pooled_view(now_s))
    }

    /// Counts at least `spent_usd` (the day's, the month's, in all) as
    /// `owner`'s spending: what a ledger recorded before this router began.
    pub fn seed_budget(
        &self,
        owner: &str,
        spec: BudgetSpec,
        spent_usd: (f64, f64, f64),
        now_s: f64,
    ) {
        self.budgets
            .get(self.region.as_ref(), owner, spec)
            .seed(spent_usd, now_s);
    }

    /// What `input_tokens` and `output_tokens` cost on `deployment` at its
    /// current prices, in USD: a call's estimate, by the formula its lease settles with.
    pub fn cost_usd(
        &self,
        deployment: &str,
        input_tokens: u32,
        output_tokens: u32,
    ) -> Result<f64, RouterError> {
        let table = self.table.load();
        let found = table
            .deployment(deployment)
            .ok_or_else(|| RouterError::UnknownDeployment(deployment.to_owned()))?;
        Ok(found.cost_usd(input_tokens, output_tokens))
    }

    /// What `owner` spent (reservations included) in the day, the month and
    /// in all, in USD; None before its first reservation here.
    pub fn budget_spent(&self, owner: &str, now_s: f64) -> Option<(f64, f64, f64)> {
        self.budgets.spent(owner, now_s)
    }
}
