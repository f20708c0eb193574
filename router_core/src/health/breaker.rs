//! The circuit breaker: Closed → Open(until) → half-open → Closed or Open
//! again. A plain state machine driven by `now`; `Health` keeps it behind a
//! mutex because its transitions read and write several fields together.
//!
//! Half-open is not stored: an `Open` breaker whose `until` has passed is
//! half-open, so no timer or background task is needed to move it along.

use super::policy::HealthPolicy;
use super::{Admission, UnavailableReason};
use crate::clock::Nanos;

/// The breaker's state as stats and explanations name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Closed,
    /// Rejecting until `until`, half-open after it; `probe` is when the claim
    /// on the single probe slot lapses, while one is held.
    Open {
        until: Nanos,
        probe: Option<Nanos>,
    },
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Breaker {
    state: State,
    consecutive_failures: u32,
    window: ErrorWindow,
    /// The length of the current (or next) open period: the base after a
    /// trip, doubled by each failed probe up to the cap.
    open_for: Nanos,
    /// The latest `now` seen. Callers read the clock before taking the lock,
    /// so two outcomes can arrive slightly out of order; taking the later time
    /// for both keeps the window and the deadlines from running backwards.
    latest: Nanos,
}

impl Breaker {
    pub(super) fn new(policy: &HealthPolicy) -> Self {
        Breaker {
            state: State::Closed,
            consecutive_failures: 0,
            window: ErrorWindow::new(policy.error_window()),
            open_for: policy.open(),
            latest: 0,
        }
    }

    /// This breaker's state under a (possibly reloaded) policy. The window is
    /// dropped if its bucket width changed, as its counts would be misread.
    pub(super) fn carried_over(&self, policy: &HealthPolicy) -> Self {
        let mut breaker = *self;
        if breaker.window.width != ErrorWindow::new(policy.error_window()).width {
            breaker.window = ErrorWindow::new(policy.error_window());
        }
        // Not `clamp`, which panics on an (unvalidated) policy with max < base.
        breaker.open_for = breaker.open_for.min(policy.max_open()).max(policy.open());
        breaker
    }

    pub(super) fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    pub(super) fn state(&self, now: Nanos) -> BreakerState {
        match self.state {
            State::Closed => BreakerState::Closed,
            State::Open { until, .. } if now < until => BreakerState::Open,
            State::Open { .. } => BreakerState::HalfOpen,
        }
    }

    pub(super) fn admit(&self, now: Nanos) -> Admission {
        let unavailable = |until, reason| Admission::Unavailable { until, reason };
        match self.state {
            State::Closed => Admission::Available,
            State::Open { until, .. } if now < until => {
                unavailable(until, UnavailableReason::CircuitOpen)
            }
            State::Open {
                probe: Some(lapses),
                ..
            } if now < lapses => unavailable(lapses, UnavailableReason::ProbeInFlight),
            State::Open { .. } => Admission::Probe,
        }
    }

    /// Takes the probe slot if the breaker is half-open and the slot is free
    /// (or its claim has lapsed).
    pub(super) fn claim_probe(&mut self, now: Nanos, policy: &HealthPolicy) -> bool {
        let now = self.observe(now);
        if self.admit(now) != Admission::Probe {
            return false;
        }
        if let State::Open { probe, .. } = &mut self.state {
            *probe = Some(now.saturating_add(policy.probe_timeout()));
        }
        true
    }

    /// While half-open every outcome is taken as the probe's: on_outcome does
    /// not know which request probed, and a request that started before the
    /// breaker opened is rarely still running after the open period.
    pub(super) fn on_success(&mut self, now: Nanos, policy: &HealthPolicy) {
        let now = self.observe(now);
        self.consecutive_failures = 0;
        match self.state(now) {
            BreakerState::Closed => self.window.record(now, false),
            BreakerState::HalfOpen => self.close(policy),
            // A straggler sent before the breaker opened proves nothing now.
            BreakerState::Open => {}
        }
    }

    pub(super) fn on_failure(&mut self, now: Nanos, policy: &HealthPolicy) {
        let now = self.observe(now);
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        match self.state(now) {
            BreakerState::Closed => {
                self.window.record(now, true);
                if self.should_trip(now, policy) {
                    self.open_for = policy.open();
                    self.open(now);
                }
            }
            BreakerState::HalfOpen => {
                self.open_for = self.open_for.saturating_mul(2).min(policy.max_open());
                self.open(now);
            }
            BreakerState::Open => {}
        }
    }

    /// An outcome that says nothing about the deployment (a 429, a bad
    /// request) still ends a probe, so the next request can probe at once
    /// instead of waiting for the claim to lapse.
    pub(super) fn release_probe(&mut self, now: Nanos) {
        let now = self.observe(now);
        if let State::Open { until, probe } = &mut self.state {
            if now >= *until {
                *probe = None;
            }
        }
    }

    pub(super) fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// `(outcomes, failures)` in the error window.
    pub(super) fn window(&self, now: Nanos) -> (u32, u32) {
        self.window.totals(now.max(self.latest))
    }

    pub(super) fn open_until(&self, now: Nanos) -> Option<Nanos> {
        match self.state {
            State::Open { until, .. } if now < until => Some(until),
            _ => None,
        }
    }

    fn observe(&mut self, now: Nanos) -> Nanos {
        self.latest = self.latest.max(now);
        self.latest
    }

    fn should_trip(&self, now: Nanos, policy: &HealthPolicy) -> bool {
        if self.consecutive_failures >= policy.consecutive_failures {
            return true;
        }
        let (outcomes, failures) = self.window.totals(now);
        outcomes >= policy.min_requests
            && f64::from(failures) >= policy.error_ratio * f64::from(outcomes)
    }

    fn open(&mut self, now: Nanos) {
        self.state = State::Open {
            until: now.saturating_add(self.open_for),
            probe: None,
        };
        // Outcomes from before the trip must not re-trip the breaker the
        // moment it closes.
        self.window.clear();
    }

    fn close(&mut self, policy: &HealthPolicy) {
        self.state = State::Closed;
        self.open_for = policy.open();
        self.consecutive_failures = 0;
        self.window.clear();
    }
}

const BUCKETS: usize = 10;

/// Outcome counts over a sliding window, in `BUCKETS` time buckets. Chosen
/// over an exponentially decayed rate because "at least 20 outcomes in the
/// last 10 s, half of them failed" is what an operator can read off a graph
/// and check; the window slides in tenth-of-a-window steps, which is fine
/// for a breaker, and it costs 160 bytes and a ten-step sum per failure.
#[derive(Debug, Clone, Copy)]
struct ErrorWindow {
    width: Nanos,
    buckets: [Bucket; BUCKETS],
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// `now / width` when the bucket was last reset; a bucket whose index is
    /// `BUCKETS` or more behind the current one is stale and counts nothing.
    index: u64,
    outcomes: u32,
    failures: u32,
}

impl ErrorWindow {
    fn new(window: Nanos) -> Self {
        ErrorWindow {
            width: (window / BUCKETS as u64).max(1),
            buckets: [Bucket::default(); BUCKETS],
        }
    }

    fn record(&mut self, now: Nanos, failed: bool) {
        let index = now / self.width;
        let bucket = &mut self.buckets[(index % BUCKETS as u64) as usize];
        if bucket.index != index {
            *bucket = Bucket {
                index,
                ..Bucket::default()
            };
        }
        bucket.outcomes = bucket.outcomes.saturating_add(1);
        bucket.failures = bucket.failures.saturating_add(u32::from(failed));
    }

    fn totals(&self, now: Nanos) -> (u32, u32) {
        let index = now / self.width;
        self.buckets
            .iter()
            .filter(|b| index.saturating_sub(b.index) < BUCKETS as u64)
            .fold((0, 0), |(outcomes, failures), b| {
                (outcomes + b.outcomes, failures + b.failures)
            })
    }

    fn clear(&mut self) {
        self.buckets = [Bucket::default(); BUCKETS];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Nanos = 1_000_000_000;

    #[test]
    fn window_forgets_outcomes_older_than_its_length() {
        let mut window = ErrorWindow::new(10 * SEC);
        window.record(0, true);
        window.record(SEC / 2, false);
        window.record(5 * SEC, true);
        assert_eq!(window.totals(5 * SEC), (3, 2));
        assert_eq!(window.totals(9 * SEC + SEC / 2), (3, 2));
        // Bucket 0 leaves when bucket 10 begins.
        assert_eq!(window.totals(10 * SEC), (1, 1));
        assert_eq!(window.totals(15 * SEC), (0, 0));
        window.record(20 * SEC, false);
        assert_eq!(window.totals(20 * SEC), (1, 0));
    }

    #[test]
    fn late_outcomes_count_at_the_latest_time_seen() {
        let policy = HealthPolicy::default();
        let mut breaker = Breaker::new(&policy);
        breaker.on_failure(3 * SEC, &policy);
        breaker.on_failure(2 * SEC, &policy);
        assert_eq!(breaker.window(0), (2, 2));
        assert_eq!(breaker.latest, 3 * SEC);
    }
}
