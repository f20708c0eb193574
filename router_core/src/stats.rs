//! Per-deployment outcome counters. Every field is its own atomic so that
//! recording from many threads never takes a lock; a snapshot therefore reads
//! each counter separately and may straddle a concurrent `record`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crate::health::{BreakerState, HealthSnapshot, OutcomeClass};
use crate::measures::{Distribution, Durations, FailedDurations, Histogram, Unit, TOKEN_BOUNDS};
use crate::state::{InFlight, Payload, Place, Region, IN_FLIGHT};

/// Weight of the newest sample in the latency moving averages.
pub const EWMA_ALPHA: f64 = 0.2;

/// What one attempt on a deployment came to.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub class: OutcomeClass,
    /// Wall time of the attempt (to the last token, for a stream).
    pub latency_ms: f64,
    /// Time to the first token, for streams.
    pub ttft_ms: Option<f64>,
    /// As the provider counted them; they settle the rate-limit reservation.
    pub input_tokens: u32,
    pub output_tokens: u32,
    /// The provider's Retry-After, for `RateLimited`.
    pub retry_after: Option<Duration>,
}

impl Outcome {
    /// A success with no token counts, for tests and benchmarks.
    pub fn ok(latency_ms: f64) -> Self {
        Outcome {
            class: OutcomeClass::Ok,
            latency_ms,
            ttft_ms: None,
            input_tokens: 0,
            output_tokens: 0,
            retry_after: None,
        }
    }

    pub fn failed(class: OutcomeClass, latency_ms: f64) -> Self {
        Outcome {
            class,
            ..Outcome::ok(latency_ms)
        }
    }
}

/// A point-in-time view of one deployment: counters, health and budget.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentStats {
    pub deployment: String,
    pub requests: u64,
    /// Attempts whose class was not `Ok`.
    pub failures: u64,
    pub in_flight: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub state: BreakerState,
    /// Why the deployment is out of rotation and for how much longer, if it is.
    pub unavailable: Option<(&'static str, Duration)>,
    pub health: HealthSnapshot,
    /// Rate-limit budget left, in [0, 1].
    pub headroom: f64,
    /// Moving average of reported / estimated input tokens, which scales the
    /// estimate here; 1.0 until calibrated (see [`crate::CALIBRATION_ALPHA`]).
    pub input_token_ratio: f64,
}

/// The distributions of a deployment's attempts, for percentiles and exporters.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentMeasures {
    pub deployment: String,
    /// Attempts per outcome class, for the classes that ended any.
    pub outcomes: Vec<(OutcomeClass, u64)>,
    /// What the answers cost, in USD.
    pub cost_usd: f64,
    /// Durations of successful attempts, in seconds.
    pub latency: Distribution,
    /// Times to the first token of successful streamed attempts, in seconds.
    pub first_token: Distribution,
    /// Durations of failed attempts per failure class, for those that had any.
    pub failed_latency: Vec<(OutcomeClass, Distribution)>,
    /// Tokens per successful attempt.
    pub input_tokens: Distribution,
    pub output_tokens: Distribution,
}

/// A deployment's call counters: this process's own, or in a region the
/// host's processes share (see `state`), where the totals are the host's and
/// attempts in flight are counted per process.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    counts: Place<Counts>,
    durations: Place<Durations>,
    failed: Place<FailedDurations>,
    in_flight: Flight,
}

type Tokens = Histogram<{ TOKEN_BOUNDS.len() + 1 }>;

#[repr(C)]
#[derive(Debug, Default)]
struct Counts {
    requests: AtomicU64,
    failures: AtomicU64,
    input_tokens: AtomicU64,
    output_tokens: AtomicU64,
    by_class: [AtomicU64; OutcomeClass::ALL.len()],
    cost_nano_usd: AtomicU64,
    input_per_attempt: Tokens,
    output_per_attempt: Tokens,
}

// Safety: atomics of plain integers; all zero is nothing counted.
unsafe impl Payload for Counts {}

/// Attempts started (a lease taken) and not yet recorded or released.
#[derive(Debug)]
enum Flight {
    Local(AtomicU64),
    /// Counted in this process's column of the region (see `InFlight`).
    Shared {
        region: Arc<Region>,
        slot: usize,
        column: usize,
    },
}

impl Default for Flight {
    fn default() -> Self {
        Flight::Local(AtomicU64::new(0))
    }
}

impl Counters {
    /// Deployment `id`'s counters: in `region` when there is one with slots
    /// (and, for attempts in flight, a column) left, else this process's own.
    pub(crate) fn at(region: Option<&Arc<Region>>, id: &str) -> Self {
        let in_flight = region.and_then(|region| {
            Some(Flight::Shared {
                slot: region.slot(&format!("{IN_FLIGHT}{id}"))?,
                column: region.column()?,
                region: Arc::clone(region),
            })
        });
        Counters {
            counts: Place::at(region, &format!("counts/{id}")),
            durations: Place::at(region, &format!("durations/{id}")),
            failed: Place::at(region, &format!("failed/{id}")),
            in_flight: in_flight.unwrap_or_default(),
        }
    }

    /// The counters are independent statistics that publish no other memory,
    /// so relaxed ordering suffices.
    pub(crate) fn record(&self, outcome: &Outcome, cost_usd: f64) {
        let counts = &*self.counts;
        counts.requests.fetch_add(1, Relaxed);
        counts.by_class[outcome.class as usize].fetch_add(1, Relaxed);
        let (input, output) = (outcome.input_tokens, outcome.output_tokens);
        counts.input_tokens.fetch_add(u64::from(input), Relaxed);
        counts.output_tokens.fetch_add(u64::from(output), Relaxed);
        // Saturating float-to-int: a negative or absurd price cannot wrap the total.
        counts
            .cost_nano_usd
            .fetch_add((cost_usd * 1e9).round() as u64, Relaxed);
        let latency_s = outcome.latency_ms / 1000.0;
        if outcome.class != OutcomeClass::Ok {
            counts.failures.fetch_add(1, Relaxed);
            self.failed.record(outcome.class, latency_s);
            return;
        }
        counts
            .input_per_attempt
            .record(&TOKEN_BOUNDS, Unit::Count, f64::from(input));
        counts
            .output_per_attempt
            .record(&TOKEN_BOUNDS, Unit::Count, f64::from(output));
        let first_token_s = outcome.ttft_ms.map(|ms| ms / 1000.0);
        self.durations.record(latency_s, first_token_s);
    }

    pub(crate) fn measures(&self, deployment: &str) -> DeploymentMeasures {
        let counts = &*self.counts;
        let (latency, first_token) = self.durations.snapshot();
        DeploymentMeasures {
            deployment: deployment.to_owned(),
            outcomes: OutcomeClass::ALL
                .into_iter()
                .zip(&counts.by_class)
                .map(|(class, count)| (class, count.load(Relaxed)))
                .filter(|&(_, count)| count > 0)
                .collect(),
            cost_usd: counts.cost_nano_usd.load(Relaxed) as f64 / 1e9,
            latency,
            first_token,
            failed_latency: self.failed.snapshot(),
            input_tokens: counts
                .input_per_attempt
                .snapshot(&TOKEN_BOUNDS, Unit::Count),
            output_tokens: counts
                .output_per_attempt
                .snapshot(&TOKEN_BOUNDS, Unit::Count),
        }
    }

    pub(crate) fn in_flight(&self) -> u64 {
        match &self.in_flight {
            Flight::Local(count) => count.load(Relaxed),
            Flight::Shared { region, slot, .. } => region.shared::<InFlight>(*slot).total(),
        }
    }

    pub(crate) fn start_attempt(&self) {
        match &self.in_flight {
            Flight::Local(count) => {
                count.fetch_add(1, Relaxed);
            }
            Flight::Shared {
                region,
                slot,
                column,
            } => region.shared::<InFlight>(*slot).start(*column),
        }
    }

    /// Saturating, so a stray extra end cannot wrap the count around.
    pub(crate) fn end_attempt(&self) {
        match &self.in_flight {
            Flight::Local(count) => {
                let _ = count.fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(1)));
            }
            Flight::Shared {
                region,
                slot,
                column,
            } => region.shared::<InFlight>(*slot).end(*column),
        }
    }

    pub(crate) fn snapshot(
        &self,
        deployment: &str,
        health: HealthSnapshot,
        unavailable: Option<(&'static str, Duration)>,
        headroom: f64,
        input_token_ratio: f64,
    ) -> DeploymentStats {
        DeploymentStats {
            deployment: deployment.to_owned(),
            requests: self.counts.requests.load(Relaxed),
            failures: self.counts.failures.load(Relaxed),
            in_flight: self.in_flight(),
            input_tokens: self.counts.input_tokens.load(Relaxed),
            output_tokens: self.counts.output_tokens.load(Relaxed),
            state: health.state,
            unavailable,
            health,
            headroom,
            input_token_ratio,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{Health, HealthPolicy};

    fn snapshot(counters: &Counters) -> DeploymentStats {
        let health = Health::new(HealthPolicy::default()).snapshot(0);
        counters.snapshot("d", health, None, 1.0, 1.0)
    }

    #[test]
    fn counts_requests_failures_and_tokens() {
        let counters = Counters::default();
        counters.record(
            &Outcome {
                input_tokens: 10,
                output_tokens: 5,
                ..Outcome::ok(1.0)
            },
            0.0,
        );
        counters.record(&Outcome::failed(OutcomeClass::Timeout, 1.0), 0.0);
        let stats = snapshot(&counters);
        assert_eq!(
            (
                stats.requests,
                stats.failures,
                stats.input_tokens,
                stats.output_tokens
            ),
            (2, 1, 10, 5)
        );
    }

    #[test]
    fn in_flight_never_wraps_below_zero() {
        let counters = Counters::default();
        counters.start_attempt();
        counters.end_attempt();
        counters.end_attempt();
        assert_eq!(counters.in_flight(), 0);
    }

    #[test]
    fn concurrent_records_are_all_counted() {
        let counters = Counters::default();
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..1000 {
                        counters.record(&Outcome::ok(50.0), 0.0);
                    }
                });
            }
        });
        assert_eq!(snapshot(&counters).requests, 8000);
    }
}
