//! A lock-free estimate of a deployment's latency tail, in the manner of TCP's
//! retransmission timer (RFC 6298): a moving average of latency and of its
//! absolute deviation from that average. `mean + 2 · deviation` sits near the
//! 95th percentile for a roughly normal spread (the mean absolute deviation is
//! about 0.8 σ), needs no sample buffer, and follows a step change within a
//! few dozen samples.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::stats::EWMA_ALPHA;

/// Bit pattern meaning "no sample yet": a NaN, which an average fed only
/// finite samples can never hold.
const NO_SAMPLE: u64 = u64::MAX;

/// How many deviations above the mean the tail estimate sits.
const TAIL_DEVIATIONS: f64 = 2.0;

/// Each field is updated on its own, so a reader racing a writer may pair a
/// new mean with an old deviation; an estimate off by one sample is harmless.
#[derive(Debug)]
pub(super) struct Latency {
    mean_ms: Ewma,
    deviation_ms: Ewma,
    ttft_ms: Ewma,
    /// Samples since the estimate was last judged (see `forget_samples`).
    samples: AtomicU64,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            mean_ms: Ewma::empty(),
            deviation_ms: Ewma::empty(),
            ttft_ms: Ewma::empty(),
            samples: AtomicU64::new(0),
        }
    }
}

impl Latency {
    /// Non-finite or negative samples are skipped: one would poison the
    /// averages for good. (`Router::record` already rejects them.)
    pub(super) fn record(&self, latency_ms: f64, ttft_ms: Option<f64>) {
        if valid(latency_ms) {
            let deviation = match self.mean_ms.update(latency_ms) {
                Some(previous) => (latency_ms - previous).abs(),
                None => 0.0,
            };
            self.deviation_ms.update(deviation);
            self.samples.fetch_add(1, Relaxed);
        }
        if let Some(ttft) = ttft_ms.filter(|&t| valid(t)) {
            self.ttft_ms.update(ttft);
        }
    }

    pub(super) fn tail_ms(&self) -> Option<f64> {
        let mean = self.mean_ms.get()?;
        Some(mean + TAIL_DEVIATIONS * self.deviation_ms.get().unwrap_or(0.0))
    }

    pub(super) fn mean_ms(&self) -> Option<f64> {
        self.mean_ms.get()
    }

    pub(super) fn ttft_ms(&self) -> Option<f64> {
        self.ttft_ms.get()
    }

    pub(super) fn samples(&self) -> u64 {
        self.samples.load(Relaxed)
    }

    /// After an ejection the deployment gets no traffic, so its estimate goes
    /// stale; counting afresh makes it earn new samples before it is judged
    /// again, instead of being re-ejected on its old figures the moment it returns.
    pub(super) fn forget_samples(&self) {
        self.samples.store(0, Relaxed);
    }

    pub(super) fn copy_from(&self, other: &Latency) {
        for (to, from) in [
            (&self.mean_ms, &other.mean_ms),
            (&self.deviation_ms, &other.deviation_ms),
            (&self.ttft_ms, &other.ttft_ms),
        ] {
            to.0.store(from.0.load(Relaxed), Relaxed);
        }
        self.samples.store(other.samples(), Relaxed);
    }
}

fn valid(ms: f64) -> bool {
    ms.is_finite() && ms >= 0.0
}

/// An exponentially weighted moving average in `f64` bits, updated by
/// compare-and-swap.
#[derive(Debug)]
struct Ewma(AtomicU64);

impl Ewma {
    fn empty() -> Self {
        Ewma(AtomicU64::new(NO_SAMPLE))
    }

    fn get(&self) -> Option<f64> {
        let bits = self.0.load(Relaxed);
        (bits != NO_SAMPLE).then(|| f64::from_bits(bits))
    }

    /// Folds in `sample` (the first one seeds the average); returns the
    /// average as it was before.
    fn update(&self, sample: f64) -> Option<f64> {
        // The closure always returns `Some`, so `fetch_update` cannot fail.
        let previous = self.0.fetch_update(Relaxed, Relaxed, |bits| {
            let next = match bits {
                NO_SAMPLE => sample,
                _ => {
                    let old = f64::from_bits(bits);
                    old + EWMA_ALPHA * (sample - old)
                }
            };
            Some(next.to_bits())
        });
        let bits = previous.unwrap_or_else(|bits| bits);
        (bits != NO_SAMPLE).then(|| f64::from_bits(bits))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_estimate_has_no_tail() {
        let latency = Latency::default();
        assert_eq!(
            (latency.tail_ms(), latency.mean_ms(), latency.samples()),
            (None, None, 0)
        );
    }

    #[test]
    fn steady_latency_has_a_tail_equal_to_it() {
        let latency = Latency::default();
        for _ in 0..50 {
            latency.record(100.0, Some(20.0));
        }
        assert_eq!(latency.tail_ms(), Some(100.0));
        assert_eq!(latency.ttft_ms(), Some(20.0));
        assert_eq!(latency.samples(), 50);
    }

    #[test]
    fn tail_sits_above_the_mean_of_a_spread() {
        let latency = Latency::default();
        for i in 0..200 {
            latency.record(if i % 2 == 0 { 80.0 } else { 120.0 }, None);
        }
        let (mean, tail) = (latency.mean_ms().unwrap(), latency.tail_ms().unwrap());
        assert!((95.0..105.0).contains(&mean), "{mean}");
        // The average swings between about 97.8 and 102.2 ms, so every sample
        // lands about 22 ms from it and the deviation settles there.
        assert!((140.0..150.0).contains(&tail), "{tail}");
    }

    #[test]
    fn tail_follows_a_step_change() {
        let latency = Latency::default();
        for _ in 0..50 {
            latency.record(100.0, None);
        }
        // The jump itself widens the deviation, so the tail overshoots at once…
        latency.record(1_000.0, None);
        assert!(latency.tail_ms().unwrap() > 600.0);
        for _ in 0..30 {
            latency.record(1_000.0, None);
        }
        // …then settles within 5 % of the new level as the deviation decays.
        let tail = latency.tail_ms().unwrap();
        assert!((950.0..1_050.0).contains(&tail), "{tail}");
    }

    #[test]
    fn invalid_samples_are_skipped() {
        let latency = Latency::default();
        latency.record(f64::NAN, Some(f64::INFINITY));
        latency.record(-1.0, Some(-1.0));
        assert_eq!(
            (latency.mean_ms(), latency.ttft_ms(), latency.samples()),
            (None, None, 0)
        );
        latency.record(10.0, None);
        assert_eq!(latency.mean_ms(), Some(10.0));
    }
}
