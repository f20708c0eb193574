//! How a policy or model group orders the deployments that survived the filters.
//!
//! `weighted`, `priority` and `round_robin` are drawn one candidate at a time
//! (see `router::draw`); the measured strategies rank what the router knows of
//! each candidate ([`Signals`]; see `ranking`).

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;

use crate::table::Deployment;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Weighted random order: each candidate is drawn in proportion to its
    /// weight among those not drawn yet. Its score is the share of the tier's
    /// weight still undrawn when it was drawn (1.0 for the first, falling).
    #[default]
    Weighted,
    /// Ascending `priority`, ties broken by weighted random order; a
    /// candidate's score is `1 / (1 + priority)`, so 1.0 is the most preferred
    /// tier and scores fall as priority numbers grow.
    Priority,
    /// Each decision starts one further along the candidates; score `1 - position / n`.
    RoundRobin,
    /// Fewest attempts in flight first; score `1 / (1 + in_flight)`.
    LeastInFlight,
    /// Cheapest estimated cost for this request first; score `cheapest / cost`.
    LowestCost,
    /// Lowest tail-latency estimate first (unmeasured ones count as the
    /// fastest, so they get measured); score `fastest / tail`.
    LowestLatency,
    /// Most rate-limit budget left first; score = headroom in [0, 1].
    UsageHeadroom,
    /// A weighted blend of cost, tail latency, error rate, load and headroom
    /// (see `ScoringConfig`); the first candidate is the better of two drawn
    /// at random (power of two choices, so replicas do not all herd onto the
    /// best), or, for an `exploration` share of decisions, any at random.
    Balanced,
}

/// What the router knows of one candidate when it orders them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Signals {
    /// Estimated cost of this request here, in USD.
    pub(crate) cost_usd: f64,
    /// `None` until the deployment has been measured.
    pub(crate) tail_latency_ms: Option<f64>,
    /// Recent share of failed attempts, in [0, 1].
    pub(crate) error_rate: f64,
    pub(crate) in_flight: u64,
    /// Rate-limit budget left, in [0, 1].
    pub(crate) headroom: f64,
}

impl Default for Signals {
    fn default() -> Self {
        Signals {
            cost_usd: 0.0,
            tail_latency_ms: None,
            error_rate: 0.0,
            in_flight: 0,
            headroom: 1.0,
        }
    }
}

/// The [`Signals`] a strategy reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Needs {
    pub(crate) cost: bool,
    pub(crate) latency: bool,
    pub(crate) errors: bool,
    pub(crate) load: bool,
    pub(crate) headroom: bool,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Weighted => "weighted",
            Strategy::Priority => "priority",
            Strategy::RoundRobin => "round_robin",
            Strategy::LeastInFlight => "least_in_flight",
            Strategy::LowestCost => "lowest_cost",
            Strategy::LowestLatency => "lowest_latency",
            Strategy::UsageHeadroom => "usage_headroom",
            Strategy::Balanced => "balanced",
        }
    }

    /// Which signals this strategy reads; the router measures only those,
    /// since some (error rate, headroom) take a lock per candidate.
    pub(crate) fn needs(self) -> Needs {
        let none = Needs::default();
        match self {
            Strategy::Weighted | Strategy::Priority | Strategy::RoundRobin => none,
            Strategy::LeastInFlight => Needs { load: true, ..none },
            Strategy::LowestCost => Needs { cost: true, ..none },
            Strategy::LowestLatency => Needs {
                latency: true,
                ..none
            },
            Strategy::UsageHeadroom => Needs {
                headroom: true,
                ..none
            },
            Strategy::Balanced => Needs {
                cost: true,
                latency: true,
                errors: true,
                load: true,
                headroom: true,
            },
        }
    }

    /// Candidates of equal rank are shuffled among themselves; lower ranks come first.
    pub(crate) fn rank(self, deployment: &Deployment) -> u32 {
        match self {
            Strategy::Priority => deployment.priority,
            _ => 0,
        }
    }

    /// Sorts members by rank once, at compile time, so that equal ranks are
    /// contiguous when routing.
    pub(crate) fn member_order(self, members: &mut [usize], deployments: &[Deployment]) {
        members.sort_by_key(|&i| self.rank(&deployments[i]));
    }
}

/// SplitMix64 (Steele, Lea & Flood 2014): tiny, fast and statistically sound
/// for shuffling; not for anything adversarial.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN_GAMMA);
        mix64(self.0)
    }

    /// Uniform in (0, 1]: never 0, so `ln` stays finite.
    pub(crate) fn next_unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Next value of a SplitMix64 stream whose state is shared by all threads:
/// one `fetch_add` per request, no lock.
pub(crate) fn next_shared_seed(state: &AtomicU64) -> u64 {
    mix64(
        state
            .fetch_add(GOLDEN_GAMMA, Ordering::Relaxed)
            .wrapping_add(GOLDEN_GAMMA),
    )
}

pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_draws_stay_in_half_open_interval() {
        let mut rng = SplitMix64::new(7);
        assert!((0..100_000)
            .map(|_| rng.next_unit())
            .all(|u| u > 0.0 && u <= 1.0));
    }

    #[test]
    fn shared_seeds_differ() {
        let state = AtomicU64::new(0);
        assert_ne!(next_shared_seed(&state), next_shared_seed(&state));
    }
}
