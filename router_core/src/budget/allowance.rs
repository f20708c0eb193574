//! A host's allowance from a budget it shares with other hosts: dollars it
//! drew from the cluster's pool (kept elsewhere, in Redis) and may reserve
//! without asking. While a router pools its budgets, a reservation needs the
//! allowance as well as room in the budget's own periods; what the host
//! spends comes out of the allowance, and a settlement puts back what the
//! estimate overstated (or takes what it understated: the allowance may go
//! below zero, a debt the host draws to cover).
//!
//! An allowance is drawn for one day of one month and is good for that day
//! only: the day after, what is left of it is given back to the pool, which
//! no longer counts it against the new day.

use super::{Period, When};

/// What a host holds of an owner's pooled budget.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Allowance {
    nanos: i64,
    day: u32,
    month: u32,
    /// What the pool had left beside this allowance when last heard from.
    pool_left: i64,
    /// The period that bound `pool_left` (`Period` as a number).
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

    pub(crate) fn spend(&mut self, nanos: i64) {
        self.nanos = self.nanos.saturating_sub(nanos);
    }

    /// What the pool had left besides this allowance, and the period that bound it.
    pub(crate) fn pool(&self) -> (i64, Period) {
        (self.pool_left.max(0), period_of(self.pool_period))
    }

    /// Adds `nanos` drawn from the pool for `when`'s day, when the pool had
    /// `pool_left` left beside it. What is held for another day is dropped:
    /// the caller takes it back first (`take_back`).
    pub(crate) fn grant(&mut self, nanos: i64, when: When, pool_left: i64, period: Period) {
        if !self.drawn_in(when) {
            self.nanos = 0;
            self.day = when.day;
            self.month = when.month;
        }
        self.nanos = self.nanos.saturating_add(nanos);
        self.pool_left = pool_left;
        self.pool_period = period as u32;
    }

    /// Takes out what is to go back to the pool: all of an allowance for a
    /// day that is over, else what is above `keep`; and any debt (negative).
    /// Returns the amount with the day and month it was drawn for.
    pub(crate) fn take_back(&mut self, keep: i64, when: When) -> Option<(i64, u32, u32)> {
        let taken = if !self.drawn_in(when) || self.nanos < 0 {
            self.nanos
        } else {
            (self.nanos - keep.max(0)).max(0)
        };
        if taken == 0 {
            return None;
        }
        self.nanos -= taken;
        Some((taken, self.day, self.month))
    }

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
