//! The façade: a `Router` owns the current table and answers `route`,
//! `record`, `stats` and `reload`. It is `Send + Sync`; routing and recording
//! read the table through `ArcSwap`, which takes no lock.
//!
//! `decide` resolves the plan and leases the first candidate; drawing the
//! candidates one at a time from the plan's tiers (`draw`), what it asks of
//! each deployment (`signals`), how it keeps a session's deployment first
//! (`affinity`) and how it leases (`leasing`) live in the submodules.

mod affinity;
mod budgets;
mod cluster;
mod decision;
mod draw;
mod evaluation;
mod leasing;
mod measures;
mod signals;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;

use crate::attempts::ContentFallback;
use crate::budget::Budgets;
use crate::clock::{Clock, Nanos};
use crate::config::Config;
use crate::error::RouterError;
use crate::filter::{Filter, Query};
use crate::health::{eject_outliers, Admission, Health, OutcomeClass, Told, UnavailableReason};
use crate::lease::Lease;
use crate::ratelimit::Refill;
use crate::state::Region;
use crate::stats::{DeploymentStats, Outcome};
use crate::strategy::{next_shared_seed, SplitMix64};
use crate::table::Table;
use draw::{Drawing, PlanRef};
use leasing::{lease_first, lease_on, LeaseFor};

pub use decision::{Candidate, Decision, Preference, Rejection, RouteRequest};
pub use evaluation::{Assignment, ShadowCopy};

pub struct Router {
    table: ArcSwap<Table>,
    /// Serialises reloads so two concurrent ones cannot both carry stats over
    /// from the same old table. Routing and recording never take it.
    reload_lock: Mutex<()>,
    /// Shared SplitMix64 state for requests that bring no seed.
    seeds: AtomicU64,
    /// Refills rate limits and times health; manual in tests.
    clock: Clock,
    /// Where the rate limits live when other processes share them.
    region: Option<Arc<Region>>,
    /// How every rate limit refills: by itself, or fed by a cluster link.
    refill: Arc<Refill>,
    /// What the cluster link was last told of each deployment's health.
    told: Mutex<HashMap<Arc<str>, Told>>,
    /// Owners' budgets in dollars, made on first use.
    budgets: Budgets,
}

impl Router {
    pub fn new(config_json: &str) -> Result<Router, RouterError> {
        Router::with_clock(config_json, Clock::default())
    }

    /// A router whose rate limits and health read `clock` (see [`Clock::manual`]).
    pub fn with_clock(config_json: &str, clock: Clock) -> Result<Router, RouterError> {
        Ok(Router::from_config(&Config::from_json(config_json)?, clock))
    }

    /// A router on a config already parsed (and perhaps pruned: [`Config::without`]).
    pub fn from_config(config: &Config, clock: Clock) -> Router {
        Router::sharing(config, clock, None)
    }

    /// A router whose state (rate limits, breakers, cool-downs, latency,
    /// counters, round-robin positions, calibration) lives in `region`, so
    /// that every process mapping it decides as one.
    /// The processes must read the same clock: [`Clock::host`] (or one manual
    /// clock, in tests).
    pub fn sharing(config: &Config, clock: Clock, region: Option<Arc<Region>>) -> Router {
        // Time only makes unseeded orders differ between processes; any value works.
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let refill = Arc::default();
        let table = Table::compile_sharing(config, None, clock.now(), region.as_ref(), &refill);
        Router {
            table: ArcSwap::from_pointee(table),
            reload_lock: Mutex::new(()),
            seeds: AtomicU64::new(seed),
            clock,
            region,
            refill,
            told: Mutex::default(),
            budgets: Budgets::default(),
        }
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Replaces the table atomically, keeping the stats of deployments whose id
    /// still exists. On error the current table stays in place.
    pub fn reload(&self, config_json: &str) -> Result<(), RouterError> {
        self.reload_config(&Config::from_json(config_json)?);
        Ok(())
    }

    /// [`Router::reload`] with a config already parsed.
    pub fn reload_config(&self, config: &Config) {
        // The lock guards no data, so a panic elsewhere cannot leave it inconsistent.
        let _guard = self
            .reload_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let table = Table::compile_sharing(
            config,
            Some(&self.table.load()),
            self.clock.now(),
            self.region.as_ref(),
            &self.refill,
        );
        self.table.store(Arc::new(table));
    }

    /// Picks the plan (the first matching policy, else the requested model
    /// group), filters each of its tiers and orders the survivors: the whole
    /// decision, every candidate drawn (see [`Router::decide`] for one that
    /// draws them as they are needed).
    pub fn route<S: AsRef<str>>(
        &self,
        request: &RouteRequest<'_, S>,
    ) -> Result<Decision, RouterError> {
        let mut decision = self.decide(request)?;
        decision.draw_all();
        Ok(decision)
    }

    /// The decision with its first candidate drawn (and leased, unless a dry
    /// run); [`Decision::draw`] draws the others when a fallback needs them,
    /// so routing costs the same whatever the size of the groups. A dry run
    /// draws every candidate at once.
    pub fn decide<S: AsRef<str>>(
        &self,
        request: &RouteRequest<'_, S>,
    ) -> Result<Decision, RouterError> {
        let table = self.table.load_full();
        let mut rng = SplitMix64::new(
            request
                .seed
                .unwrap_or_else(|| next_shared_seed(&self.seeds)),
        );
        let requested = table.group_position(request.model);
        let (policy, plan_ref, model_group, assignment) = match table.policy_for(request) {
            Some(index) => {
                let policy = &table.policies[index];
                let (arm, assignment) = evaluation::arm_for(policy, request, &mut rng);
                let group = requested
                    .map(|g| &table.groups[g].name)
                    .or(arm.model_group.as_ref());
                let arm_index = (policy.arms.iter())
                    .position(|a| std::ptr::eq(a, arm))
                    .expect("the arm is the policy's");
                (
                    Some(policy),
                    PlanRef::Arm {
                        policy: index,
                        arm: arm_index,
                    },
                    group.cloned().unwrap_or_else(|| "".into()),
                    assignment,
                )
            }
            None => {
                let index = requested.ok_or_else(|| RouterError::UnknownModelGroup {
                    name: request.model.to_owned(),
                    known: table.group_names(),
                })?;
                let group = &table.groups[index];
                (None, PlanRef::Group(index), group.name.clone(), None)
            }
        };
        let plan = plan_ref.resolve(&table);
        let query = Query::new(request, &table, plan);
        let shadow =
            policy.and_then(|p| evaluation::shadow_copy(p, &table, &query, request, &mut rng));
        // The caller's preference, when it has one, orders the candidates instead.
        let strategy = request
            .preference
            .map_or(plan.strategy, Preference::strategy);
        let mut decision = Decision {
            model_group,
            policy: policy.map(|p| p.id.clone()),
            strategy,
            candidates: Vec::with_capacity(1),
            rejected: Vec::new(),
            lease: None,
            retry_after: None,
            hedge: policy.and_then(|p| p.hedge),
            content_fallback: policy.map_or_else(ContentFallback::default, |p| p.content_fallback),
            experiment: assignment,
            shadow,
            drawing: None,
        };
        let keep = table.keep_for(request.tenant);
        let mut drawing = Drawing::new(
            Arc::clone(&table),
            plan_ref,
            query,
            rng,
            strategy,
            self.clock.clone(),
            keep,
            request.dry_run,
        );
        let now = self.clock.now();
        if let Some(sticky) = drawing.open(request.affinity_key, now, &mut decision.rejected) {
            decision.candidates.push(sticky);
        }
        decision.drawing = Some(Box::new(drawing));
        if request.dry_run {
            decision.draw_at(usize::MAX, now);
        } else {
            lease_first(&table, &mut decision, request, &self.clock, now);
        }
        if decision.candidates.is_empty() {
            decision.retry_after = decision
                .retry_at()
                .map(|at| Duration::from_nanos(at.saturating_sub(now)));
        }
        Ok(decision)
    }

    /// A lease on `deployment` for a fallback attempt, reserving the input
    /// estimate as the deployment counts it (calibrated) plus the max output.
    /// Fails with `Unavailable` when the deployment is out of rotation or a
    /// budget is exhausted.
    pub fn reserve(
        &self,
        deployment: &str,
        tenant: &str,
        api_key: &str,
        input_tokens: u32,
        max_output_tokens: u32,
    ) -> Result<Lease, RouterError> {
        self.lease(
            deployment,
            LeaseFor::Caller { tenant, api_key },
            (input_tokens, max_output_tokens),
        )
    }

    /// A lease on `deployment` for a shadow call (a policy's copy of a
    /// request): it reserves only the deployment's budget, and is refused
    /// while that budget is within the share kept for callers, or while a
    /// half-open breaker waits for a caller's probe.
    pub fn reserve_shadow(
        &self,
        deployment: &str,
        input_tokens: u32,
        max_output_tokens: u32,
    ) -> Result<Lease, RouterError> {
        self.lease(
            deployment,
            LeaseFor::Shadow,
            (input_tokens, max_output_tokens),
        )
    }

    fn lease(
        &self,
        deployment: &str,
        whose: LeaseFor<'_>,
        tokens: (u32, u32),
    ) -> Result<Lease, RouterError> {
        let table = self.table.load();
        let target = table
            .deployment(deployment)
            .ok_or_else(|| RouterError::UnknownDeployment(deployment.to_owned()))?;
        let now = self.clock.now();
        lease_on(&table, target, whose, tokens, &self.clock, now).map_err(|denied| {
            RouterError::Unavailable {
                deployment: deployment.to_owned(),
                rate_limited: denied.filter == Filter::RateLimit || denied.retry_at.is_some(),
                detail: denied.detail,
                retry_after: denied
                    .retry_at
                    .map(|at| Duration::from_nanos(at.saturating_sub(now))),
            }
        })
    }

    /// How long until the deployment's rate-limit cool-down ends (a provider's 429), if it is
    /// cooling down: the wait to tell a client that was turned away by it.
    pub fn cooling_down_for(&self, deployment: &str) -> Result<Option<Duration>, RouterError> {
        let table = self.table.load();
        let target = table
            .deployment(deployment)
            .ok_or_else(|| RouterError::UnknownDeployment(deployment.to_owned()))?;
        let now = self.clock.now();
        Ok(target
            .health
            .admit(now)
            .worth_waiting_until()
            .map(|until| Duration::from_nanos(until.saturating_sub(now))))
    }

    /// The deployment's tail estimate (mean + 2 deviations) of the time to its
    /// first token when `first_token`, else of its whole latency; `None`
    /// before its first measured success. The delay before hedging it.
    pub fn latency_tail_ms(
        &self,
        deployment: &str,
        first_token: bool,
    ) -> Result<Option<f64>, RouterError> {
        let table = self.table.load();
        let health = &table
            .deployment(deployment)
            .ok_or_else(|| RouterError::UnknownDeployment(deployment.to_owned()))?
            .health;
        Ok(if first_token {
            health.tail_ttft_ms()
        } else {
            health.tail_latency_ms()
        })
    }

    /// Settles a lease with what its attempt came to: the rate-limit
    /// reservation against the tokens actually used, the counters, the
    /// deployment's health (breaker, cool-downs, latency; outlier ejection
    /// among its groups at most once a second) and, for a success that
    /// reports its input, the calibration of the input estimate. Returns what
    /// the tokens used cost, in USD, at the deployment's prices when leased.
    pub fn record(&self, mut lease: Lease, outcome: &Outcome) -> Result<f64, RouterError> {
        for latency in std::iter::once(outcome.latency_ms).chain(outcome.ttft_ms) {
            if !(latency.is_finite() && latency >= 0.0) {
                lease.release();
                return Err(RouterError::InvalidLatency(latency));
            }
        }
        let Some(reservation) = lease.reservation.take() else {
            unreachable!("a lease's reservation is taken only here, and record consumes the lease");
        };
        let now = self.clock.now();
        let used = outcome.input_tokens.saturating_add(outcome.output_tokens);
        lease.limits.settle(reservation, used, now);
        let cost_usd = lease
            .prices
            .cost_usd(outcome.input_tokens, outcome.output_tokens);
        lease.counters.record(outcome, cost_usd);
        lease.counters.end_attempt();
        lease.health.on_outcome(
            outcome.class,
            outcome.latency_ms,
            outcome.ttft_ms,
            outcome.retry_after,
            now,
        );
        if outcome.class == OutcomeClass::Ok {
            lease
                .calibration
                .observe(lease.estimated_input_tokens, outcome.input_tokens);
            self.eject_outliers(&lease.deployment, now);
        }
        Ok(cost_usd)
    }

    /// Gives back a lease whose attempt never produced an outcome (abandoned,
    /// or cancelled by the client): the reserved budget returns in full.
    /// Dropping the lease does the same.
    pub fn release(&self, lease: Lease) {
        lease.release();
    }

    fn eject_outliers(&self, deployment: &str, now: Nanos) {
        let table = self.table.load();
        let Some(recorded) = table.deployment(deployment) else {
            return;
        };
        for group in recorded.groups.iter().map(|&g| &table.groups[g]) {
            if group.outlier_gate.try_pass(now, OUTLIER_INTERVAL) {
                let members = group.members().iter().map(|&i| &table.deployments[i]);
                let peers: Vec<&Health> = members.clone().map(|d| &*d.health).collect();
                // A peer whose own budget admits no request now cannot serve either.
                let budgets: Vec<bool> = members.map(|d| d.limit.check(0, now).is_ok()).collect();
                eject_outliers(&peers, &budgets, recorded.health.policy(), now);
            }
        }
    }

    /// Takes `deployment` out of rotation, or puts it back (`drained: false`): no new
    /// attempt goes to it meanwhile, however it would be chosen; those under way finish. It
    /// holds across reloads, and for every process sharing this router's region.
    pub fn set_drained(&self, deployment: &str, drained: bool) -> Result<(), RouterError> {
        let table = self.table.load();
        let found = table
            .deployment(deployment)
            .ok_or_else(|| RouterError::UnknownDeployment(deployment.to_owned()))?;
        found.health.set_drained(drained);
        Ok(())
    }

    /// One entry per deployment of the current table, in config order.
    pub fn stats(&self) -> Vec<DeploymentStats> {
        let table = self.table.load();
        let now = self.clock.now();
        table
            .deployments
            .iter()
            .map(|d| {
                let unavailable = match d.health.admit(now) {
                    // Drained has no end but the operator's word.
                    Admission::Unavailable {
                        reason: reason @ UnavailableReason::Drained,
                        ..
                    } => Some((reason.as_str(), Duration::ZERO)),
                    Admission::Unavailable { until, reason } => Some((
                        reason.as_str(),
                        Duration::from_nanos(until.saturating_sub(now)),
                    )),
                    _ => None,
                };
                d.stats.snapshot(
                    &d.id,
                    d.health.snapshot(now),
                    unavailable,
                    d.limit.headroom(now),
                    d.calibration.ratio(),
                )
            })
            .collect()
    }

    /// Group names with their deployment ids, in config order (for
    /// `priority` groups, members are listed by ascending priority).
    pub fn model_groups(&self) -> Vec<(String, Vec<String>)> {
        let table = self.table.load();
        table
            .groups
            .iter()
            .map(|g| {
                let members = g
                    .members()
                    .iter()
                    .map(|&i| table.deployments[i].id.to_string());
                (g.name.to_string(), members.collect())
            })
            .collect()
    }

    pub fn default_group(&self) -> Option<String> {
        self.table
            .load()
            .default_group()
            .map(|g| g.name.to_string())
    }
}

/// Outlier ejection compares a group's tail latencies at most this often.
const OUTLIER_INTERVAL: Duration = Duration::from_secs(1);
