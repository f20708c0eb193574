//! Drawing a decision's candidates one at a time, so that a decision costs
//! the same whatever the size of its groups: the first candidate is drawn when
//! the request is routed, the next only when a fallback asks for it.
//!
//! - `weighted` and `priority` draw by weight without replacement (within one
//!   rank at a time for `priority`) from the tier's precomputed weight tree,
//!   checking each drawn deployment against the filters; one that fails is
//!   rejected and the draw repeats among the rest. The first candidate is thus
//!   chosen in proportion to weight among the deployments that can serve.
//! - `round_robin` starts at the plan's turn among the tier's members and walks
//!   on from there, passing over those the filters reject.
//! - The measured strategies need every candidate's signals to rank them, so
//!   they rank a whole tier when they reach it.
//!
//! Session affinity puts the deployment that weighted rendezvous hashing picks
//! among the primary tier's survivors first; the rest follow in the strategy's order.

use std::sync::Arc;

use crate::clock::{Clock, Nanos};
use crate::filter::Query;
use crate::ranking::{Entrant, Ranking};
use crate::ratelimit::Keep;
use crate::strategy::{SplitMix64, Strategy};
use crate::table::{Deployment, Plan, Table, Tier};
use crate::weights::{scaled_draw, WeightTree};

use super::affinity::rendezvous_order;
use super::leasing::earliest;
use super::signals::{signals, unavailable};
use super::{Candidate, Rejection};

/// A drawn candidate's score: `priority`'s rank score, else the share of the
/// tier's weight still undrawn (`tree`, before the candidate is taken out of
/// it): 1.0 for the first.
fn drawn_score(strategy: Strategy, deployment: &Deployment, tree: &WeightTree, tier: &Tier) -> f64 {
    match strategy {
        Strategy::Priority => 1.0 / (1.0 + f64::from(strategy.rank(deployment))),
        _ => tree.prefix(tier.members.len()) as f64 / tier.total_weight as f64,
    }
}

/// A round-robin candidate's score: `offset` members on from the turn's start, of `n`.
fn turn_score(offset: usize, n: usize) -> f64 {
    1.0 - offset as f64 / n as f64
}

/// A deployment's error rate and headroom, the signals that take a lock, by its index in `table`.
fn locked_signals(table: &Table, now: Nanos) -> impl FnMut(usize) -> (f64, f64) + '_ {
    move |i| {
        let deployment = &table.deployments[i];
        let error_rate = deployment.health.error_rate(now).unwrap_or(0.0);
        (error_rate, deployment.limit.headroom(now))
    }
}

/// Where in its table a decision's plan lives.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PlanRef {
    Group(usize),
    Arm { policy: usize, arm: usize },
}

impl PlanRef {
    pub(crate) fn resolve(self, table: &Table) -> &Plan {
        match self {
            PlanRef::Group(group) => &table.groups[group].plan,
            PlanRef::Arm { policy, arm } => &table.policies[policy].arms[arm].plan,
        }
    }
}

/// What a decision keeps to draw its remaining candidates.
#[derive(Debug)]
pub(crate) struct Drawing {
    pub(super) table: Arc<Table>,
    pub(super) plan: PlanRef,
    pub(super) query: Query,
    pub(super) rng: SplitMix64,
    pub(super) strategy: Strategy,
    /// Draws after the decision is made judge health and budgets at the time they are made.
    pub(super) clock: Clock,
    /// The budget share to leave for callers of higher priority (checked only
    /// when explaining).
    pub(super) keep: Keep,
    pub(super) dry_run: bool,
    /// The tier being drawn from, an index into the plan's tiers; their count once done.
    tier: usize,
    state: TierState,
    /// The earliest time a deployment that is only waiting on a budget or a
    /// provider's Retry-After could take the request.
    pub(super) retry_at: Option<Nanos>,
}

#[derive(Debug)]
enum TierState {
    /// The tier is not entered yet.
    Closed,
    Random {
        /// The tier's weights with the drawn members taken out; `None` while
        /// none is (a decision that draws once never copies the tree).
        weights: Option<WeightTree>,
        /// The member drawn last, still to take out of `weights`.
        drawn: Option<usize>,
        /// The rank run being drawn from.
        run: usize,
    },
    RoundRobin {
        start: usize,
        /// How many members on from `start` have been looked at.
        offset: usize,
        /// Members already settled by the session's affinity.
        settled: Vec<usize>,
    },
    Ranked(Ranking),
}

impl Drawing {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        table: Arc<Table>,
        plan: PlanRef,
        query: Query,
        rng: SplitMix64,
        strategy: Strategy,
        clock: Clock,
        keep: Keep,
        dry_run: bool,
    ) -> Drawing {
        Drawing {
            table,
            plan,
            query,
            rng,
            strategy,
            clock,
            keep,
            dry_run,
            tier: 0,
            state: TierState::Closed,
            retry_at: None,
        }
    }

    pub(super) fn is_done(&self) -> bool {
        self.tier >= self.plan.resolve(&self.table).tiers.len()
    }

    /// Enters the primary tier, putting the session's deployment first when
    /// the request has an affinity key; returns that deployment's candidacy.
    pub(super) fn open(
        &mut self,
        affinity_key: &str,
        now: Nanos,
        rejected: &mut Vec<Rejection>,
    ) -> Option<Candidate> {
        let table = Arc::clone(&self.table);
        let tier = self.plan.resolve(&table).tiers.first()?;
        self.enter(&table, tier, now, rejected);
        if affinity_key.is_empty() {
            return None;
        }
        match &mut self.state {
            TierState::Ranked(ranking) => {
                // Every entrant survived the filters: the first in rendezvous order is the one.
                let entrants = ranking.deployments().map(|i| &table.deployments[i]);
                let favourite = rendezvous_order(affinity_key, entrants).next();
                if let Some(position) = favourite {
                    ranking.lead_with(position);
                }
                None
            }
            _ => self.stick_first(&table, tier, affinity_key, now, rejected),
        }
    }

    /// The next candidate, best first, judged at `now`; `None` when every
    /// tier is drawn. The deployments the filters reject on the way go to `rejected`.
    pub(super) fn next(&mut self, now: Nanos, rejected: &mut Vec<Rejection>) -> Option<Candidate> {
        let table = Arc::clone(&self.table);
        let plan = self.plan.resolve(&table);
        while let Some(tier) = plan.tiers.get(self.tier) {
            if matches!(self.state, TierState::Closed) {
                self.enter(&table, tier, now, rejected);
            }
            if let Some(candidate) = self.next_in_tier(&table, tier, now, rejected) {
                return Some(candidate);
            }
            self.tier += 1;
            self.state = TierState::Closed;
        }
        None
    }

    fn enter(&mut self, table: &Table, tier: &Tier, now: Nanos, rejected: &mut Vec<Rejection>) {
        let plan = self.plan.resolve(table);
        self.state = match self.strategy {
            Strategy::Weighted | Strategy::Priority => TierState::Random {
                weights: None,
                drawn: None,
                run: 0,
            },
            Strategy::RoundRobin => {
                let turn = if self.dry_run {
                    plan.rotation.0.load(std::sync::atomic::Ordering::Relaxed)
                } else {
                    plan.rotation
                        .0
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                };
                TierState::RoundRobin {
                    start: (turn % tier.members.len() as u64) as usize,
                    offset: 0,
                    settled: Vec::new(),
                }
            }
            strategy => {
                let mut needs = strategy.needs();
                if strategy == Strategy::Balanced {
                    // Read of the few it compares (see `ranking`).
                    (needs.errors, needs.headroom) = (false, false);
                }
                let mut entrants = Vec::with_capacity(tier.members.len());
                for &i in &tier.members {
                    let deployment = &table.deployments[i];
                    if self.admits(table, deployment, now, rejected) {
                        entrants.push(Entrant {
                            deployment: i,
                            weight: deployment.weight,
                            signals: signals(deployment, &self.query, needs, now),
                        });
                    }
                }
                TierState::Ranked(Ranking::new(
                    strategy,
                    &entrants,
                    &mut self.rng,
                    &table.scoring,
                    &mut locked_signals(table, now),
                ))
            }
        };
    }

    fn next_in_tier(
        &mut self,
        table: &Table,
        tier: &Tier,
        now: Nanos,
        rejected: &mut Vec<Rejection>,
    ) -> Option<Candidate> {
        let number = self.tier as u32;
        loop {
            let (position, score) = match &mut self.state {
                TierState::Closed => unreachable!("a tier is entered before it is drawn from"),
                TierState::Ranked(ranking) => {
                    return ranking
                        .next(&mut locked_signals(table, now))
                        .map(|(i, score)| Candidate {
                            deployment: Arc::clone(&table.deployments[i].id),
                            score,
                            tier: number,
                        });
                }
                TierState::RoundRobin {
                    start,
                    offset,
                    settled,
                } => {
                    let n = tier.members.len();
                    if *offset >= n {
                        return None;
                    }
                    let position = (*start + *offset) % n;
                    let score = turn_score(*offset, n);
                    *offset += 1;
                    if settled.contains(&position) {
                        continue;
                    }
                    (position, score)
                }
                TierState::Random {
                    weights,
                    drawn,
                    run,
                } => {
                    if let Some(position) = drawn.take() {
                        weights
                            .get_or_insert_with(|| tier.weights.clone())
                            .remove(position);
                    }
                    let tree = weights.as_ref().unwrap_or(&tier.weights);
                    let range = tier.runs.get(*run)?;
                    let base = tree.prefix(range.start);
                    let total = tree.prefix(range.end) - base;
                    if total == 0 {
                        *run += 1;
                        continue;
                    }
                    let position = tree.find(base + scaled_draw(self.rng.next_u64(), total));
                    *drawn = Some(position);
                    let deployment = &table.deployments[tier.members[position]];
                    (position, drawn_score(self.strategy, deployment, tree, tier))
                }
            };
            let deployment = &table.deployments[tier.members[position]];
            if self.admits(table, deployment, now, rejected) {
                return Some(Candidate {
                    deployment: Arc::clone(&deployment.id),
                    score,
                    tier: number,
                });
            }
        }
    }

    /// Walks the primary tier in the session key's rendezvous order to the
    /// first member that can serve, takes it out of the strategy's draw, and
    /// returns it as the first candidate with the score the strategy gives it.
    fn stick_first(
        &mut self,
        table: &Table,
        tier: &Tier,
        key: &str,
        now: Nanos,
        rejected: &mut Vec<Rejection>,
    ) -> Option<Candidate> {
        for position in rendezvous_order(key, tier.members.iter().map(|&i| &table.deployments[i])) {
            let deployment = &table.deployments[tier.members[position]];
            let admitted = self.admits(table, deployment, now, rejected);
            let score = match &mut self.state {
                TierState::Random { weights, .. } => {
                    let tree = weights.get_or_insert_with(|| tier.weights.clone());
                    let score = drawn_score(self.strategy, deployment, tree, tier);
                    tree.remove(position);
                    score
                }
                TierState::RoundRobin { start, settled, .. } => {
                    settled.push(position);
                    let n = tier.members.len();
                    turn_score((position + n - *start) % n, n)
                }
                TierState::Closed | TierState::Ranked(_) => {
                    unreachable!("ranked tiers stick by rank")
                }
            };
            if admitted {
                return Some(Candidate {
                    deployment: Arc::clone(&deployment.id),
                    score,
                    tier: 0,
                });
            }
        }
        None
    }

    /// Whether `deployment` passes the request's filters and can take an
    /// attempt now; if not, its rejection goes to `rejected`.
    fn admits(
        &mut self,
        table: &Table,
        deployment: &Deployment,
        now: Nanos,
        rejected: &mut Vec<Rejection>,
    ) -> bool {
        let rejection = self.query.reject(table, deployment).or_else(|| {
            let (rejection, until) =
                unavailable(deployment, &self.query, self.dry_run, self.keep, now)?;
            earliest(&mut self.retry_at, until);
            Some(rejection)
        });
        match rejection {
            Some(rejection) => {
                rejected.push(rejection);
                false
            }
            None => true,
        }
    }

    /// Puts `rejected` in the plan's order (tier, then member order), as a
    /// complete decision lists them whatever order they were met in.
    pub(super) fn sort(&self, rejected: &mut [Rejection]) {
        let table = &self.table;
        let mut place = vec![u64::MAX; table.deployments.len()];
        for (t, tier) in self.plan.resolve(table).tiers.iter().enumerate() {
            for (p, &i) in tier.members.iter().enumerate() {
                place[i] = ((t as u64) << 32) | p as u64;
            }
        }
        rejected.sort_by_key(|r| {
            table
                .deployment_index(&r.deployment)
                .map_or(u64::MAX, |i| place[i])
        });
    }
}
