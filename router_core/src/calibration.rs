//! Per-deployment calibration of the input-token estimate. A provider counts
//! a request with its own tokenizer and framing, so its count differs from the
//! estimate by a roughly steady factor; each deployment learns that factor
//! from the usage its successful attempts report, and scales the estimate by it
//! where the estimate meets that deployment: the context-window filter and the
//! rate-limit reservation.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use crate::state::{Payload, Place, Region};

/// Weight of the newest ratio, for an attempt of [`FULL_WEIGHT_TOKENS`]
/// estimated input tokens or more.
pub const CALIBRATION_ALPHA: f64 = 0.1;
/// Smaller attempts weigh in proportionally less: their count is mostly fixed
/// framing, which says little about how the provider counts a long prompt.
pub const FULL_WEIGHT_TOKENS: u32 = 1_000;
/// The ratio stays within this range, whatever a provider reports.
pub const MIN_INPUT_TOKEN_RATIO: f64 = 0.25;
pub const MAX_INPUT_TOKEN_RATIO: f64 = 4.0;

/// A moving average of (reported input tokens / estimated input tokens),
/// updated by compare-and-swap; 1.0 until the first report. This process's
/// own, or in a region the host's processes share (see `state`).
#[derive(Debug, Default)]
pub(crate) struct Calibration(Place<Ratio>);

/// The ratio's `f64` bits XOR those of 1.0, so that zero (a fresh, zeroed
/// slot) is a ratio of 1.0.
#[repr(transparent)]
#[derive(Debug, Default)]
pub(crate) struct Ratio(AtomicU64);

// Safety: an atomic integer; zero is the ratio 1.0.
unsafe impl Payload for Ratio {}

const ONE: u64 = 1.0f64.to_bits();

impl Calibration {
    /// Deployment `id`'s calibration: in `region` when there is one with a
    /// slot for it, else this process's own.
    pub(crate) fn at(region: Option<&Arc<Region>>, id: &str) -> Self {
        Calibration(Place::at(region, &format!("calibration/{id}")))
    }

    fn bits(&self) -> &AtomicU64 {
        &self.0 .0
    }

    pub(crate) fn ratio(&self) -> f64 {
        f64::from_bits(self.bits().load(Relaxed) ^ ONE)
    }

    /// `estimate` as this deployment counts it.
    pub(crate) fn apply(&self, estimate: u32) -> u32 {
        scale(estimate, self.ratio())
    }

    /// Folds in one attempt's ratio; a no-op unless both counts are known.
    pub(crate) fn observe(&self, estimated: u32, reported: u32) {
        if estimated == 0 || reported == 0 {
            return;
        }
        let sample = clamp(f64::from(reported) / f64::from(estimated));
        let weight = CALIBRATION_ALPHA * f64::from(estimated.min(FULL_WEIGHT_TOKENS))
            / f64::from(FULL_WEIGHT_TOKENS);
        // The closure always returns `Some`, so `fetch_update` cannot fail.
        let _ = self.bits().fetch_update(Relaxed, Relaxed, |stored| {
            let old = f64::from_bits(stored ^ ONE);
            Some(clamp(old + weight * (sample - old)).to_bits() ^ ONE)
        });
    }
}

/// `estimate × ratio` to the nearest token (saturating at `u32::MAX`).
pub(crate) fn scale(estimate: u32, ratio: f64) -> u32 {
    if ratio == 1.0 {
        estimate
    } else {
        // A float-to-int `as` saturates.
        (f64::from(estimate) * ratio).round() as u32
    }
}

fn clamp(ratio: f64) -> f64 {
    ratio.clamp(MIN_INPUT_TOKEN_RATIO, MAX_INPUT_TOKEN_RATIO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn starts_at_one_and_moves_toward_reported_counts() {
        let calibration = Calibration::default();
        assert_eq!(
            (calibration.ratio(), calibration.apply(5_000)),
            (1.0, 5_000)
        );
        calibration.observe(5_000, 10_000);
        assert!((calibration.ratio() - 1.1).abs() < 1e-12);
        assert_eq!(calibration.apply(5_000), 5_500);
        assert_eq!(calibration.apply(5), 6);
        for _ in 0..100 {
            calibration.observe(5_000, 10_000);
        }
        assert!((calibration.ratio() - 2.0).abs() < 1e-4);
    }

    #[test]
    fn small_attempts_weigh_less() {
        let calibration = Calibration::default();
        calibration.observe(100, 200);
        assert!((calibration.ratio() - 1.01).abs() < 1e-12);
    }

    #[test]
    fn unknown_counts_change_nothing() {
        let calibration = Calibration::default();
        calibration.observe(0, 5_000);
        calibration.observe(5_000, 0);
        assert_eq!(calibration.ratio(), 1.0);
    }

    #[test]
    fn scaling_rounds_and_saturates() {
        assert_eq!((scale(3, 1.5), scale(3, 1.4)), (5, 4));
        assert_eq!(scale(u32::MAX, 4.0), u32::MAX);
        assert_eq!(scale(0, 4.0), 0);
    }

    proptest! {
        #[test]
        fn the_ratio_never_leaves_its_clamp(
            reports in proptest::collection::vec((0u32.., 0u32..), 1..200)
        ) {
            let calibration = Calibration::default();
            for (estimated, reported) in reports {
                calibration.observe(estimated, reported);
                let ratio = calibration.ratio();
                prop_assert!((MIN_INPUT_TOKEN_RATIO..=MAX_INPUT_TOKEN_RATIO).contains(&ratio));
            }
        }
    }
}
