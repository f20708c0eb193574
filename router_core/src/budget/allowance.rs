//! A host's allowance from a budget it shares with other hosts: dollars it
//! drew from the cluster's pool (kept elsewhere, in Redis) and may reserve
//! without asking. While a router pools its budgets, a reservation needs the
//! allowance as well as room in the budget's own periods; what the host
//! spends comes out of the allowance, and a settlement puts back what the
//! estimate overstated (or takes what it understated: the allowance may go
//! below zero, a debt the host draws to cover).
//!
//! An allowance is drawn for one day of one month and is good for that day
//! only. What belongs to a day that is over (what was left of its
//! allowance, and what a call reserved then settles for after it) is kept
//! apart as stale, to go back to the pool for that day, which no longer
//! counts it against the new one.

use super::{Period, When};

/// What a host holds of an owner's pooled budget.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Allowance {
    nanos: i64,
    day: u32,
    month: u32,
    /// What belongs to an earlier day (`stale_day` of `stale_month`).
    stale: i64,
    stale_day: u32,
    stale_month: u32,
    /// What the pool had left beside this allowance when last heard from.
    pool_left: i64,
    /// The period that bound `pool_left`, plus one (`Period` as a number);
    /// 0 until the pool was heard from.
    pool_period: u32,
    _pad: u32,
}

impl Allowance {
    /// What may be reserved now: nothing once the day it was drawn for is over.
    pub(crate) fn usable(&self, when: When) -> i64 {
        if self.drawn_in(when) {
            self.nanos.max(0)
        } else {
            0
        }
    }

    fn drawn_in(&self, when: When) -> bool {
        self.day == when.day && self.month == when.month
    }

    /// Takes `nanos` (given back when negative) for a call reserved on
    /// `reserved`'s day: out of an allowance drawn then, else out of what is
    /// stale.
    pub(crate) fn spend(&mut self, nanos: i64, reserved: When) {
        if self.drawn_in(reserved) {
            self.nanos = self.nanos.saturating_sub(nanos);
        } else {
            self.make_stale(-nanos, reserved);
        }
    }

    fn make_stale(&mut self, nanos: i64, when: When) {
        if self.stale == 0 {
            self.stale_day = when.day;
            self.stale_month = when.month;
        }
        self.stale = self.stale.saturating_add(nanos);
    }

    /// What the pool had left besides this allowance, and the period that
    /// bound it (None until heard from).
    pub(crate) fn pool(&self) -> (i64, Option<Period>) {
        let period = self.pool_period.checked_sub(1).map(period_of);
        (self.pool_left.max(0), period)
    }

    /// Adds `nanos` drawn from the pool for `when`'s day, when the pool had
    /// `pool_left` left beside it. What is held for another day becomes stale.
    pub(crate) fn grant(&mut self, nanos: i64, when: When, pool_left: i64, period: Period) {
        if !self.drawn_in(when) {
            let (held, held_when) = (
                self.nanos,
                When {
                    day: self.day,
                    month: self.month,
                },
            );
            self.make_stale(held, held_when);
            self.nanos = 0;
            self.day = when.day;
            self.month = when.month;
        }
        self.nanos = self.nanos.saturating_add(nanos);
        self.pool_left = pool_left;
        self.pool_period = period as u32 + 1;
    }

    /// Takes out what is to go back to the pool, each with the day and month
    /// it was drawn for: what is stale; all of an allowance for a day that is
    /// over, else what is above `keep`; and any debt (negative).
    pub(crate) fn take_back(&mut self, keep: i64, when: When) -> Vec<(i64, u32, u32)> {
        let mut back = Vec::new();
        if self.stale != 0 {
            back.push((self.stale, self.stale_day, self.stale_month));
            self.stale = 0;
        }
        let taken = if !self.drawn_in(when) || self.nanos < 0 {
            self.nanos
        } else {
            (self.nanos - keep.max(0)).max(0)
        };
        if taken != 0 {
            self.nanos -= taken;
            back.push((taken, self.day, self.month));
        }
        back
    }

    /// What this host holds (negative: owes) for which day and month.
    pub(crate) fn held(&self) -> (i64, u32, u32) {
        (self.nanos, self.day, self.month)
    }
}

pub(crate) fn period_of(number: u32) -> Period {
    match number {
        0 => Period::Day,
        1 => Period::Month,
        _ => Period::Total,
    }
}
