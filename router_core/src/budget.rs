//! Budgets in US dollars: what an owner (a tenant, an API key) may spend in a
//! UTC day, a calendar month (UTC) and in all. A call reserves its estimated
//! cost on every budget it falls under, all or none, before it starts; its
//! actual cost settles the reservation when it ends (a call that spent
//! nothing gives it back). What is reserved counts as spent meanwhile, so
//! concurrent calls cannot overdraw together.
//!
//! A budget lives in this process or in a slot of the host's region, like a
//! rate limit, so the workers of a host spend one budget. Amounts are kept in
//! nano-dollars; a period's spending starts again at zero when a reservation
//! or a settlement finds the period over.
//!
//! Hosts that share budgets pool them (`Budgets::set_pooled`): each host then
//! also needs an allowance drawn from the cluster's pool (`allowance`).

mod allowance;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::state::{Held, Payload, Region};
use allowance::Allowance;

const NANOS_PER_USD: f64 = 1e9;
const SECONDS_PER_DAY: f64 = 86_400.0;

/// What an owner may spend; `None`: no bound in that period.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BudgetSpec {
    pub daily_usd: Option<f64>,
    pub monthly_usd: Option<f64>,
    pub total_usd: Option<f64>,
}

/// The periods a budget bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Day = 0,
    Month = 1,
    Total = 2,
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "daily",
            Period::Month => "monthly",
            Period::Total => "total",
        }
    }

    /// The period of its name (`as_str`).
    pub fn named(name: &str) -> Option<Period> {
        match name {
            "daily" => Some(Period::Day),
            "monthly" => Some(Period::Month),
            "total" => Some(Period::Total),
            _ => None,
        }
    }
}

impl BudgetSpec {
    /// Whether any period is bounded: an unbounded budget needs no allowance.
    fn bounded(&self) -> bool {
        self.first_bounded().is_some()
    }

    fn first_bounded(&self) -> Option<Period> {
        [Period::Day, Period::Month, Period::Total]
            .into_iter()
            .find(|p| self.limit(*p).is_some())
    }

    fn limit(&self, period: Period) -> Option<f64> {
        match period {
            Period::Day => self.daily_usd,
            Period::Month => self.monthly_usd,
            Period::Total => self.total_usd,
        }
    }
}

/// Why a reservation was refused: the first budget (in the order given) whose
/// period has too little left.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{} budget of {limit_usd} USD has {left_usd} USD left, not the {asked_usd} USD asked", period.as_str())]
pub struct Overspent {
    pub owner_index: usize,
    pub period: Period,
    pub limit_usd: f64,
    pub left_usd: f64,
    pub asked_usd: f64,
    /// When the period starts again (seconds since the epoch); None for the total.
    pub resets_at_s: Option<f64>,
    /// Refused for want of this host's allowance from a pooled budget: a
    /// fresh draw from the pool may yet admit it.
    pub pooled: bool,
}

/// A day and a month of the UTC calendar, numbered from the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct When {
    pub day: u32,
    pub month: u32,
}

impl When {
    pub fn at(unix_s: f64) -> When {
        let day = (unix_s.max(0.0) / SECONDS_PER_DAY) as u32;
        let (year, month, _) = civil(i64::from(day));
        When {
            day,
            month: ((year - 1970) * 12 + i64::from(month) - 1) as u32,
        }
    }

    /// When `period` next starts, in seconds since the epoch.
    fn next_start_s(self, period: Period) -> Option<f64> {
        match period {
            Period::Day => Some(f64::from(self.day + 1) * SECONDS_PER_DAY),
            Period::Month => {
                let next = i64::from(self.month) + 1;
                let days = days_from_civil(1970 + next / 12, (next % 12 + 1) as u32, 1);
                Some(days as f64 * SECONDS_PER_DAY)
            }
            Period::Total => None,
        }
    }
}

/// One owner's spending, reservations included.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Spent {
    day: u32,
    month: u32,
    daily: i64,
    monthly: i64,
    total: i64,
    allowance: Allowance,
}

// Safety: plain integers; all zero is nothing spent.
unsafe impl Payload for Spent {}

impl Spent {
    /// Spending of periods that are over starts again at zero.
    fn roll(&mut self, when: When) {
        if self.day != when.day {
            self.day = when.day;
            self.daily = 0;
        }
        if self.month != when.month {
            self.month = when.month;
            self.monthly = 0;
        }
    }

    fn add(&mut self, nanos: i64) {
        self.daily = self.daily.saturating_add(nanos).max(0);
        self.monthly = self.monthly.saturating_add(nanos).max(0);
        self.total = self.total.saturating_add(nanos).max(0);
    }

    fn of(&self, period: Period) -> i64 {
        match period {
            Period::Day => self.daily,
            Period::Month => self.monthly,
            Period::Total => self.total,
        }
    }
}

#[derive(Debug)]
enum Cell {
    Local(Mutex<Spent>),
    Shared { region: Arc<Region>, slot: usize },
}

/// One owner's budget.
#[derive(Debug)]
pub struct DollarBudget {
    spec: Mutex<BudgetSpec>,
    cell: Cell,
}

type Locked<'a> = Held<'a, Spent, Spent>;

impl DollarBudget {
    /// `key`'s budget in `region` when there is one with a slot left, else this process's own.
    pub(crate) fn at(region: Option<&Arc<Region>>, key: &str, spec: BudgetSpec) -> DollarBudget {
        let cell = match region
            .and_then(|region| Some((region, region.slot(&format!("budget/{key}"))?)))
        {
            Some((region, slot)) => Cell::Shared {
                region: Arc::clone(region),
                slot,
            },
            None => Cell::Local(Mutex::default()),
        };
        DollarBudget {
            spec: Mutex::new(spec),
            cell,
        }
    }

    fn spec(&self) -> BudgetSpec {
        *self.spec.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_spec(&self, spec: BudgetSpec) {
        *self.spec.lock().unwrap_or_else(PoisonError::into_inner) = spec;
    }

    fn lock(&self) -> Locked<'_> {
        match &self.cell {
            Cell::Local(spent) => Held::Local(spent.lock().unwrap_or_else(PoisonError::into_inner)),
            Cell::Shared { region, slot } => {
                let guard = region.locked::<Spent>(*slot);
                let value = guard.get();
                Held::Shared {
                    guard,
                    value,
                    store: |spent| *spent,
                }
            }
        }
    }

    fn order(&self) -> (u8, usize) {
        match &self.cell {
            Cell::Shared { slot, .. } => (0, *slot),
            Cell::Local(_) => (1, std::ptr::from_ref(self) as usize),
        }
    }

    /// Counts at least `spent_usd` (the day's, the month's, in all) as spent:
    /// what the ledger says was spent before this process began. Taking the
    /// larger, not the sum, lets every worker of a host seed the same budget.
    pub(crate) fn seed(&self, spent_usd: (f64, f64, f64), now_s: f64) {
        let mut spent = self.lock();
        spent.roll(When::at(now_s));
        spent.daily = spent.daily.max(to_nanos(spent_usd.0));
        spent.monthly = spent.monthly.max(to_nanos(spent_usd.1));
        spent.total = spent.total.max(to_nanos(spent_usd.2));
    }

    /// What was spent (reservations included) in the day, the month and in all, in USD.
    pub fn spent_usd(&self, now_s: f64) -> (f64, f64, f64) {
        let (daily, monthly, total) = self.spent_nanos(When::at(now_s));
        let usd = |nanos: i64| nanos as f64 / NANOS_PER_USD;
        (usd(daily), usd(monthly), usd(total))
    }

    fn spent_nanos(&self, when: When) -> (i64, i64, i64) {
        let mut spent = *self.lock();
        spent.roll(when);
        (spent.daily, spent.monthly, spent.total)
    }

    /// Adds `nanos` drawn from the pool for `when`'s day to this host's
    /// allowance; the pool had `pool_left` left beside it, bound by `period`.
    pub fn grant(&self, nanos: i64, when: When, pool_left: i64, period: Period) {
        self.lock().allowance.grant(nanos, when, pool_left, period);
    }

    /// What this host's allowance gives back to the pool (see
    /// `Allowance::take_back`): amounts, with the day and month drawn for.
    pub fn take_back(&self, keep_nanos: i64, now_s: f64) -> Vec<(i64, u32, u32)> {
        self.lock().allowance.take_back(keep_nanos, When::at(now_s))
    }

    /// This host's view of a pooled budget at `now_s`.
    pub fn pooled_view(&self, now_s: f64) -> PooledView {
        let when = When::at(now_s);
        let (allowance, allowance_day, allowance_month) = self.lock().allowance.held();
        PooledView {
            spec: self.spec(),
            when,
            spent_nanos: self.spent_nanos(when),
            allowance_nanos: allowance,
            allowance_when: When {
                day: allowance_day,
                month: allowance_month,
            },
        }
    }
}

/// What a host knows of one pooled budget, for the link that feeds it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PooledView {
    pub spec: BudgetSpec,
    /// The day and month it is now.
    pub when: When,
    /// What this host counts as spent (the day's, the month's, in all).
    pub spent_nanos: (i64, i64, i64),
    /// What this host holds of the pool (negative: owes it), and for which day.
    pub allowance_nanos: i64,
    pub allowance_when: When,
}

/// Dollars reserved on some budgets, until settled with what was spent.
/// Dropped unsettled, it gives the reservation back (the call spent nothing).
#[derive(Debug)]
pub struct Hold {
    /// Each budget, and whether the hold took from its allowance (which gets
    /// back what was not spent).
    budgets: Vec<(Arc<DollarBudget>, bool)>,
    nanos: i64,
    settled: bool,
    /// The day and month it was reserved on.
    reserved: When,
}

impl Hold {
    /// What was reserved, in USD.
    pub fn reserved_usd(&self) -> f64 {
        self.nanos as f64 / NANOS_PER_USD
    }

    /// Replaces the reservation with `actual_usd`, what the call cost.
    pub fn settle(mut self, actual_usd: f64, now_s: f64) {
        self.apply(to_nanos(actual_usd), now_s);
    }

    fn apply(&mut self, actual: i64, now_s: f64) {
        if std::mem::replace(&mut self.settled, true) {
            return;
        }
        let when = When::at(now_s);
        for (budget, pooled) in &self.budgets {
            let mut spent = budget.lock();
            // A period that ended meanwhile dropped the reservation with the rest.
            let same_day = spent.day == when.day;
            let same_month = spent.month == when.month;
            spent.roll(when);
            spent.daily = spent
                .daily
                .saturating_add(actual - if same_day { self.nanos } else { 0 })
                .max(0);
            spent.monthly = spent
                .monthly
                .saturating_add(actual - if same_month { self.nanos } else { 0 })
                .max(0);
            spent.total = spent.total.saturating_add(actual - self.nanos).max(0);
            if *pooled {
                spent.allowance.spend(actual - self.nanos, self.reserved);
            }
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let now_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.apply(0, now_s);
    }
}

/// Reserves `amount_usd` on every one of `budgets`, or on none: the first
/// whose period has less left than that is named. `pooled`: out of this
/// host's allowances as well (see `allowance`).
pub fn reserve(
    budgets: &[Arc<DollarBudget>],
    amount_usd: f64,
    now_s: f64,
    pooled: bool,
) -> Result<Hold, Overspent> {
    let nanos = to_nanos(amount_usd);
    let when = When::at(now_s);
    let mut order: Vec<usize> = (0..budgets.len()).collect();
    order.sort_by_key(|&i| budgets[i].order());
    let mut locked: Vec<(usize, Locked<'_>)> =
        order.into_iter().map(|i| (i, budgets[i].lock())).collect();
    locked.sort_by_key(|(i, _)| *i);
    for (index, spent) in &mut locked {
        spent.roll(when);
        let spec = budgets[*index].spec();
        for (period, limit) in [
            (Period::Day, spec.daily_usd),
            (Period::Month, spec.monthly_usd),
            (Period::Total, spec.total_usd),
        ] {
            let Some(limit_usd) = limit else { continue };
            let left = to_nanos(limit_usd) - spent.of(period);
            if nanos > left {
                return Err(Overspent {
                    owner_index: *index,
                    period,
                    limit_usd,
                    left_usd: left.max(0) as f64 / NANOS_PER_USD,
                    asked_usd: amount_usd,
                    resets_at_s: when.next_start_s(period),
                    pooled: false,
                });
            }
        }
        let usable = spent.allowance.usable(when);
        if pooled && spec.bounded() && nanos > usable {
            let (pool_left, heard) = spent.allowance.pool();
            let period = heard.or(spec.first_bounded()).unwrap_or(Period::Total);
            return Err(Overspent {
                owner_index: *index,
                period,
                limit_usd: spec.limit(period).unwrap_or(0.0),
                left_usd: (usable + pool_left) as f64 / NANOS_PER_USD,
                asked_usd: amount_usd,
                resets_at_s: when.next_start_s(period),
                pooled: true,
            });
        }
    }
    let mut held = Vec::with_capacity(budgets.len());
    for (index, spent) in &mut locked {
        let budget = &budgets[*index];
        let from_allowance = pooled && budget.spec().bounded();
        spent.add(nanos);
        if from_allowance {
            spent.allowance.spend(nanos, when);
        }
        held.push((Arc::clone(budget), from_allowance));
    }
    Ok(Hold {
        budgets: held,
        nanos,
        settled: false,
        reserved: when,
    })
}

/// The budgets of a router's owners, made on first use and kept (with their
/// spending) while the spec changes.
#[derive(Debug, Default)]
pub(crate) struct Budgets {
    owners: Mutex<HashMap<String, Arc<DollarBudget>>>,
    pooled: AtomicBool,
}

impl Budgets {
    /// Whether reservations need an allowance from the cluster's pool.
    pub(crate) fn set_pooled(&self, pooled: bool) {
        self.pooled.store(pooled, Ordering::Relaxed);
    }

    pub(crate) fn pooled(&self) -> bool {
        self.pooled.load(Ordering::Relaxed)
    }

    pub(crate) fn find(&self, key: &str) -> Option<Arc<DollarBudget>> {
        let owners = self.owners.lock().unwrap_or_else(PoisonError::into_inner);
        owners.get(key).cloned()
    }

    pub(crate) fn spent(&self, key: &str, now_s: f64) -> Option<(f64, f64, f64)> {
        let owners = self.owners.lock().unwrap_or_else(PoisonError::into_inner);
        owners.get(key).map(|budget| budget.spent_usd(now_s))
    }

    pub(crate) fn get(
        &self,
        region: Option<&Arc<Region>>,
        key: &str,
        spec: BudgetSpec,
    ) -> Arc<DollarBudget> {
        let mut owners = self.owners.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(budget) = owners.get(key) {
            if budget.spec() != spec {
                budget.set_spec(spec);
            }
            return Arc::clone(budget);
        }
        let budget = Arc::new(DollarBudget::at(region, key, spec));
        owners.insert(key.to_owned(), Arc::clone(&budget));
        budget
    }
}

fn to_nanos(usd: f64) -> i64 {
    // Saturating float-to-int: NaN is 0, and absurd amounts stop at the bounds.
    (usd.max(0.0) * NANOS_PER_USD).round() as i64
}

/// (year, month 1-12, day 1-31) of a day numbered from the epoch (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The day, numbered from the epoch, of a date of the civil calendar.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let month = i64::from(month);
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests;
