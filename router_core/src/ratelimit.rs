//! Requests-per-minute and tokens-per-minute token buckets, one [`Limit`] per
//! owner (deployment, tenant, API key). A request reserves on every limit that
//! applies in one all-or-nothing step, borrowing an estimate of its tokens,
//! then settles with the real usage or releases everything if abandoned.
//!
//! Levels are integers in units of 1/60e9 of a request or token, so a bucket of
//! `n` per minute refills exactly `n` units per nanosecond: accounting is exact
//! and refill never drifts, however often or rarely the buckets are touched.

use std::cmp::{self, Reverse};
use std::ptr;
use std::sync::{Arc, Mutex, PoisonError};

mod refill;

use serde::Deserialize;

use crate::clock::Nanos;
use crate::error::ConfigError;
use crate::state::{Held, Levels, Region};
use refill::Share;

pub use refill::{Budget, Refill};

/// Units per request or token: one per nanosecond of a minute (see module docs).
const UNITS: i128 = 60_000_000_000;

/// How much an owner may use per minute; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSpec {
    #[serde(default)]
    pub rpm: Option<u32>,
    #[serde(default)]
    pub tpm: Option<u32>,
}

impl LimitSpec {
    /// A limit of 0 would admit nothing, which is almost surely a typo for
    /// "no limit"; that is spelled by leaving the field out. `key` is where the
    /// spec sits in the config, e.g. `deployments[2].limits`.
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        for (field, value) in [("rpm", self.rpm), ("tpm", self.tpm)] {
            if value == Some(0) {
                return Err(ConfigError::OutOfRange {
                    key: format!("{key}.{field}"),
                    bound: "> 0 (leave it out for no limit)",
                    value: 0.0,
                });
            }
        }
        Ok(())
    }
}

/// The part of a bucket's capacity a reservation must leave in it, in
/// millionths: room kept for callers of higher priority.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Keep(pub u32);

impl Keep {
    pub const NONE: Keep = Keep(0);

    /// `share` (0 to 1) of a bucket's capacity.
    pub fn share(share: f64) -> Keep {
        Keep((share.clamp(0.0, 1.0) * 1e6).round() as u32)
    }

    fn of(self, capacity: i128) -> i128 {
        capacity * i128::from(self.0) / 1_000_000
    }
}

/// Which of an owner's two buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    Requests,
    Tokens,
}

impl std::fmt::Display for LimitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LimitKind::Requests => "requests-per-minute",
            LimitKind::Tokens => "tokens-per-minute",
        })
    }
}

/// Why `reserve` took nothing. `owner_index` is a position in the slice given to
/// `reserve`; when several limits fall short, the one that binds is named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// The same reservation succeeds at `retry_at` (and not a nanosecond
    /// sooner) if nothing else takes from these limits meanwhile.
    #[error("{kind} limit of owner {owner_index} is exhausted until {retry_at} ns")]
    Exhausted {
        owner_index: usize,
        kind: LimitKind,
        retry_at: Nanos,
    },
    /// The reservation is larger than the whole bucket: it can never succeed.
    #[error("{kind} limit of owner {owner_index} is {per_minute}, too small for this request ever to fit")]
    TooLarge {
        owner_index: usize,
        kind: LimitKind,
        per_minute: u32,
    },
}

impl Denied {
    /// Which of the limits given to `reserve` denied it.
    pub fn owner_index(&self) -> usize {
        match *self {
            Denied::Exhausted { owner_index, .. } | Denied::TooLarge { owner_index, .. } => {
                owner_index
            }
        }
    }
}

/// Proof of a successful `reserve`: the tokens it borrowed. It is neither
/// `Clone` nor `Copy`, so `settle` or `release` can consume it only once.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "settle or release the reservation, or its tokens stay borrowed"]
pub struct Reservation {
    tokens: u32,
}

impl Reservation {
    pub fn tokens(&self) -> u32 {
        self.tokens
    }
}

/// One owner's buckets. `Send + Sync`; each limit has its own mutex, held for
/// a few arithmetic operations, because exact accounting matters more here
/// than freedom from locks. The buckets live in this process, or in a slot of
/// a region that several processes share (see `state`).
#[derive(Debug)]
pub struct Limit {
    spec: LimitSpec,
    cell: Cell,
    refill: Arc<Refill>,
}

#[derive(Debug)]
enum Cell {
    Local(Mutex<State>),
    Shared { region: Arc<Region>, slot: usize },
}

#[derive(Debug, Clone, Copy)]
struct State {
    /// Both buckets are refilled up to this instant.
    refilled_at: Nanos,
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
}

/// `level` is in units (see [`UNITS`]) and stays within [-capacity, capacity].
/// It goes below zero only when `settle` takes more than was reserved.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    per_minute: u32,
    level: i128,
}

impl Limit {
    /// Both buckets start full and refill by themselves. A spec that fails
    /// `validate` still makes a well-defined limit: a bucket of 0 per minute
    /// admits nothing.
    pub fn new(spec: LimitSpec) -> Self {
        Limit::under(spec, &Arc::default())
    }

    /// A limit that refills as `refill` says (shared by every limit of a
    /// router); it starts empty while `refill` is fed from outside, since its
    /// budget then comes only in grants.
    pub fn under(spec: LimitSpec, refill: &Arc<Refill>) -> Self {
        Limit {
            spec,
            cell: Cell::Local(Mutex::new(State::fresh(spec, refill.is_fed()))),
            refill: Arc::clone(refill),
        }
    }

    /// A limit whose buckets are `key`'s slot of `region`, shared with every
    /// process that maps it; the buckets start as `under` starts them when no
    /// process used them yet, and keep their levels (clamped to this spec)
    /// when one did. None when the region has no slot left for `key`.
    pub fn shared(
        spec: LimitSpec,
        region: &Arc<Region>,
        key: &str,
        refill: &Arc<Refill>,
    ) -> Option<Self> {
        Some(Limit {
            spec,
            cell: Cell::Shared {
                region: Arc::clone(region),
                slot: region.slot(key)?,
            },
            refill: Arc::clone(refill),
        })
    }

    /// A limit under a new spec that keeps `old`'s levels (as of `now`), so a
    /// config reload neither refills an owner's buckets nor forgets its debt.
    /// Levels are clamped to the new capacities; a bucket that was unlimited
    /// starts full.
    pub fn with_state_of(spec: LimitSpec, old: &Limit, now: Nanos) -> Self {
        let mut locked = old.lock();
        locked.refill(now, old.refill.share());
        let carry = |per_minute: Option<u32>, old: Option<Bucket>| {
            per_minute.map(|n| {
                let mut bucket = Bucket::full(n);
                if let Some(old) = old {
                    bucket.level = old.level.clamp(-bucket.capacity(), bucket.capacity());
                }
                bucket
            })
        };
        Limit {
            spec,
            cell: Cell::Local(Mutex::new(State {
                refilled_at: locked.refilled_at,
                requests: carry(spec.rpm, locked.requests),
                tokens: carry(spec.tpm, locked.tokens),
            })),
            refill: Arc::clone(&old.refill),
        }
    }

    pub fn spec(&self) -> LimitSpec {
        self.spec
    }

    /// The fuller-is-better fraction in [0, 1] for routing: the lower of the two
    /// buckets' fill levels, 0 while in debt, 1 for an unlimited bucket.
    pub fn headroom(&self, now: Nanos) -> f64 {
        let mut state = self.snapshot();
        state.refill(now, self.refill.share());
        [state.requests, state.tokens]
            .into_iter()
            .flatten()
            .map(|bucket| bucket.fill())
            .fold(1.0, f64::min)
    }

    /// Whether 1 request and `tokens` tokens could be taken now, changing
    /// nothing (the route filter's check; `reserve` decides for real). A
    /// denial's `owner_index` is 0.
    pub fn check(&self, tokens: u32, now: Nanos) -> Result<(), Denied> {
        self.check_keeping(tokens, now, Keep::NONE)
    }

    /// `check`, leaving `keep` of each bucket in it.
    pub fn check_keeping(&self, tokens: u32, now: Nanos, keep: Keep) -> Result<(), Denied> {
        let mut state = self.snapshot();
        // Refilling up to `now` changes no budget, only when it was counted.
        state.refill(now, self.refill.share());
        state
            .check(tokens, 0, self.refill.share(), keep)
            .map_or(Ok(()), Err)
    }

    /// A copy of the state, to read: nothing is written back, so reading a
    /// shared limit does not dirty the slot that other processes read too.
    fn snapshot(&self) -> State {
        match &self.cell {
            Cell::Local(_) => *self.lock(),
            Cell::Shared { region, slot } => State::from_levels(
                self.spec,
                region.locked::<Levels>(*slot).get(),
                self.refill.is_fed(),
            ),
        }
    }

    /// Every update leaves the state consistent, so a panic elsewhere while
    /// the lock was held cannot have left it half-changed.
    fn lock(&self) -> Locked<'_> {
        match &self.cell {
            Cell::Local(state) => Held::Local(state.lock().unwrap_or_else(PoisonError::into_inner)),
            Cell::Shared { region, slot } => {
                let guard = region.locked::<Levels>(*slot);
                let value = State::from_levels(self.spec, guard.get(), self.refill.is_fed());
                Held::Shared {
                    guard,
                    value,
                    store: State::levels,
                }
            }
        }
    }

    /// The order in which `reserve` locks limits: the same in every process
    /// for shared ones (by slot), by address for this process's own.
    fn order(&self) -> (u8, usize) {
        match &self.cell {
            Cell::Shared { slot, .. } => (0, *slot),
            Cell::Local(_) => (1, ptr::from_ref(self) as usize),
        }
    }
}

/// A limit's state, locked (see `Held`).
type Locked<'a> = Held<'a, State, Levels>;

impl State {
    /// Full buckets, or empty ones when their budget comes only in grants.
    fn fresh(spec: LimitSpec, empty: bool) -> Self {
        let bucket = |per_minute: u32| {
            let mut bucket = Bucket::full(per_minute);
            if empty {
                bucket.level = 0;
            }
            bucket
        };
        State {
            refilled_at: 0,
            requests: spec.rpm.map(bucket),
            tokens: spec.tpm.map(bucket),
        }
    }

    /// The state `levels` hold for `spec`: fresh buckets when never written,
    /// else the levels clamped to this spec's capacities (another process,
    /// or this one before a reload, may have had another).
    fn from_levels(spec: LimitSpec, levels: Levels, fed: bool) -> Self {
        if !levels.written {
            return State::fresh(spec, fed);
        }
        let bucket = |per_minute: Option<u32>, level: i128| {
            per_minute.map(|n| {
                let mut bucket = Bucket::full(n);
                bucket.level = level.clamp(-bucket.capacity(), bucket.capacity());
                bucket
            })
        };
        State {
            refilled_at: levels.refilled_at,
            requests: bucket(spec.rpm, levels.requests),
            tokens: bucket(spec.tpm, levels.tokens),
        }
    }

    fn levels(&self) -> Levels {
        let level = |bucket: Option<Bucket>| bucket.map_or(i128::MAX, |b| b.level);
        Levels {
            written: true,
            refilled_at: self.refilled_at,
            requests: level(self.requests),
            tokens: level(self.tokens),
        }
    }

    /// Callers read the clock before taking the lock, so a slightly older
    /// `now` can arrive after a newer one: time here never runs backwards.
    /// `share` is the part of each bucket's rate it refills by itself.
    fn refill(&mut self, now: Nanos, share: Share) {
        if now > self.refilled_at {
            let elapsed = now - self.refilled_at;
            for bucket in self.buckets_mut().into_iter().flatten() {
                bucket.refill(elapsed, share);
            }
            self.refilled_at = now;
        }
    }

    /// Why 1 request and `tokens` tokens cannot be taken now, leaving `keep`
    /// of each bucket, if they cannot.
    fn check(&self, tokens: u32, owner_index: usize, share: Share, keep: Keep) -> Option<Denied> {
        let needs = [
            (LimitKind::Requests, self.requests, 1),
            (LimitKind::Tokens, self.tokens, tokens),
        ];
        needs
            .into_iter()
            .filter_map(|(kind, bucket, amount)| {
                let bucket = bucket?;
                match bucket.wait(amount, share, keep) {
                    Some(0) => None,
                    Some(wait) => Some(Denied::Exhausted {
                        owner_index,
                        kind,
                        retry_at: self.refilled_at.saturating_add(wait),
                    }),
                    None => Some(Denied::TooLarge {
                        owner_index,
                        kind,
                        per_minute: bucket.per_minute,
                    }),
                }
            })
            .reduce(binding)
    }

    fn buckets_mut(&mut self) -> [Option<&mut Bucket>; 2] {
        [self.requests.as_mut(), self.tokens.as_mut()]
    }
}

impl Bucket {
    fn full(per_minute: u32) -> Self {
        Bucket {
            per_minute,
            level: units(per_minute),
        }
    }

    fn capacity(&self) -> i128 {
        units(self.per_minute)
    }

    fn refill(&mut self, elapsed: Nanos, share: Share) {
        let gained = i128::from(elapsed) * i128::from(self.per_minute);
        let gained = match share {
            Share::WHOLE => gained,
            Share(ppm) => gained * i128::from(ppm) / i128::from(Share::WHOLE.0),
        };
        // What grants brought in above a share's cap stays until it is used.
        let cap = share.cap(self.capacity());
        if self.level < cap {
            self.level = (self.level + gained).min(cap);
        }
    }

    /// Nanoseconds until `amount` is available with `keep` left beside it,
    /// or `None` if the two exceed the capacity. Rounded up, so at the
    /// returned instant it is available and one nanosecond earlier it is
    /// not. A bucket fed only by grants is expected back at its whole rate,
    /// which is what its grants add up to.
    fn wait(&self, amount: u32, share: Share, keep: Keep) -> Option<Nanos> {
        let amount = units(amount) + keep.of(self.capacity());
        if amount > self.capacity() {
            return None;
        }
        let deficit = amount - self.level;
        if deficit <= 0 {
            return Some(0);
        }
        // deficit > 0 with amount <= capacity means capacity > 0, so
        // per_minute > 0; the wait is at most two minutes (from full debt)
        // at the whole rate, longer at a share of it.
        let whole = i128::from(Share::WHOLE.0);
        let (deficit, rate) = match share {
            Share(0) | Share::WHOLE => (deficit, i128::from(self.per_minute)),
            Share(ppm) => (
                deficit * whole,
                i128::from(self.per_minute) * i128::from(ppm),
            ),
        };
        Some(((deficit + rate - 1) / rate) as Nanos)
    }

    /// Debt stops at one full bucket, so a wildly wrong usage report blocks
    /// an owner for at most two minutes rather than for hours.
    fn take(&mut self, amount: u32) {
        self.level = (self.level - units(amount)).max(-self.capacity());
    }

    /// Anything returned beyond capacity is lost, as refill beyond it is.
    fn give(&mut self, amount: u32) {
        self.level = (self.level + units(amount)).min(self.capacity());
    }

    fn fill(&self) -> f64 {
        if self.per_minute == 0 {
            return 0.0;
        }
        self.level.max(0) as f64 / self.capacity() as f64
    }
}

fn units(amount: u32) -> i128 {
    i128::from(amount) * UNITS
}

/// Of two reasons to deny, the one the caller must respect: a reservation that
/// can never fit outranks a wait, a longer wait a shorter one; ties go to the
/// owner listed first, so the answer does not depend on memory addresses.
fn binding(a: Denied, b: Denied) -> Denied {
    let rank = |denied: &Denied| match *denied {
        Denied::TooLarge { owner_index, .. } => (true, 0, Reverse(owner_index)),
        Denied::Exhausted {
            owner_index,
            retry_at,
            ..
        } => (false, retry_at, Reverse(owner_index)),
    };
    cmp::max_by_key(a, b, rank)
}

/// Takes 1 request and `tokens` tokens from every limit in `limits`, or
/// nothing at all. A limit listed twice is charged once. Allocates nothing;
/// meant for a handful of limits (the work grows with the square of their number).
pub fn reserve(limits: &[&Limit], tokens: u32, now: Nanos) -> Result<Reservation, Denied> {
    reserve_keeping(limits, tokens, now, Keep::NONE)
}

/// `reserve`, leaving `keep` of the first limit's buckets in them (a
/// deployment's, for callers of higher priority than this one).
pub fn reserve_keeping(
    limits: &[&Limit],
    tokens: u32,
    now: Nanos,
    keep: Keep,
) -> Result<Reservation, Denied> {
    lock_check_take(limits, None, (tokens, keep), now, None)?;
    Ok(Reservation { tokens })
}

/// Locks the next limit in `Limit::order` and recurses, so that every caller
/// takes locks in the same order and none can wait on another in a cycle. The
/// innermost call decides while holding every lock; on the way out each frame
/// applies the decision to its own limit before unlocking it. Whoever locks a
/// limit next therefore sees a decided reservation, never a half-made one.
/// `above` is the order of the previous limit (None at the start).
fn lock_check_take(
    limits: &[&Limit],
    above: Option<(u8, usize)>,
    (tokens, keep): (u32, Keep),
    now: Nanos,
    denied: Option<Denied>,
) -> Result<(), Denied> {
    // `min_by_key` keeps the first of equals: the owner's first position.
    let next = limits
        .iter()
        .enumerate()
        .filter(|(_, limit)| Some(limit.order()) > above)
        .min_by_key(|(_, limit)| limit.order());
    let Some((owner_index, limit)) = next else {
        return denied.map_or(Ok(()), Err);
    };
    let mut state = limit.lock();
    state.refill(now, limit.refill.share());
    let keep_here = if owner_index == 0 { keep } else { Keep::NONE };
    let denied = [
        denied,
        state.check(tokens, owner_index, limit.refill.share(), keep_here),
    ]
    .into_iter()
    .flatten()
    .reduce(binding);
    lock_check_take(limits, Some(limit.order()), (tokens, keep), now, denied)?;
    if let Some(bucket) = state.requests.as_mut() {
        bucket.take(1);
    }
    if let Some(bucket) = state.tokens.as_mut() {
        bucket.take(tokens);
    }
    Ok(())
}

/// After the call: returns the unused part of the estimate, or takes what the
/// call used beyond it, on every limit's tokens bucket. Taking may drive a
/// bucket into debt (down to minus its capacity), which later requests then
/// wait out; that is how an underestimate is paid for. The request stays taken.
/// Limits are updated one at a time: settling cannot fail, so there is no
/// all-or-nothing to keep.
pub fn settle(limits: &[&Limit], reservation: Reservation, actual_tokens: u32, now: Nanos) {
    let reserved = reservation.tokens;
    for limit in distinct(limits) {
        let mut state = limit.lock();
        state.refill(now, limit.refill.share());
        if let Some(bucket) = state.tokens.as_mut() {
            if actual_tokens > reserved {
                bucket.take(actual_tokens - reserved);
            } else {
                bucket.give(reserved - actual_tokens);
            }
        }
    }
}

/// The attempt was abandoned before it used anything (say, for a fallback):
/// returns its request and its tokens to every limit.
pub fn release(limits: &[&Limit], reservation: Reservation, now: Nanos) {
    for limit in distinct(limits) {
        let mut state = limit.lock();
        state.refill(now, limit.refill.share());
        if let Some(bucket) = state.requests.as_mut() {
            bucket.give(1);
        }
        if let Some(bucket) = state.tokens.as_mut() {
            bucket.give(reservation.tokens);
        }
    }
}

/// Each limit once, as `reserve` charged it: later duplicates are skipped.
fn distinct<'a>(limits: &'a [&'a Limit]) -> impl Iterator<Item = &'a Limit> {
    limits.iter().enumerate().filter_map(|(i, &limit)| {
        let seen = limits[..i].iter().any(|&other| ptr::eq(other, limit));
        (!seen).then_some(limit)
    })
}

#[cfg(test)]
mod tests;
