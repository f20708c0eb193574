//! Distributions of what the service measures (attempt durations, times to
//! first token, tokens, whole calls), kept as histograms of atomic counters so
//! that recording takes no lock and the host's processes can share them in
//! their region (see `state`): a scrape or a stats call of any one of them
//! shows the host.
//!
//! Durations are kept at a quarter of an octave, fine enough for percentiles
//! within about 10%; exporters take them at the OpenTelemetry GenAI
//! conventions' coarser advisory bounds (every fourth fine bound), which
//! [`Distribution::at_bounds`] sums them to.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::LazyLock;

use crate::health::OutcomeClass;
use crate::state::Payload;

mod calls;
#[cfg(test)]
mod tests;

pub(crate) use calls::CallCounters;
pub use calls::{CallMeasures, Extra, CALL_METHODS, GRPC_STATUSES};

/// The GenAI conventions' advisory bounds for durations, in seconds.
pub const DURATION_BOUNDS_S: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
/// The GenAI conventions' advisory bounds for token counts: powers of 4.
pub const TOKEN_BOUNDS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];

/// Fine duration bounds below the conventions' first (10 ms): down to 0.625 ms.
const FINE_BELOW: usize = 16;
const FINE_BOUNDS: usize = FINE_BELOW + 4 * (DURATION_BOUNDS_S.len() - 1) + 1;
/// Quarter-octave duration bounds in seconds, 0.625 ms to 81.92 s; every
/// fourth from the sixteenth on is one of `DURATION_BOUNDS_S`.
pub static FINE_DURATION_BOUNDS_S: LazyLock<[f64; FINE_BOUNDS]> = LazyLock::new(|| {
    std::array::from_fn(|i| {
        let quarter = i as i32 - FINE_BELOW as i32;
        if quarter >= 0 && quarter % 4 == 0 {
            // Exactly the conventions' bound, not a power computed to within a rounding.
            DURATION_BOUNDS_S[(quarter / 4) as usize]
        } else {
            0.01 * 2f64.powf(f64::from(quarter) / 4.0)
        }
    })
});

/// Counts of values per bucket (bucket `i` holds values up to `bounds[i]`,
/// above the previous bound; the last holds those above every bound) and
/// their sum, in millionths of the unit for durations, whole for tokens.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct Histogram<const BUCKETS: usize> {
    counts: [AtomicU64; BUCKETS],
    sum: AtomicU64,
}

impl<const BUCKETS: usize> Default for Histogram<BUCKETS> {
    fn default() -> Self {
        Histogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum: AtomicU64::new(0),
        }
    }
}

/// How a histogram's sum is kept: durations in microseconds, counts whole.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Unit {
    Seconds,
    Count,
}

impl Unit {
    fn scale(self) -> f64 {
        match self {
            Unit::Seconds => 1e6,
            Unit::Count => 1.0,
        }
    }
}

impl<const BUCKETS: usize> Histogram<BUCKETS> {
    /// The counters are independent statistics: relaxed ordering suffices.
    pub(crate) fn record(&self, bounds: &[f64], unit: Unit, value: f64) {
        debug_assert_eq!(bounds.len() + 1, BUCKETS);
        let bucket = bounds.partition_point(|&bound| bound < value);
        self.counts[bucket].fetch_add(1, Relaxed);
        // Saturating float-to-int and a saturating add: a negative or absurd value cannot wrap the sum.
        let add = (value * unit.scale()).round() as u64;
        let _ = self
            .sum
            .fetch_update(Relaxed, Relaxed, |sum| Some(sum.saturating_add(add)));
    }

    pub(crate) fn snapshot(&self, bounds: &'static [f64], unit: Unit) -> Distribution {
        Distribution {
            bounds,
            counts: self.counts.iter().map(|c| c.load(Relaxed)).collect(),
            sum: self.sum.load(Relaxed) as f64 / unit.scale(),
        }
    }
}

// Safety: atomics of plain integers; all zero is nothing recorded.
unsafe impl<const BUCKETS: usize> Payload for Histogram<BUCKETS> {}

pub(crate) type Fine = Histogram<{ FINE_BOUNDS + 1 }>;
pub(crate) type Coarse = Histogram<{ DURATION_BOUNDS_S.len() + 1 }>;

/// A histogram read at one moment (each counter separately: it may straddle
/// a concurrent record).
#[derive(Debug, Clone, PartialEq)]
pub struct Distribution {
    pub bounds: &'static [f64],
    /// One more than `bounds`: the last counts values above every bound.
    pub counts: Vec<u64>,
    pub sum: f64,
}

/// Bounds that are not a subset of a distribution's own.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("bound {0} is not one of the distribution's")]
pub struct NotABound(pub f64);

impl Distribution {
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The value below which a share `q` (0 to 1) of the values fall, by
    /// linear interpolation within its bucket (from 0 for the first); the
    /// last bound when it falls above every bound; None when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let count = self.count();
        if count == 0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let rank = (q * count as f64).max(1.0);
        let mut below = 0u64;
        for (i, &n) in self.counts.iter().enumerate() {
            if n > 0 && (below + n) as f64 >= rank {
                let Some(&upper) = self.bounds.get(i) else {
                    return self.bounds.last().copied();
                };
                let lower = if i == 0 { 0.0 } else { self.bounds[i - 1] };
                let within = (rank - below as f64) / n as f64;
                return Some(lower + (upper - lower) * within);
            }
            below += n;
        }
        self.bounds.last().copied()
    }

    /// The same values counted at `bounds`, each of which must be one of
    /// this distribution's bounds.
    pub fn at_bounds(&self, bounds: &'static [f64]) -> Result<Distribution, NotABound> {
        let mut counts = vec![0u64; bounds.len() + 1];
        let mut target = 0;
        for (i, &n) in self.counts.iter().enumerate() {
            let own = self.bounds.get(i).copied().unwrap_or(f64::INFINITY);
            while target < bounds.len() && bounds[target] < own {
                if !self.bounds.contains(&bounds[target]) {
                    return Err(NotABound(bounds[target]));
                }
                target += 1;
            }
            counts[target] += n;
        }
        if let Some(&missing) = bounds[target..].iter().find(|b| !self.bounds.contains(b)) {
            return Err(NotABound(missing));
        }
        Ok(Distribution {
            bounds,
            counts,
            sum: self.sum,
        })
    }
}

/// Failure classes: every outcome class but `Ok`, in `OutcomeClass::ALL` order.
const FAILURES: usize = OutcomeClass::ALL.len() - 1;

/// A deployment's durations: of successful attempts and their first tokens
/// finely, of failures coarsely, one histogram per failure class.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct Durations {
    ok: Fine,
    first_token: Fine,
}

#[repr(C)]
#[derive(Debug)]
pub(crate) struct FailedDurations([Coarse; FAILURES]);

impl Default for FailedDurations {
    fn default() -> Self {
        FailedDurations(std::array::from_fn(|_| Coarse::default()))
    }
}

// Safety: histograms of atomics; all zero is nothing recorded.
unsafe impl Payload for Durations {}
unsafe impl Payload for FailedDurations {}

impl Durations {
    pub(crate) fn record(&self, latency_s: f64, first_token_s: Option<f64>) {
        let bounds = &FINE_DURATION_BOUNDS_S[..];
        self.ok.record(bounds, Unit::Seconds, latency_s);
        if let Some(first) = first_token_s {
            self.first_token.record(bounds, Unit::Seconds, first);
        }
    }

    pub(crate) fn snapshot(&self) -> (Distribution, Distribution) {
        let bounds = &FINE_DURATION_BOUNDS_S[..];
        (
            self.ok.snapshot(bounds, Unit::Seconds),
            self.first_token.snapshot(bounds, Unit::Seconds),
        )
    }
}

impl FailedDurations {
    pub(crate) fn record(&self, class: OutcomeClass, latency_s: f64) {
        if let Some(index) = (class as usize).checked_sub(1) {
            self.0[index].record(&DURATION_BOUNDS_S, Unit::Seconds, latency_s);
        }
    }

    /// Per failure class that has any.
    pub(crate) fn snapshot(&self) -> Vec<(OutcomeClass, Distribution)> {
        OutcomeClass::ALL[1..]
            .iter()
            .zip(&self.0)
            .map(|(&class, histogram)| {
                (class, histogram.snapshot(&DURATION_BOUNDS_S, Unit::Seconds))
            })
            .filter(|(_, distribution)| distribution.count() > 0)
            .collect()
    }
}
