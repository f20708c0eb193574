//! The measured strategies' order, made as lazily as it can be: every
//! survivor's random tie-break is drawn when the tier is reached, but only the
//! leader is found then; the rest are sorted when a fallback asks past it.
//! `balanced` reads the signals that take a lock (error rate, headroom) only of
//! the two survivors its power of two choices draws, and of the others when a
//! fallback asks for them: its normalisation needs only the lock-free ones.
//!
//! Ties between equal measures fall to an Efraimidis–Spirakis weighted random
//! key: each survivor draws `u` uniform in (0, 1] and gets the key
//! `ln(u) / weight` (the order of `u^(1/weight)`, without `powf` underflowing to
//! 0 for small weights), so that among equals a deployment comes first with
//! probability `weight / sum(weights)`. The logarithm is taken only when a tie
//! between different weights has to be broken.

use std::cmp::Ordering;

use crate::config::ScoringConfig;
use crate::strategy::{Signals, SplitMix64, Strategy};

/// One survivor of a tier, as the ranking sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entrant {
    /// Its index in the table's deployments.
    pub(crate) deployment: usize,
    pub(crate) weight: f64,
    pub(crate) signals: Signals,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    deployment: usize,
    weight: f64,
    /// Lower ranks first.
    value: f64,
    /// The candidate's score, in [0, 1].
    score: f64,
    /// The uniform draw behind its tie-break key.
    draw: u64,
    /// `balanced` only: the weighted penalty of its lock-free signals, until
    /// the others are read and `value` and `score` are known.
    pending: Option<f64>,
}

/// Reads a survivor's error rate and headroom (the signals that take a lock),
/// by its index in the table's deployments.
pub(crate) type ReadLocked<'a> = &'a mut dyn FnMut(usize) -> (f64, f64);

impl Entry {
    fn key(&self) -> f64 {
        unit(self.draw).ln() / self.weight
    }

    /// Which key is higher: between equal weights the draws' order decides,
    /// with no logarithm taken (the key grows with the draw).
    fn cmp_key(&self, other: &Entry) -> Ordering {
        if self.weight == other.weight {
            (self.draw >> 11).cmp(&(other.draw >> 11))
        } else {
            self.key().total_cmp(&other.key())
        }
    }
}

/// Uniform in (0, 1]: never 0, so `ln` stays finite (as [`SplitMix64::next_unit`]).
fn unit(draw: u64) -> f64 {
    ((draw >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Lower value first, then the higher key, then config order.
fn rank(a: &Entry, b: &Entry) -> Ordering {
    a.value
        .total_cmp(&b.value)
        .then_with(|| b.cmp_key(a))
        .then(a.deployment.cmp(&b.deployment))
}

#[derive(Debug)]
pub(crate) struct Ranking {
    entries: Vec<Entry>,
    scoring: ScoringConfig,
    /// Entries that come first, in order: the session's deployment, the strategy's leader.
    heads: Vec<usize>,
    emitted_heads: usize,
    /// The other entries in rank order, once a decision asks past the heads.
    rest: Option<std::vec::IntoIter<usize>>,
}

impl Ranking {
    /// Ranks `entrants` (in member order: random numbers are drawn in that
    /// order, so a fixed seed gives a fixed decision) for a measured `strategy`.
    pub(crate) fn new(
        strategy: Strategy,
        entrants: &[Entrant],
        rng: &mut SplitMix64,
        scoring: &ScoringConfig,
        read_locked: ReadLocked<'_>,
    ) -> Ranking {
        let (values, scores, pending) = measure(strategy, entrants, scoring);
        let entries: Vec<Entry> = (entrants.iter().enumerate())
            .map(|(i, entrant)| Entry {
                deployment: entrant.deployment,
                weight: entrant.weight,
                value: values[i],
                score: scores[i],
                draw: rng.next_u64(),
                pending: pending.as_ref().map(|p| p[i]),
            })
            .collect();
        let mut ranking = Ranking {
            entries,
            scoring: scoring.clone(),
            heads: Vec::with_capacity(2),
            emitted_heads: 0,
            rest: None,
        };
        let n = ranking.entries.len();
        let leader = match strategy {
            _ if n == 0 => None,
            Strategy::Balanced if n >= 2 => {
                // The better of two distinct survivors drawn at random (power of
                // two choices), or for an exploration share any survivor.
                Some(if rng.next_unit() <= scoring.exploration {
                    rng.next_u64() as usize % n
                } else {
                    let a = rng.next_u64() as usize % n;
                    let b = (a + 1 + rng.next_u64() as usize % (n - 1)) % n;
                    ranking.settle(a, read_locked);
                    ranking.settle(b, read_locked);
                    match rank(&ranking.entries[a], &ranking.entries[b]) {
                        Ordering::Greater => b,
                        _ => a,
                    }
                })
            }
            Strategy::Balanced => Some(0),
            _ => (0..n).min_by(|&a, &b| rank(&ranking.entries[a], &ranking.entries[b])),
        };
        ranking.heads.extend(leader);
        ranking
    }

    /// Completes a `balanced` entry's score with the signals that take a lock.
    fn settle(&mut self, position: usize, read_locked: ReadLocked<'_>) {
        let entry = &mut self.entries[position];
        let Some(partial) = entry.pending.take() else {
            return;
        };
        let (error_rate, headroom) = read_locked(entry.deployment);
        let weights = &self.scoring;
        let penalty = partial + weights.errors * error_rate + weights.headroom * (1.0 - headroom);
        let total = weights.total();
        let score = if total > 0.0 {
            1.0 - penalty / total
        } else {
            1.0
        };
        entry.value = -score;
        entry.score = score.clamp(0.0, 1.0);
    }

    /// The deployment indices of the entrants, in member order.
    pub(crate) fn deployments(&self) -> impl Iterator<Item = usize> + '_ {
        self.entries.iter().map(|e| e.deployment)
    }

    /// Puts the entrant at `position` (in member order) first.
    pub(crate) fn lead_with(&mut self, position: usize) {
        self.heads.retain(|&h| h != position);
        self.heads.insert(0, position);
    }

    /// The next deployment index and its score, best first.
    pub(crate) fn next(&mut self, read_locked: ReadLocked<'_>) -> Option<(usize, f64)> {
        let position = if let Some(&head) = self.heads.get(self.emitted_heads) {
            self.emitted_heads += 1;
            head
        } else {
            if self.rest.is_none() {
                for position in 0..self.entries.len() {
                    self.settle(position, read_locked);
                }
            }
            let rest = self.rest.get_or_insert_with(|| {
                let keys: Vec<f64> = self.entries.iter().map(Entry::key).collect();
                let mut order: Vec<usize> = (0..self.entries.len())
                    .filter(|p| !self.heads.contains(p))
                    .collect();
                let entries = &self.entries;
                order.sort_unstable_by(|&a, &b| {
                    (entries[a].value.total_cmp(&entries[b].value))
                        .then(keys[b].total_cmp(&keys[a]))
                        .then(entries[a].deployment.cmp(&entries[b].deployment))
                });
                order.into_iter()
            });
            rest.next()?
        };
        self.settle(position, read_locked);
        let entry = &self.entries[position];
        Some((entry.deployment, entry.score))
    }
}

/// Each entrant's rank value (lower first) and score (in [0, 1], higher
/// better); for `balanced`, the partial penalties the rest completes (`settle`).
fn measure(
    strategy: Strategy,
    entrants: &[Entrant],
    scoring: &ScoringConfig,
) -> (Vec<f64>, Vec<f64>, Option<Vec<f64>>) {
    let signals = entrants.iter().map(|e| &e.signals);
    let values: Vec<f64> = match strategy {
        Strategy::LeastInFlight => signals.map(|s| s.in_flight as f64).collect(),
        Strategy::LowestCost => signals.map(|s| s.cost_usd).collect(),
        Strategy::LowestLatency => {
            // Unmeasured deployments count as the fastest, so that they get measured.
            let fastest = (entrants.iter())
                .filter_map(|e| e.signals.tail_latency_ms)
                .fold(f64::INFINITY, f64::min);
            let optimistic = if fastest.is_finite() { fastest } else { 0.0 };
            signals
                .map(|s| s.tail_latency_ms.unwrap_or(optimistic))
                .collect()
        }
        Strategy::UsageHeadroom => signals.map(|s| -s.headroom).collect(),
        Strategy::Balanced => {
            let unknown = vec![f64::NAN; entrants.len()];
            return (
                unknown.clone(),
                unknown,
                Some(balanced_penalties(entrants, scoring)),
            );
        }
        Strategy::Weighted | Strategy::Priority | Strategy::RoundRobin => {
            unreachable!("{} is drawn one candidate at a time", strategy.as_str())
        }
    };
    let best = values.iter().copied().fold(f64::INFINITY, f64::min);
    let scores = values
        .iter()
        .map(|&value| match strategy {
            Strategy::LeastInFlight => (1.0 + best) / (1.0 + value),
            Strategy::UsageHeadroom => -value,
            // `best / value` for "lower is better" measures, 1.0 when both are zero.
            _ if value <= 0.0 => 1.0,
            _ => best / value,
        })
        .collect();
    (values, scores, None)
}

/// `balanced`'s penalty from the signals read without a lock: cost, tail
/// latency and load, each weighted as a share of the largest among the
/// entrants. Its score is one minus the whole weighted blend (error rate and
/// headroom used added, see `Ranking::settle`) over the weights' total.
fn balanced_penalties(entrants: &[Entrant], weights: &ScoringConfig) -> Vec<f64> {
    let max_of =
        |f: &dyn Fn(&Signals) -> f64| (entrants.iter()).map(|e| f(&e.signals)).fold(0.0, f64::max);
    let max_cost = max_of(&|s| s.cost_usd);
    let max_latency = max_of(&|s| s.tail_latency_ms.unwrap_or(0.0));
    let max_load = max_of(&|s| s.in_flight as f64);
    let share = |value: f64, max: f64| if max > 0.0 { value / max } else { 0.0 };
    (entrants.iter())
        .map(|e| {
            let s = &e.signals;
            weights.cost * share(s.cost_usd, max_cost)
                + weights.latency * share(s.tail_latency_ms.unwrap_or(0.0), max_latency)
                + weights.load * share(s.in_flight as f64, max_load)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::{any, prop, prop_assert_eq, proptest, Strategy as _};

    use super::*;

    const MEASURED: [Strategy; 5] = [
        Strategy::LeastInFlight,
        Strategy::LowestCost,
        Strategy::LowestLatency,
        Strategy::UsageHeadroom,
        Strategy::Balanced,
    ];

    fn entrant() -> impl proptest::strategy::Strategy<Value = Entrant> {
        // Few distinct values, so that ties (and their random keys) decide often.
        (
            0u8..4,
            0u8..3,
            prop::option::of(0u8..3),
            0u8..3,
            0u8..3,
            0u8..3,
        )
            .prop_map(|(weight, cost, latency, errors, load, headroom)| Entrant {
                deployment: 0,
                weight: 0.5 + f64::from(weight),
                signals: Signals {
                    cost_usd: f64::from(cost) * 0.01,
                    tail_latency_ms: latency.map(|l| 100.0 * f64::from(l)),
                    error_rate: f64::from(errors) / 4.0,
                    in_flight: u64::from(load),
                    headroom: f64::from(headroom) / 2.0,
                },
            })
    }

    /// `balanced`'s score from all five signals at once, written out plainly.
    fn balanced_score(entrants: &[Entrant], i: usize, w: &ScoringConfig) -> f64 {
        let max =
            |f: fn(&Signals) -> f64| entrants.iter().map(|e| f(&e.signals)).fold(0.0, f64::max);
        let share = |v: f64, m: f64| if m > 0.0 { v / m } else { 0.0 };
        let s = &entrants[i].signals;
        let penalty = w.cost * share(s.cost_usd, max(|s| s.cost_usd))
            + w.latency
                * share(
                    s.tail_latency_ms.unwrap_or(0.0),
                    max(|s| s.tail_latency_ms.unwrap_or(0.0)),
                )
            + w.errors * s.error_rate
            + w.load * share(s.in_flight as f64, max(|s| s.in_flight as f64))
            + w.headroom * (1.0 - s.headroom);
        1.0 - penalty / w.total()
    }

    /// The reference: every entrant's signals read and key computed, all sorted
    /// at once; for `balanced` the better of the two survivors the same draws
    /// pick (or the explored one) moved to the front; the session's first.
    fn reference(
        strategy: Strategy,
        entrants: &[Entrant],
        seed: u64,
        lead: Option<usize>,
    ) -> Vec<(usize, f64)> {
        let scoring = ScoringConfig::default();
        let mut rng = SplitMix64::new(seed);
        let n = entrants.len();
        let (values, scores): (Vec<f64>, Vec<f64>) = if strategy == Strategy::Balanced {
            let raw: Vec<f64> = (0..n)
                .map(|i| balanced_score(entrants, i, &scoring))
                .collect();
            (
                raw.iter().map(|s| -s).collect(),
                raw.iter().map(|s| s.clamp(0.0, 1.0)).collect(),
            )
        } else {
            let (values, scores, _) = measure(strategy, entrants, &scoring);
            (values, scores)
        };
        let keys: Vec<f64> = (entrants.iter())
            .map(|e| unit(rng.next_u64()).ln() / e.weight)
            .collect();
        let before = |a: usize, b: usize| {
            (values[a].total_cmp(&values[b]))
                .then(keys[b].total_cmp(&keys[a]))
                .then(a.cmp(&b))
        };
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| before(a, b));
        if strategy == Strategy::Balanced && n >= 2 {
            let chosen = if rng.next_unit() <= scoring.exploration {
                rng.next_u64() as usize % n
            } else {
                let a = rng.next_u64() as usize % n;
                let b = (a + 1 + rng.next_u64() as usize % (n - 1)) % n;
                if before(a, b) == Ordering::Greater {
                    b
                } else {
                    a
                }
            };
            order.retain(|&p| p != chosen);
            order.insert(0, chosen);
        }
        if let Some(lead) = lead {
            order.retain(|&p| p != lead);
            order.insert(0, lead);
        }
        order.into_iter().map(|p| (p, scores[p])).collect()
    }

    proptest! {
        // No regression file: it would land inside the Python package's directory.
        #![proptest_config(proptest::prelude::ProptestConfig {
            failure_persistence: None,
            ..Default::default()
        })]

        #[test]
        fn lazy_ranking_matches_a_full_sort(
            mut entrants in proptest::collection::vec(entrant(), 0..30),
            strategy in proptest::sample::select(MEASURED.to_vec()),
            seed in any::<u64>(),
            lead in any::<Option<prop::sample::Index>>(),
        ) {
            for (i, entrant) in entrants.iter_mut().enumerate() {
                entrant.deployment = i;
            }
            let lead = lead.filter(|_| !entrants.is_empty()).map(|l| l.index(entrants.len()));
            let mut locked = |i: usize| (entrants[i].signals.error_rate, entrants[i].signals.headroom);
            let mut ranking = Ranking::new(
                strategy, &entrants, &mut SplitMix64::new(seed), &ScoringConfig::default(), &mut locked,
            );
            if let Some(lead) = lead {
                ranking.lead_with(lead);
            }
            let drawn: Vec<(usize, f64)> = std::iter::from_fn(|| ranking.next(&mut locked)).collect();
            prop_assert_eq!(drawn, reference(strategy, &entrants, seed, lead));
        }
    }
}
