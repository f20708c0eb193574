//! How a policy or model group orders the deployments that survived the filters.
//!
//! `weighted`, `priority` and `round_robin` are drawn one candidate at a time
//! (see `router::draw`). The measured strategies sort on what the router knows
//! of each candidate ([`Signals`]) and break ties with an Efraimidis–Spirakis
//! weighted random key: each candidate draws `u` uniform in (0, 1] and gets
//! the key `ln(u) / weight` (the order of `u^(1/weight)`, without `powf`
//! underflowing to 0 for small weights), so that among equals a deployment
//! comes first with probability `weight / sum(weights)`.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;

use crate::config::ScoringConfig;
use crate::router::Candidate;
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

#[derive(Debug, Clone, Copy)]
pub(crate) struct Survivor<'t> {
    pub(crate) deployment: &'t Deployment,
    pub(crate) signals: Signals,
}

/// Per-decision inputs of the ordering beyond the candidates themselves.
pub(crate) struct OrderContext<'a> {
    pub(crate) rng: &'a mut SplitMix64,
    pub(crate) scoring: &'a ScoringConfig,
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

    /// Appends `survivors` to `out`, best first, for the measured strategies
    /// (the others are drawn one at a time, never ordered whole). `survivors`
    /// must come in `member_order`; random numbers are drawn in that order, so
    /// a fixed seed gives a fixed decision.
    pub(crate) fn order(
        self,
        survivors: &[Survivor<'_>],
        ctx: &mut OrderContext<'_>,
        out: &mut Vec<Candidate>,
    ) {
        match self {
            Strategy::Weighted | Strategy::Priority | Strategy::RoundRobin => {
                unreachable!("{} is drawn one candidate at a time", self.as_str())
            }
            Strategy::LeastInFlight => order_by(
                survivors,
                ctx.rng,
                out,
                |s| s.in_flight as f64,
                |best, v| (1.0 + best) / (1.0 + v),
            ),
            Strategy::LowestCost => order_by(survivors, ctx.rng, out, |s| s.cost_usd, ratio_score),
            Strategy::LowestLatency => {
                let fastest = survivors
                    .iter()
                    .filter_map(|s| s.signals.tail_latency_ms)
                    .fold(f64::INFINITY, f64::min);
                let optimistic = if fastest.is_finite() { fastest } else { 0.0 };
                order_by(
                    survivors,
                    ctx.rng,
                    out,
                    |s| s.tail_latency_ms.unwrap_or(optimistic),
                    ratio_score,
                )
            }
            Strategy::UsageHeadroom => {
                order_by(survivors, ctx.rng, out, |s| -s.headroom, |_, v| -v)
            }
            Strategy::Balanced => order_balanced(survivors, ctx, out),
        }
    }
}

/// A candidate in tier 0: the router numbers the tier once the tier is ordered.
fn candidate(deployment: &Deployment, score: f64) -> Candidate {
    Candidate {
        deployment: deployment.id.clone(),
        score,
        tier: 0,
    }
}

/// The log of the Efraimidis–Spirakis key: higher sorts first.
fn random_key(rng: &mut SplitMix64, deployment: &Deployment) -> f64 {
    rng.next_unit().ln() / deployment.weight
}

/// `best / value` for "lower is better" measures, 1.0 when both are zero.
fn ratio_score(best: f64, value: f64) -> f64 {
    if value <= 0.0 {
        1.0
    } else {
        best / value
    }
}

/// Sorts ascending by `measure` (ties in weighted random order) and scores
/// each candidate with `score(best_measure, its_measure)`.
fn order_by(
    survivors: &[Survivor<'_>],
    rng: &mut SplitMix64,
    out: &mut Vec<Candidate>,
    measure: impl Fn(&Signals) -> f64,
    score: impl Fn(f64, f64) -> f64,
) {
    let start = out.len();
    let mut keys: Vec<(f64, f64)> = Vec::with_capacity(survivors.len());
    for survivor in survivors {
        keys.push((
            measure(&survivor.signals),
            random_key(rng, survivor.deployment),
        ));
        out.push(candidate(survivor.deployment, 0.0));
    }
    let mut positions: Vec<usize> = (0..survivors.len()).collect();
    positions.sort_unstable_by(|&a, &b| {
        keys[a]
            .0
            .total_cmp(&keys[b].0)
            .then(keys[b].1.total_cmp(&keys[a].1))
    });
    let best = positions.first().map_or(0.0, |&p| keys[p].0);
    for (slot, &p) in positions.iter().enumerate() {
        out[start + slot] = candidate(survivors[p].deployment, score(best, keys[p].0));
    }
}

fn order_balanced(
    survivors: &[Survivor<'_>],
    ctx: &mut OrderContext<'_>,
    out: &mut Vec<Candidate>,
) {
    let weights = ctx.scoring;
    let total = weights.cost + weights.latency + weights.errors + weights.load + weights.headroom;
    let max_of =
        |f: &dyn Fn(&Signals) -> f64| survivors.iter().map(|s| f(&s.signals)).fold(0.0, f64::max);
    let max_cost = max_of(&|s| s.cost_usd);
    let max_latency = max_of(&|s| s.tail_latency_ms.unwrap_or(0.0));
    let max_load = max_of(&|s| s.in_flight as f64);
    let share = |value: f64, max: f64| if max > 0.0 { value / max } else { 0.0 };
    let start = out.len();
    for survivor in survivors {
        let s = &survivor.signals;
        let penalty = weights.cost * share(s.cost_usd, max_cost)
            + weights.latency * share(s.tail_latency_ms.unwrap_or(0.0), max_latency)
            + weights.errors * s.error_rate
            + weights.load * share(s.in_flight as f64, max_load)
            + weights.headroom * (1.0 - s.headroom);
        let score = if total > 0.0 {
            1.0 - penalty / total
        } else {
            1.0
        };
        // Ties between equal scores fall to the weighted random key.
        let tie = random_key(ctx.rng, survivor.deployment) * 1e-12;
        out.push(candidate(survivor.deployment, score + tie));
    }
    let ranked = &mut out[start..];
    ranked.sort_unstable_by(|a, b| b.score.total_cmp(&a.score));
    let n = ranked.len();
    if n >= 2 {
        let first = if ctx.rng.next_unit() <= weights.exploration {
            ctx.rng.next_u64() as usize % n
        } else {
            // Two distinct draws; the better (lower index in the sorted run) leads.
            let a = ctx.rng.next_u64() as usize % n;
            let b = (a + 1 + ctx.rng.next_u64() as usize % (n - 1)) % n;
            a.min(b)
        };
        ranked[..=first].rotate_right(1);
    }
    for candidate in ranked {
        candidate.score = candidate.score.clamp(0.0, 1.0);
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
