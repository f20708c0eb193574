//! How a model group orders the deployments that survived the filters.
//!
//! Both strategies rest on Efraimidis–Spirakis weighted sampling without
//! replacement: each candidate draws `u` uniform in (0, 1] and gets the key
//! `u^(1/weight)`; sorting by key, descending, yields a weighted random order in
//! which a deployment comes first with probability `weight / sum(weights)`.
//! Keys are compared as `ln(u) / weight` (the same order, without `powf`
//! underflowing to 0 for small weights).

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;

use crate::router::Candidate;
use crate::table::Deployment;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Weighted random order; a candidate's score is its key `u^(1/weight)`.
    #[default]
    Weighted,
    /// Ascending `priority`, ties broken by weighted random order; a
    /// candidate's score is `1 / (1 + priority)`, so 1.0 is the most preferred
    /// tier and scores fall as priority numbers grow.
    Priority,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Weighted => "weighted",
            Strategy::Priority => "priority",
        }
    }

    /// Candidates of equal rank are shuffled among themselves; lower ranks come first.
    fn rank(self, deployment: &Deployment) -> u32 {
        match self {
            Strategy::Weighted => 0,
            Strategy::Priority => deployment.priority,
        }
    }

    /// Sorts a group's members by rank once, at compile time, so that equal
    /// ranks are contiguous when routing and `order` needs no scratch buffer.
    pub(crate) fn member_order(self, members: &mut [usize], deployments: &[Deployment]) {
        members.sort_by_key(|&i| self.rank(&deployments[i]));
    }

    /// Appends `survivors` to `out`, best first. `survivors` must come in
    /// `member_order`; one random number is drawn per survivor, in that order,
    /// so a fixed seed gives a fixed decision.
    pub(crate) fn order<'t>(
        self,
        survivors: impl Iterator<Item = &'t Deployment>,
        rng: &mut SplitMix64,
        out: &mut Vec<Candidate>,
    ) {
        let mut run: Option<(usize, u32)> = None; // (start in `out`, rank)
        for deployment in survivors {
            let rank = self.rank(deployment);
            match run {
                Some((_, current)) if current == rank => {}
                _ => {
                    if let Some((start, current)) = run {
                        self.finish_run(&mut out[start..], current);
                    }
                    run = Some((out.len(), rank));
                }
            }
            out.push(Candidate {
                deployment: deployment.id.clone(),
                score: rng.next_unit().ln() / deployment.weight,
            });
        }
        if let Some((start, rank)) = run {
            self.finish_run(&mut out[start..], rank);
        }
    }

    /// `run` holds one rank's candidates with their log keys as scores.
    fn finish_run(self, run: &mut [Candidate], rank: u32) {
        // Unstable: no scratch allocation, and still deterministic for a given input.
        run.sort_unstable_by(|a, b| b.score.total_cmp(&a.score));
        for candidate in run {
            candidate.score = match self {
                Strategy::Weighted => candidate.score.exp(),
                Strategy::Priority => 1.0 / (1.0 + f64::from(rank)),
            };
        }
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

fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::table::Table;
    use crate::testing::{config, group, weighted};

    /// Deployments "w1".."w4" with weights 1..4; priorities 1, 0, 1, 0.
    fn table(strategy: &str) -> Table {
        let deployments = (1..=4)
            .map(|i| weighted(&format!("w{i}"), f64::from(i), i % 2))
            .collect();
        let json = config(
            deployments,
            vec![group("g", strategy, &["w1", "w2", "w3", "w4"])],
        );
        Table::compile(&Config::from_json(&json).unwrap(), None)
    }

    fn order(table: &Table, seed: u64) -> Vec<Candidate> {
        let group = table.group("g").unwrap();
        let mut out = Vec::new();
        let survivors = group.members.iter().map(|&i| &table.deployments[i]);
        group
            .strategy
            .order(survivors, &mut SplitMix64::new(seed), &mut out);
        out
    }

    fn ids(candidates: &[Candidate]) -> Vec<&str> {
        candidates.iter().map(|c| &*c.deployment).collect()
    }

    /// How often each deployment came first, over `n` seeds.
    fn first_shares(table: &Table, n: u64) -> Vec<(String, f64)> {
        let mut counts = std::collections::BTreeMap::new();
        for seed in 0..n {
            *counts
                .entry(order(table, seed)[0].deployment.to_string())
                .or_insert(0) += 1;
        }
        counts
            .into_iter()
            .map(|(id, c)| (id, f64::from(c) / n as f64))
            .collect()
    }

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

    #[test]
    fn weighted_is_deterministic_per_seed_and_varies_across_seeds() {
        let table = table("weighted");
        assert_eq!(order(&table, 42), order(&table, 42));
        let distinct: std::collections::HashSet<Vec<String>> = (0..50)
            .map(|seed| {
                ids(&order(&table, seed))
                    .into_iter()
                    .map(String::from)
                    .collect()
            })
            .collect();
        assert!(distinct.len() > 5);
    }

    #[test]
    fn weighted_scores_are_descending_keys_in_unit_interval() {
        let table = table("weighted");
        for seed in 0..100 {
            let candidates = order(&table, seed);
            assert_eq!(candidates.len(), 4);
            assert!(candidates.iter().all(|c| c.score > 0.0 && c.score <= 1.0));
            assert!(candidates.windows(2).all(|w| w[0].score >= w[1].score));
        }
    }

    #[test]
    fn weighted_first_pick_is_proportional_to_weight() {
        for (id, share) in first_shares(&table("weighted"), 20_000) {
            let weight: f64 = id[1..].parse().unwrap();
            assert!((share - weight / 10.0).abs() < 0.02, "{id}: {share}");
        }
    }

    #[test]
    fn priority_orders_tiers_and_scores_them() {
        let table = table("priority");
        for seed in 0..100 {
            let candidates = order(&table, seed);
            let tiers: Vec<_> = candidates.iter().map(|c| &*c.deployment).collect();
            assert!(
                matches!(tiers[..2], ["w2", "w4"] | ["w4", "w2"]),
                "{tiers:?}"
            );
            assert!(
                matches!(tiers[2..], ["w1", "w3"] | ["w3", "w1"]),
                "{tiers:?}"
            );
            let scores: Vec<f64> = candidates.iter().map(|c| c.score).collect();
            assert_eq!(scores, [1.0, 1.0, 0.5, 0.5]);
        }
    }

    #[test]
    fn priority_ties_are_broken_by_weight() {
        // Tier 0 holds w2 (weight 2) and w4 (weight 4): w4 leads two times in three.
        let shares = first_shares(&table("priority"), 20_000);
        assert_eq!(shares.len(), 2);
        assert!((shares[1].1 - 2.0 / 3.0).abs() < 0.02, "{shares:?}");
    }
}
