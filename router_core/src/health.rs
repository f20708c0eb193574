//! Per-deployment health on the routing hot path: a circuit breaker, the
//! rate-limit and auth cool-downs, and latency-outlier ejection. Nothing here
//! does I/O or reads a clock: callers pass `now` from [`Clock`](crate::Clock),
//! so tests drive every transition by hand.
//!
//! Health acts on an [`OutcomeClass`], never on strings from providers: the
//! service classifies each attempt once, and this module decides what a class
//! means for the deployment.

mod breaker;
mod cell;
mod latency;
mod outcome;
mod outliers;
mod peers;
mod policy;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::atomic::{
    AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Nanos;
use crate::state::Region;
use breaker::Breaker;
use cell::{Cell, Locked};
use latency::Latency;
use policy::duration_nanos;

pub use breaker::BreakerState;
pub use outcome::{OutcomeClass, UnknownOutcomeClass};
pub use outliers::{eject_outliers, RateGate};
pub use peers::{HealthNews, Told};
pub use policy::{HealthPolicy, OutlierPolicy};

/// Whether the route filter may send a request to a deployment now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Available,
    /// The breaker is half-open and its probe slot is free: send a request
    /// only after winning [`Health::claim_probe`].
    Probe,
    /// `until` is when the blocker named by `reason` ends; when several are
    /// active, the one that lasts longest is reported.
    Unavailable {
        until: Nanos,
        reason: UnavailableReason,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnavailableReason {
    CircuitOpen,
    /// Rate limited (a 429): waiting out its Retry-After.
    CoolingDown,
    /// Credentials were rejected.
    AuthFailed,
    /// Tail latency far above its peers'.
    Ejected,
    /// Half-open, and another request holds the probe slot.
    ProbeInFlight,
    /// Taken out by an operator until undrained (`Health::set_drained`).
    Drained,
}

impl UnavailableReason {
    pub fn as_str(self) -> &'static str {
        match self {
            UnavailableReason::CircuitOpen => "circuit_open",
            UnavailableReason::CoolingDown => "cooling_down",
            UnavailableReason::AuthFailed => "auth_failed",
            UnavailableReason::Ejected => "ejected",
            UnavailableReason::ProbeInFlight => "probe_in_flight",
            UnavailableReason::Drained => "drained",
        }
    }
}

impl fmt::Display for UnavailableReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UnavailableReason::CircuitOpen => "circuit open",
            UnavailableReason::CoolingDown => "rate limited",
            UnavailableReason::AuthFailed => "credentials rejected",
            UnavailableReason::Ejected => "ejected as a latency outlier",
            UnavailableReason::ProbeInFlight => "circuit half-open, probe in flight",
            UnavailableReason::Drained => "drained by an operator",
        })
    }
}

impl Admission {
    /// When waiting makes the deployment available again, for a caller to wait or to tell its
    /// client: only a provider's 429 cool-down ends at a time worth waiting for; an open
    /// circuit, an ejection or rejected credentials are no rate limit.
    pub fn worth_waiting_until(self) -> Option<Nanos> {
        match self {
            Admission::Unavailable {
                until,
                reason: UnavailableReason::CoolingDown,
            } => Some(until),
            _ => None,
        }
    }

    /// A human explanation as of `now`, e.g. "circuit open for another 3.2 s";
    /// `until` is absolute, so the remaining time needs the caller's clock.
    pub fn explain(self, now: Nanos) -> impl fmt::Display {
        Explanation {
            admission: self,
            now,
        }
    }
}

struct Explanation {
    admission: Admission,
    now: Nanos,
}

/// Nanoseconds as people read them: "3.2 s", or "50 ms" under a second (never "0.0 s").
struct HumanDuration(u64);

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 >= 1_000_000_000 {
            write!(f, "{:.1} s", self.0 as f64 / 1e9)
        } else {
            write!(f, "{} ms", self.0.div_ceil(1_000_000))
        }
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.admission {
            Admission::Available => f.write_str("available"),
            Admission::Probe => f.write_str("circuit half-open, may probe"),
            Admission::Unavailable { until, reason } => {
                let left = HumanDuration(until.saturating_sub(self.now));
                match reason {
                    UnavailableReason::ProbeInFlight => {
                        write!(f, "{reason} (claim lapses in {left})")
                    }
                    UnavailableReason::Drained => write!(f, "{reason}"),
                    _ => write!(f, "{reason} for another {left}"),
                }
            }
        }
    }
}

/// One deployment's health. `Send + Sync`: the breaker sits behind a small
/// mutex (its transitions touch several fields at once, and exactness beats
/// lock-freedom there); cool-downs and latency are atomics. All of it lives
/// in this process or in a region shared with the host's other processes
/// (`cell`).
#[derive(Debug)]
pub struct Health {
    policy: HealthPolicy,
    cell: Cell,
}

/// A point-in-time view for stats and explanations. Deadlines are `Some`
/// only while they lie ahead of `now`.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthSnapshot {
    pub state: BreakerState,
    pub consecutive_failures: u32,
    /// Outcomes the breaker counted in its error window (none while open).
    pub window_outcomes: u32,
    /// Failed share of `window_outcomes`; `None` when there are none.
    pub error_rate: Option<f64>,
    pub open_until: Option<Nanos>,
    pub rate_limited_until: Option<Nanos>,
    pub auth_failed_until: Option<Nanos>,
    pub ejected_until: Option<Nanos>,
    pub tail_latency_ms: Option<f64>,
    pub ewma_latency_ms: Option<f64>,
    pub ewma_ttft_ms: Option<f64>,
    /// Like `tail_latency_ms`, for the time to the first token.
    pub tail_ttft_ms: Option<f64>,
    /// Successes folded into the latency estimate since its last ejection.
    pub latency_samples: u64,
}

impl Health {
    /// `policy` is expected to have passed [`HealthPolicy::validate`].
    pub fn new(policy: HealthPolicy) -> Self {
        Health {
            cell: Cell::local(&policy),
            policy,
        }
    }

    /// A copy of `old`'s state under `policy`, for a config reload that keeps
    /// the deployment. Outcomes recorded on `old` after the copy are lost, which
    /// for a reload (rare, and swapped in microseconds later) is acceptable.
    pub fn carry_over(old: &Health, policy: HealthPolicy) -> Self {
        let health = Health::new(policy);
        let carried = old.lock().carried_over(&health.policy);
        health.change(|breaker| *breaker = carried);
        let (to, from) = (health.cell.atomics(), old.cell.atomics());
        for (to, from) in [
            (&to.rate_limited_until, &from.rate_limited_until),
            (&to.auth_failed_until, &from.auth_failed_until),
            (&to.ejected_until, &from.ejected_until),
            (&to.peer_open_until, &from.peer_open_until),
            (&to.peer_cooling_until, &from.peer_cooling_until),
        ] {
            to.store(from.load(Relaxed), Relaxed);
        }
        to.drained.store(from.drained.load(Relaxed), Relaxed);
        health.latency().copy_from(old.latency());
        health
    }

    /// Takes the deployment out of rotation (no new attempt; those under way finish), or puts
    /// it back, for every process that shares this health.
    pub fn set_drained(&self, drained: bool) {
        self.cell.atomics().drained.store(drained, Relaxed);
    }

    /// Deployment `id`'s health in `region`, where every process mapping it
    /// sees it, and where it carries over any reload. Local (carried over from
    /// `old`) when the region has no slots left.
    pub(crate) fn shared(
        policy: HealthPolicy,
        region: &Arc<Region>,
        id: &str,
        old: Option<&Health>,
    ) -> Self {
        let Some(cell) = Cell::shared(region, id) else {
            return old.map_or_else(
                || Health::new(policy.clone()),
                |old| Health::carry_over(old, policy.clone()),
            );
        };
        let health = Health { cell, policy };
        health.change(|breaker| *breaker = breaker.carried_over(&health.policy));
        health
    }

    pub fn policy(&self) -> &HealthPolicy {
        &self.policy
    }

    /// The route filter's check: a few atomic loads and a brief lock; changes nothing.
    pub fn admit(&self, now: Nanos) -> Admission {
        let atomics = self.cell.atomics();
        if atomics.drained.load(Relaxed) {
            return Admission::Unavailable {
                until: Nanos::MAX,
                reason: UnavailableReason::Drained,
            };
        }
        let mut admission = if !atomics.tripped.load(Acquire) {
            Admission::Available
        } else {
            self.lock().admit(now)
        };
        for (until, reason) in [
            (&atomics.auth_failed_until, UnavailableReason::AuthFailed),
            (&atomics.rate_limited_until, UnavailableReason::CoolingDown),
            (&atomics.ejected_until, UnavailableReason::Ejected),
            (&atomics.peer_open_until, UnavailableReason::CircuitOpen),
            (&atomics.peer_cooling_until, UnavailableReason::CoolingDown),
        ] {
            let until = until.load(Relaxed);
            let longer = match admission {
                Admission::Unavailable { until: current, .. } => until > current,
                _ => true,
            };
            if until > now && longer {
                admission = Admission::Unavailable { until, reason };
            }
        }
        admission
    }

    /// Claims the half-open breaker's single probe slot for the candidate the
    /// caller is about to try. True for exactly one caller while `admit` says
    /// `Probe`; the claim lapses after `probe_timeout_secs` if its outcome is
    /// never reported, so a lost probe cannot wedge the breaker.
    pub fn claim_probe(&self, now: Nanos) -> bool {
        let atomics = self.cell.atomics();
        let cooling = [
            &atomics.auth_failed_until,
            &atomics.rate_limited_until,
            &atomics.ejected_until,
            &atomics.peer_open_until,
            &atomics.peer_cooling_until,
        ]
        .iter()
        .any(|until| until.load(Relaxed) > now);
        !cooling
            && !atomics.drained.load(Relaxed)
            && self.change(|breaker| breaker.claim_probe(now, &self.policy))
    }

    /// Records one attempt. `latency_ms` and `ttft_ms` (time to first token,
    /// for streams) feed the latency estimate only on success: a refused
    /// connection answers fast, and must not make a broken deployment look
    /// quick. `retry_after` is the provider's, for `RateLimited`.
    pub fn on_outcome(
        &self,
        class: OutcomeClass,
        latency_ms: f64,
        ttft_ms: Option<f64>,
        retry_after: Option<Duration>,
        now: Nanos,
    ) {
        match class {
            OutcomeClass::Ok => {
                self.change(|breaker| breaker.on_success(now, &self.policy));
                self.latency().record(latency_ms, ttft_ms);
            }
            OutcomeClass::ServerError
            | OutcomeClass::Timeout
            | OutcomeClass::ConnectionError
            | OutcomeClass::Overloaded
            | OutcomeClass::ProtocolError => {
                self.change(|breaker| breaker.on_failure(now, &self.policy))
            }
            // Not a failure of the deployment: it is up, but wants a pause.
            OutcomeClass::RateLimited => {
                let pause = retry_after.map_or(self.policy.default_retry_after(), duration_nanos);
                let until = now.saturating_add(pause);
                self.cell
                    .atomics()
                    .rate_limited_until
                    .fetch_max(until, Relaxed);
                self.change(|breaker| breaker.release_probe(now));
            }
            // Wrong credentials stay wrong: retrying soon cannot help.
            OutcomeClass::AuthError => {
                let until = now.saturating_add(self.policy.auth_cooldown());
                self.cell
                    .atomics()
                    .auth_failed_until
                    .fetch_max(until, Relaxed);
                self.change(|breaker| breaker.release_probe(now));
            }
            // The request's fault, not the deployment's.
            OutcomeClass::BadRequest
            | OutcomeClass::ContentFiltered
            | OutcomeClass::ContextWindowExceeded => {
                self.change(|breaker| breaker.release_probe(now))
            }
        }
    }

    /// Frees a claimed probe slot whose attempt never ran (its lease was
    /// released), so the next request can probe at once.
    pub fn abandon_probe(&self, now: Nanos) {
        self.change(|breaker| breaker.release_probe(now));
    }

    /// About the 95th percentile of recent successful latencies (mean + 2
    /// deviations); `None` before the first success.
    pub fn tail_latency_ms(&self) -> Option<f64> {
        self.latency().tail_ms()
    }

    pub fn ewma_latency_ms(&self) -> Option<f64> {
        self.latency().mean_ms()
    }

    pub fn ewma_ttft_ms(&self) -> Option<f64> {
        self.latency().ttft_ms()
    }

    /// As [`Health::tail_latency_ms`], for the time to the first token.
    pub fn tail_ttft_ms(&self) -> Option<f64> {
        self.latency().ttft_tail_ms()
    }

    /// Failed share of the outcomes in the error window; `None` when there are none.
    pub fn error_rate(&self, now: Nanos) -> Option<f64> {
        let (outcomes, failures) = self.lock().window(now);
        (outcomes > 0).then(|| f64::from(failures) / f64::from(outcomes))
    }

    pub fn snapshot(&self, now: Nanos) -> HealthSnapshot {
        let breaker = self.lock();
        let atomics = self.cell.atomics();
        let (window_outcomes, failures) = breaker.window(now);
        let ahead = |until: &AtomicU64| Some(until.load(Relaxed)).filter(|&u| u > now);
        HealthSnapshot {
            state: breaker.state(now),
            consecutive_failures: breaker.consecutive_failures(),
            window_outcomes,
            error_rate: (window_outcomes > 0)
                .then(|| f64::from(failures) / f64::from(window_outcomes)),
            open_until: breaker.open_until(now),
            rate_limited_until: ahead(&atomics.rate_limited_until),
            auth_failed_until: ahead(&atomics.auth_failed_until),
            ejected_until: ahead(&atomics.ejected_until),
            tail_latency_ms: self.latency().tail_ms(),
            ewma_latency_ms: self.latency().mean_ms(),
            ewma_ttft_ms: self.latency().ttft_ms(),
            tail_ttft_ms: self.latency().ttft_tail_ms(),
            latency_samples: self.latency().samples(),
        }
    }

    fn eject(&self, until: Nanos) {
        self.cell.atomics().ejected_until.fetch_max(until, Relaxed);
        self.latency().forget_samples();
    }

    /// Runs `f` on the locked breaker and refreshes the lock-free mirror.
    fn change<R>(&self, f: impl FnOnce(&mut Breaker) -> R) -> R {
        let mut breaker = self.lock();
        let result = f(&mut breaker);
        let tripped = !breaker.is_closed();
        self.cell.atomics().tripped.store(tripped, Release);
        result
    }

    fn lock(&self) -> Locked<'_> {
        self.cell.lock(&self.policy)
    }

    fn latency(&self) -> &Latency {
        &self.cell.atomics().latency
    }
}
