//! A lock-free estimate of a deployment's latency tail, in the manner of TCP's
//! retransmission timer (RFC 6298): a moving average of latency and of its
//! absolute deviation from that average. `mean + 2 · deviation` sits near the
//! 95th percentile for a roughly normal spread (the mean absolute deviation is
//! about 0.8 σ), needs no sample buffer, and follows a step change within a
//! few dozen samples. Time to first token gets the same pair of averages:
//! its tail is how long a stream's first attempt may go silent before the
//! gateway hedges it.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::stats::EWMA_ALPHA;

/// What an average holds before its first sample: zero, so that a zeroed
/// slot of a shared region (see `state`) is an empty estimate. Values are
/// stored as their bits XOR all ones, and all ones is a NaN, which an average
/// fed only finite samples can never hold.
const NO_SAMPLE: u64 = 0;

/// How many deviations above the mean the tail estimate sits.
const TAIL_DEVIATIONS: f64 = 2.0;

/// Each field is updated on its own, so a reader racing a writer may pair a
/// new mean with an old deviation; an estimate off by one sample is harmless.
/// All zero is an empty estimate.
#[repr(C)]
#[derive(Debug)]
pub(super) struct Latency {
    mean_ms: Ewma,
    deviation_ms: Ewma,
    ttft_ms: Ewma,
    ttft_deviation_ms: Ewma,
    /// Samples since the estimate was last judged (see `forget_samples`).
    samples: AtomicU64,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            mean_ms: Ewma::empty(),
            deviation_ms: Ewma::empty(),
            ttft_ms: Ewma::empty(),
            ttft_deviation_ms: Ewma::empty(),
            samples: AtomicU64::new(0),
        }
    }
}

impl Latency {
    /// Non-finite or negative samples are skipped: one would poison the
    /// averages for good. (`Router::record` already rejects them.)
    pub(super) fn record(&self, latency_ms: f64, ttft_ms: Option<f64>) {
        if valid(latency_ms) {
            fold(&self.mean_ms, &self.deviation_ms, latency_ms);
            self.samples.fetch_add(1, Relaxed);
        }
        if let Some(ttft) = ttft_ms.filter(|&t| valid(t)) {
            fold(&self.ttft_ms, &self.ttft_deviation_ms, ttft);
        }
    }

    pub(super) fn tail_ms(&self) -> Option<f64> {
        tail(&self.mean_ms, &self.deviation_ms)
    }

    pub(super) fn ttft_tail_ms(&self) -> Option<f64> {
        tail(&self.ttft_ms, &self.ttft_deviation_ms)
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
            (&self.ttft_deviation_ms, &other.ttft_deviation_ms),
        ] {
            to.0.store(from.0.load(Relaxed), Relaxed);
        }
        self.samples.store(other.samples(), Relaxed);
    }
}

fn valid(ms: f64) -> bool {
    ms.is_finite() && ms >= 0.0
}

/// Folds `sample` into a mean and its deviation from the mean as it was.
fn fold(mean: &Ewma, deviation: &Ewma, sample: f64) {
    let distance = match mean.update(sample) {
        Some(previous) => (sample - previous).abs(),
        None => 0.0,
    };
    deviation.update(distance);
}

fn tail(mean: &Ewma, deviation: &Ewma) -> Option<f64> {
    Some(mean.get()? + TAIL_DEVIATIONS * deviation.get().unwrap_or(0.0))
}

/// An exponentially weighted moving average in `f64` bits, updated by
/// compare-and-swap.
#[repr(transparent)]
#[derive(Debug)]
struct Ewma(AtomicU64);

impl Ewma {
    fn empty() -> Self {
        Ewma(AtomicU64::new(NO_SAMPLE))
    }

    fn get(&self) -> Option<f64> {
        decode(self.0.load(Relaxed))
    }

    /// Folds in `sample` (the first one seeds the average); returns the
    /// average as it was before.
    fn update(&self, sample: f64) -> Option<f64> {
        // The closure always returns `Some`, so `fetch_update` cannot fail.
        let previous = self.0.fetch_update(Relaxed, Relaxed, |stored| {
            let next = match decode(stored) {
                None => sample,
                Some(old) => old + EWMA_ALPHA * (sample - old),
            };
            Some(encode(next))
        });
        decode(previous.unwrap_or_else(|stored| stored))
    }
}

fn encode(value: f64) -> u64 {
    value.to_bits() ^ u64::MAX
}

fn decode(stored: u64) -> Option<f64> {
    (stored != NO_SAMPLE).then(|| f64::from_bits(stored ^ u64::MAX))
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
        assert_eq!((latency.ttft_ms(), latency.ttft_tail_ms()), (None, None));
    }

    #[test]
    fn latency_without_ttft_leaves_no_ttft_tail() {
        let latency = Latency::default();
        latency.record(100.0, None);
        assert_eq!(latency.ttft_tail_ms(), None);
        assert_eq!(latency.tail_ms(), Some(100.0));
    }

    #[test]
    fn steady_latency_has_a_tail_equal_to_it() {
        let latency = Latency::default();
        for _ in 0..50 {
            latency.record(100.0, Some(20.0));
        }
        assert_eq!(latency.tail_ms(), Some(100.0));
        assert_eq!(latency.ttft_ms(), Some(20.0));
        assert_eq!(latency.ttft_tail_ms(), Some(20.0));
        assert_eq!(latency.samples(), 50);
    }

    #[test]
    fn ttft_tail_sits_above_the_mean_of_a_spread() {
        let latency = Latency::default();
        for i in 0..200 {
            latency.record(500.0, Some(if i % 2 == 0 { 40.0 } else { 60.0 }));
        }
        let (mean, tail) = (latency.ttft_ms().unwrap(), latency.ttft_tail_ms().unwrap());
        assert!((45.0..55.0).contains(&mean), "{mean}");
        // As for latency: each sample lands about 11 ms from the swinging average.
        assert!((70.0..75.0).contains(&tail), "{tail}");
        assert_eq!(
            latency.tail_ms(),
            Some(500.0),
            "the two estimates are apart"
        );
    }

    #[test]
    fn copy_from_carries_the_ttft_tail() {
        let latency = Latency::default();
        latency.record(100.0, Some(10.0));
        latency.record(100.0, Some(30.0));
        let copy = Latency::default();
        copy.copy_from(&latency);
        assert_eq!(copy.ttft_tail_ms(), latency.ttft_tail_ms());
        assert!(copy.ttft_tail_ms().unwrap() > copy.ttft_ms().unwrap());
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
