//! Per-deployment outcome counters. Every field is its own atomic so that
//! recording from many threads never takes a lock; a snapshot therefore reads
//! each counter separately and may straddle a concurrent `record`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Weight of the newest sample in the latency moving average.
pub const EWMA_ALPHA: f64 = 0.2;

/// Bit pattern meaning "no latency sample yet". It is a NaN, which the
/// average can never hold because `record` rejects non-finite latencies.
const NO_SAMPLE: u64 = u64::MAX;

/// What happened when a caller sent a request to a deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome<'a> {
    pub deployment: &'a str,
    pub success: bool,
    pub latency_ms: f64,
    pub input_tokens: u32,
    pub output_tokens: u32,
}

/// A point-in-time copy of one deployment's counters.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentStats {
    pub deployment: String,
    pub requests: u64,
    pub failures: u64,
    pub consecutive_failures: u64,
    /// `None` until the first outcome is recorded.
    pub ewma_latency_ms: Option<f64>,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

#[derive(Debug)]
pub(crate) struct Counters {
    requests: AtomicU64,
    failures: AtomicU64,
    consecutive_failures: AtomicU64,
    /// `f64` bits, updated by compare-and-swap.
    ewma_latency_ms: AtomicU64,
    input_tokens: AtomicU64,
    output_tokens: AtomicU64,
    /// Attempts started (a lease taken) and not yet recorded or released.
    in_flight: AtomicU64,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            consecutive_failures: AtomicU64::new(0),
            ewma_latency_ms: AtomicU64::new(NO_SAMPLE),
            input_tokens: AtomicU64::new(0),
            output_tokens: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
        }
    }
}

impl Counters {
    /// The counters are independent statistics that publish no other memory,
    /// so relaxed ordering suffices. `latency_ms` must be finite and >= 0.
    pub(crate) fn record(&self, outcome: &Outcome<'_>) {
        self.requests.fetch_add(1, Relaxed);
        if outcome.success {
            self.consecutive_failures.store(0, Relaxed);
        } else {
            self.failures.fetch_add(1, Relaxed);
            self.consecutive_failures.fetch_add(1, Relaxed);
        }
        self.input_tokens
            .fetch_add(u64::from(outcome.input_tokens), Relaxed);
        self.output_tokens
            .fetch_add(u64::from(outcome.output_tokens), Relaxed);
        let sample = outcome.latency_ms;
        // The closure always returns `Some`, so `fetch_update` cannot fail.
        let _ = self.ewma_latency_ms.fetch_update(Relaxed, Relaxed, |bits| {
            let next = match bits {
                NO_SAMPLE => sample,
                _ => {
                    let old = f64::from_bits(bits);
                    old + EWMA_ALPHA * (sample - old)
                }
            };
            Some(next.to_bits())
        });
    }

    pub(crate) fn ewma_latency_ms(&self) -> Option<f64> {
        let bits = self.ewma_latency_ms.load(Relaxed);
        (bits != NO_SAMPLE).then(|| f64::from_bits(bits))
    }

    /// Failures over all recorded attempts (0 before the first).
    pub(crate) fn error_rate(&self) -> f64 {
        let requests = self.requests.load(Relaxed);
        if requests == 0 {
            0.0
        } else {
            self.failures.load(Relaxed) as f64 / requests as f64
        }
    }

    pub(crate) fn in_flight(&self) -> u64 {
        self.in_flight.load(Relaxed)
    }

    pub(crate) fn snapshot(&self, deployment: &str) -> DeploymentStats {
        let ewma = self.ewma_latency_ms.load(Relaxed);
        DeploymentStats {
            deployment: deployment.to_owned(),
            requests: self.requests.load(Relaxed),
            failures: self.failures.load(Relaxed),
            consecutive_failures: self.consecutive_failures.load(Relaxed),
            ewma_latency_ms: (ewma != NO_SAMPLE).then(|| f64::from_bits(ewma)),
            input_tokens: self.input_tokens.load(Relaxed),
            output_tokens: self.output_tokens.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(success: bool, latency_ms: f64) -> Outcome<'static> {
        Outcome {
            deployment: "d",
            success,
            latency_ms,
            input_tokens: 10,
            output_tokens: 5,
        }
    }

    #[test]
    fn empty_counters_have_no_latency() {
        let stats = Counters::default().snapshot("d");
        assert_eq!(stats.requests, 0);
        assert_eq!(stats.ewma_latency_ms, None);
    }

    #[test]
    fn first_sample_seeds_the_average_then_alpha_applies() {
        let counters = Counters::default();
        counters.record(&outcome(true, 100.0));
        assert_eq!(counters.snapshot("d").ewma_latency_ms, Some(100.0));
        counters.record(&outcome(true, 200.0));
        assert_eq!(counters.snapshot("d").ewma_latency_ms, Some(120.0));
    }

    #[test]
    fn failures_count_and_success_resets_the_streak() {
        let counters = Counters::default();
        counters.record(&outcome(false, 1.0));
        counters.record(&outcome(false, 1.0));
        let stats = counters.snapshot("d");
        assert_eq!(
            (stats.requests, stats.failures, stats.consecutive_failures),
            (2, 2, 2)
        );
        counters.record(&outcome(true, 1.0));
        let stats = counters.snapshot("d");
        assert_eq!(
            (stats.requests, stats.failures, stats.consecutive_failures),
            (3, 2, 0)
        );
        assert_eq!((stats.input_tokens, stats.output_tokens), (30, 15));
    }

    #[test]
    fn concurrent_records_are_all_counted() {
        let counters = Counters::default();
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..1000 {
                        counters.record(&outcome(true, 50.0));
                    }
                });
            }
        });
        let stats = counters.snapshot("d");
        assert_eq!(stats.requests, 4000);
        assert_eq!(stats.input_tokens, 40_000);
        assert_eq!(stats.ewma_latency_ms, Some(50.0));
    }
}
