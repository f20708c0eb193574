//! The façade: a `Router` owns the current table and answers `route`,
//! `record`, `stats` and `reload`. It is `Send + Sync`; routing and recording
//! read the table through `ArcSwap`, which takes no lock.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;

use crate::attempts::{ContentFallback, Hedge};
use crate::clock::{Clock, Nanos};
use crate::config::Config;
use crate::error::RouterError;
use crate::filter::{Filter, Query};
use crate::health::{eject_outliers, Admission, Health, OutcomeClass, UnavailableReason};
use crate::lease::{Lease, Limits, Owner};
use crate::ratelimit::{reserve, Denied};
use crate::stats::{DeploymentStats, Outcome};
use crate::strategy::{
    next_shared_seed, Needs, OrderContext, Signals, SplitMix64, Strategy, Survivor,
};
use crate::table::Deployment;
use crate::table::Table;

/// What a caller wants routed: the request's routing features. `S` lets
/// callers pass `&str` or `String` lists.
#[derive(Debug, Clone)]
pub struct RouteRequest<'a, S = &'a str> {
    /// A model-group name, or `"auto"` for the configured default group.
    pub model: &'a str,
    /// Who is asking; selects the tenant's rate limit. Empty for none.
    pub tenant: &'a str,
    /// The caller's API key id (never the secret); selects its rate limit.
    pub api_key: &'a str,
    /// The kind of task ("code", "summarize", …), for policies to match.
    pub task: &'a str,
    pub tags: &'a [S],
    /// Free key/value pairs, for policies to match as `metadata.<key>`.
    pub metadata: &'a [(S, S)],
    /// The input estimate (see [`crate::estimate_input_tokens`]); each
    /// deployment scales it by its calibration for its context window and
    /// its reservation. Policies match it as given.
    pub input_tokens: u32,
    /// 0 means unknown; only `input_tokens` then counts against the window.
    pub max_output_tokens: u32,
    /// Capability names; one that no deployment has matches nothing.
    pub capabilities: &'a [S],
    /// Allowed regions (data residency); empty means any.
    pub regions: &'a [S],
    /// Removes deployments whose estimated cost for this request is higher.
    pub max_cost_usd: Option<f64>,
    /// The latency the caller hopes for, for policies to match.
    pub latency_target_ms: Option<f64>,
    /// Requests with the same key keep the same deployment while it is healthy.
    pub affinity_key: &'a str,
    /// Fixes the random order; `None` draws a fresh seed.
    pub seed: Option<u64>,
    /// Explain only: reserve no rate-limit budget, claim no probe, advance no rotation.
    pub dry_run: bool,
}

impl<'a> RouteRequest<'a> {
    pub fn new(model: &'a str) -> Self {
        RouteRequest {
            model,
            tenant: "",
            api_key: "",
            task: "",
            tags: &[],
            metadata: &[],
            input_tokens: 0,
            max_output_tokens: 0,
            capabilities: &[],
            regions: &[],
            max_cost_usd: None,
            latency_target_ms: None,
            affinity_key: "",
            seed: None,
            dry_run: false,
        }
    }
}

/// The router's answer: deployments to try in order, and why the others were left out.
#[derive(Debug)]
pub struct Decision {
    /// The requested group, or the first group of the matched policy's target
    /// (empty when the policy names only deployments).
    pub model_group: Arc<str>,
    /// The policy that decided; `None` when no policy matched and the model
    /// group's own strategy applied.
    pub policy: Option<Arc<str>>,
    pub strategy: Strategy,
    /// Best first; empty when every deployment was rejected.
    pub candidates: Vec<Candidate>,
    pub rejected: Vec<Rejection>,
    /// Budget and in-flight slot taken for the first candidate (none for a
    /// dry run, or when nothing could be leased).
    pub lease: Option<Lease>,
    /// When every candidate was out of rate-limit budget: how long until the
    /// earliest could take this request.
    pub retry_after: Option<Duration>,
    /// The matched policy's hedging; `None` without a policy or a hedge.
    pub hedge: Option<Hedge>,
    /// The matched policy's; `ContentFallback::None` without a policy.
    pub content_fallback: ContentFallback,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub deployment: Arc<str>,
    /// Strategy-specific, in [0, 1], higher is better (see [`Strategy`]).
    pub score: f64,
    /// 0 for the plan's primary targets, n for its n-th fallback tier that
    /// had any deployment of its own, so the caller can skip to a later tier.
    pub tier: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub deployment: Arc<str>,
    pub filter: Filter,
    pub detail: String,
}

pub struct Router {
    table: ArcSwap<Table>,
    /// Serialises reloads so two concurrent ones cannot both carry stats over
    /// from the same old table. Routing and recording never take it.
    reload_lock: Mutex<()>,
    /// Shared SplitMix64 state for requests that bring no seed.
    seeds: AtomicU64,
    /// Refills rate limits and times health; manual in tests.
    clock: Clock,
}

impl Router {
    pub fn new(config_json: &str) -> Result<Router, RouterError> {
        Router::with_clock(config_json, Clock::default())
    }

    /// A router whose rate limits and health read `clock` (see [`Clock::manual`]).
    pub fn with_clock(config_json: &str, clock: Clock) -> Result<Router, RouterError> {
        let config = Config::from_json(config_json)?;
        // Time only makes unseeded orders differ between processes; any value works.
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Ok(Router {
            table: ArcSwap::from_pointee(Table::compile(&config, None, clock.now())),
            reload_lock: Mutex::new(()),
            seeds: AtomicU64::new(seed),
            clock,
        })
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Replaces the table atomically, keeping the stats of deployments whose id
    /// still exists. On error the current table stays in place.
    pub fn reload(&self, config_json: &str) -> Result<(), RouterError> {
        let config = Config::from_json(config_json)?;
        // The lock guards no data, so a panic elsewhere cannot leave it inconsistent.
        let _guard = self
            .reload_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let table = Table::compile(&config, Some(&self.table.load()), self.clock.now());
        self.table.store(Arc::new(table));
        Ok(())
    }

    /// Picks the plan (the first matching policy, else the requested model
    /// group), filters each of its tiers and orders the survivors. Allocates
    /// only the returned decision and one scratch list.
    pub fn route<S: AsRef<str>>(
        &self,
        request: &RouteRequest<'_, S>,
    ) -> Result<Decision, RouterError> {
        let table = self.table.load();
        let requested = table.group(request.model);
        let (policy, plan, model_group) = match table.policy_for(request) {
            Some(policy) => {
                let group = requested.map(|g| &g.name).or(policy.model_group.as_ref());
                (
                    Some(policy),
                    &policy.plan,
                    group.cloned().unwrap_or_else(|| "".into()),
                )
            }
            None => {
                let group = requested.ok_or_else(|| RouterError::UnknownModelGroup {
                    name: request.model.to_owned(),
                    known: table.group_names(),
                })?;
                (None, &group.plan, group.name.clone())
            }
        };
        let query = Query::new(request, &table, plan);
        let now = self.clock.now();
        let mut rng = SplitMix64::new(
            request
                .seed
                .unwrap_or_else(|| next_shared_seed(&self.seeds)),
        );
        let mut candidates = Vec::with_capacity(plan.tiers.iter().map(Vec::len).sum());
        let mut rejected = Vec::new();
        let mut survivors = Vec::new();
        // The earliest time a deployment that is only waiting on a budget or
        // a provider's Retry-After could take the request.
        let mut retry_at: Option<Nanos> = None;
        let needs = plan.strategy.needs();
        for (tier_number, tier) in (0u32..).zip(&plan.tiers) {
            survivors.clear();
            for deployment in tier.iter().map(|&i| &table.deployments[i]) {
                let rejection = query.reject(deployment).or_else(|| {
                    let (rejection, until) = unavailable(deployment, request, now)?;
                    earliest(&mut retry_at, until);
                    Some(rejection)
                });
                match rejection {
                    Some(rejection) => rejected.push(rejection),
                    None => survivors.push(Survivor {
                        deployment,
                        signals: signals(deployment, &query, needs, now),
                    }),
                }
            }
            let start = candidates.len();
            let mut context = OrderContext {
                rng: &mut rng,
                rotation: &plan.rotation,
                advance_rotation: !request.dry_run,
                scoring: &table.scoring,
            };
            plan.strategy
                .order(&survivors, &mut context, &mut candidates);
            // Affinity applies to the primary candidates: a fallback tier is a
            // different set, so keeping a session there has nothing to keep.
            if start == 0 && !request.affinity_key.is_empty() {
                stick(&mut candidates, &survivors, request.affinity_key);
            }
            for candidate in &mut candidates[start..] {
                candidate.tier = tier_number;
            }
        }
        let mut decision = Decision {
            model_group,
            policy: policy.map(|p| p.id.clone()),
            strategy: plan.strategy,
            candidates,
            rejected,
            lease: None,
            retry_after: None,
            hedge: policy.and_then(|p| p.hedge),
            content_fallback: policy.map_or_else(ContentFallback::default, |p| p.content_fallback),
        };
        if !request.dry_run {
            lease_first(&table, &mut decision, request, now, &mut retry_at);
        }
        if decision.candidates.is_empty() {
            decision.retry_after = retry_at.map(|at| Duration::from_nanos(at.saturating_sub(now)));
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
        let table = self.table.load();
        let target = table
            .deployment(deployment)
            .ok_or_else(|| RouterError::UnknownDeployment(deployment.to_owned()))?;
        let now = self.clock.now();
        let tokens = (input_tokens, max_output_tokens);
        lease_on(&table, target, tenant, api_key, tokens, now).map_err(|denied| {
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
    /// reports its input, the calibration of the input estimate.
    pub fn record(&self, lease: Lease, outcome: &Outcome) -> Result<(), RouterError> {
        for latency in std::iter::once(outcome.latency_ms).chain(outcome.ttft_ms) {
            if !(latency.is_finite() && latency >= 0.0) {
                self.release(lease);
                return Err(RouterError::InvalidLatency(latency));
            }
        }
        let now = self.clock.now();
        let used = outcome.input_tokens.saturating_add(outcome.output_tokens);
        lease.limits.settle(lease.reservation, used, now);
        lease.counters.record(outcome);
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
        Ok(())
    }

    /// Gives back a lease whose attempt never produced an outcome (abandoned,
    /// or cancelled by the client): the reserved budget returns in full.
    pub fn release(&self, lease: Lease) {
        let now = self.clock.now();
        lease.limits.release(lease.reservation, now);
        lease.counters.end_attempt();
        if lease.probe {
            lease.health.abandon_probe(now);
        }
    }

    fn eject_outliers(&self, deployment: &str, now: Nanos) {
        let table = self.table.load();
        let Some(recorded) = table.deployment(deployment) else {
            return;
        };
        for group in recorded.groups.iter().map(|&g| &table.groups[g]) {
            if group.outlier_gate.try_pass(now, OUTLIER_INTERVAL) {
                let peers: Vec<&Health> = group
                    .members()
                    .iter()
                    .map(|&i| &*table.deployments[i].health)
                    .collect();
                eject_outliers(&peers, recorded.health.policy(), now);
            }
        }
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

/// Leases the first candidate that can take the attempt now, rejecting those
/// that cannot (a race with other requests, or a probe already claimed). A
/// tenant or API key out of budget rejects every candidate.
fn lease_first<S>(
    table: &Table,
    decision: &mut Decision,
    request: &RouteRequest<'_, S>,
    now: Nanos,
    retry_at: &mut Option<Nanos>,
) {
    while let Some(first) = decision.candidates.first() {
        let deployment = table
            .deployment(&first.deployment)
            .expect("candidates come from this table");
        match lease_on(
            table,
            deployment,
            request.tenant,
            request.api_key,
            (request.input_tokens, request.max_output_tokens),
            now,
        ) {
            Ok(lease) => {
                decision.lease = Some(lease);
                return;
            }
            Err(denied) => {
                earliest(retry_at, denied.retry_at);
                let rejected: Vec<Candidate> = if denied.everyone {
                    decision.candidates.drain(..).collect()
                } else {
                    vec![decision.candidates.remove(0)]
                };
                decision
                    .rejected
                    .extend(rejected.into_iter().map(|c| Rejection {
                        deployment: c.deployment,
                        filter: denied.filter,
                        detail: denied.detail.clone(),
                    }));
            }
        }
    }
}

fn earliest(current: &mut Option<Nanos>, candidate: Option<Nanos>) {
    if let Some(at) = candidate {
        *current = Some(current.map_or(at, |c| c.min(at)));
    }
}

/// Outlier ejection compares a group's tail latencies at most this often.
const OUTLIER_INTERVAL: Duration = Duration::from_secs(1);

/// What the strategy needs to know of `deployment` for this request; the rest
/// keeps its neutral default.
fn signals<S: AsRef<str>>(
    deployment: &Deployment,
    query: &Query<'_, S>,
    needs: Needs,
    now: Nanos,
) -> Signals {
    let mut signals = Signals::default();
    if needs.cost {
        signals.cost_usd = query.cost_usd(deployment);
    }
    if needs.latency {
        signals.tail_latency_ms = deployment.health.tail_latency_ms();
    }
    if needs.errors {
        signals.error_rate = deployment.health.error_rate(now).unwrap_or(0.0);
    }
    if needs.load {
        signals.in_flight = deployment.stats.in_flight();
    }
    if needs.headroom {
        signals.headroom = deployment.limit.headroom(now);
    }
    signals
}

/// The health and rate-limit filters: `None` if the deployment can take the
/// request's attempt now (a half-open breaker admits its probe; the lease
/// claims it). Otherwise the rejection, and when waiting would let it serve:
/// for a spent budget or a provider's Retry-After, not for an open circuit.
///
/// Budgets are checked here only when explaining (`dry_run`): a real decision
/// reserves on its first candidates in turn, which checks exactly, and skips
/// a lock per deployment it will never try.
fn unavailable<S>(
    deployment: &Deployment,
    request: &RouteRequest<'_, S>,
    now: Nanos,
) -> Option<(Rejection, Option<Nanos>)> {
    let (filter, detail, until) = match deployment.health.admit(now) {
        admission @ Admission::Unavailable { until, reason } => {
            let waiting_helps = reason == UnavailableReason::CoolingDown;
            (
                Filter::Health,
                admission.explain(now).to_string(),
                waiting_helps.then_some(until),
            )
        }
        _ if !request.dry_run => return None,
        _ => {
            let tokens =
                deployment.reserved_tokens(request.input_tokens, request.max_output_tokens);
            match deployment.limit.check(tokens, now) {
                Ok(()) => return None,
                Err(denied) => {
                    let denied = budget_denied(Owner::Deployment, denied, "", "", tokens);
                    (denied.filter, denied.detail, denied.retry_at)
                }
            }
        }
    };
    let rejection = Rejection {
        deployment: deployment.id.clone(),
        filter,
        detail,
    };
    Some((rejection, until))
}

/// Why a lease could not be had.
struct LeaseDenied {
    filter: Filter,
    detail: String,
    /// When the same lease could succeed; `None` if waiting cannot help.
    retry_at: Option<Nanos>,
    /// A tenant's or API key's budget: no deployment can take the request.
    everyone: bool,
}

/// Reserves the (input estimate, max output) `tokens`, the input as the
/// deployment counts it, on the deployment's, tenant's and key's budgets at
/// once, claims the probe if the breaker is half-open, and counts the attempt
/// in flight.
fn lease_on(
    table: &Table,
    deployment: &Deployment,
    tenant: &str,
    api_key: &str,
    (estimated_input_tokens, max_output_tokens): (u32, u32),
    now: Nanos,
) -> Result<Lease, LeaseDenied> {
    let probe = match deployment.health.admit(now) {
        admission @ Admission::Unavailable { until, reason } => {
            // As for the route filter: only a provider's cool-down ends at a known time
            // worth waiting for; an open circuit or an ejection is no rate limit.
            let waiting_helps = reason == UnavailableReason::CoolingDown;
            return Err(LeaseDenied {
                filter: Filter::Health,
                detail: admission.explain(now).to_string(),
                retry_at: waiting_helps.then_some(until),
                everyone: false,
            });
        }
        Admission::Probe => true,
        Admission::Available => false,
    };
    let tokens = deployment.reserved_tokens(estimated_input_tokens, max_output_tokens);
    let limits = Limits {
        deployment: Arc::clone(&deployment.limit),
        tenant: table.tenant_limits.get(tenant).cloned(),
        api_key: table.api_key_limits.get(api_key).cloned(),
    };
    let reservation = limits
        .with(|all| reserve(all, tokens, now))
        .map_err(|denied| {
            let owner = limits.owner(denied.owner_index());
            budget_denied(owner, denied, tenant, api_key, tokens)
        })?;
    if probe && !deployment.health.claim_probe(now) {
        limits.release(reservation, now);
        return Err(LeaseDenied {
            filter: Filter::Health,
            detail: "half-open, and another request is already probing it".to_owned(),
            retry_at: None,
            everyone: false,
        });
    }
    deployment.stats.start_attempt();
    Ok(Lease {
        deployment: Arc::clone(&deployment.id),
        counters: Arc::clone(&deployment.stats),
        health: Arc::clone(&deployment.health),
        limits,
        reservation,
        probe,
        calibration: Arc::clone(&deployment.calibration),
        estimated_input_tokens,
    })
}

/// Explains a denial of `owner`'s budget.
fn budget_denied(
    owner: Owner,
    denied: Denied,
    tenant: &str,
    api_key: &str,
    tokens: u32,
) -> LeaseDenied {
    let whose = match owner {
        Owner::Deployment => "deployment".to_owned(),
        Owner::Tenant => format!("tenant {tenant:?}"),
        Owner::ApiKey => format!("API key {api_key:?}"),
    };
    let (detail, retry_at) = match denied {
        Denied::Exhausted { kind, retry_at, .. } => {
            (format!("{whose} {kind} budget exhausted"), Some(retry_at))
        }
        Denied::TooLarge {
            kind, per_minute, ..
        } => (
            format!("needs {tokens} tokens, more than the {whose} {kind} limit of {per_minute}"),
            None,
        ),
    };
    LeaseDenied {
        filter: Filter::RateLimit,
        detail,
        retry_at,
        everyone: owner != Owner::Deployment,
    }
}

/// Moves the session's deployment to the front of `candidates`: weighted
/// rendezvous hashing of (key, deployment) into (0, 1) picks the same one for
/// the same key on every replica, for as long as it survives the filters,
/// and spreads keys in proportion to weight.
fn stick(candidates: &mut [Candidate], survivors: &[Survivor<'_>], key: &str) {
    let Some(chosen) = survivors
        .iter()
        .map(|s| {
            let u = unit_hash(key, &s.deployment.id);
            (-s.deployment.weight / u.ln(), &s.deployment.id)
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, id)| id)
    else {
        return;
    };
    if let Some(position) = candidates.iter().position(|c| &c.deployment == chosen) {
        candidates[..=position].rotate_right(1);
    }
}

/// FNV-1a over `key`, a separator and `id`, mixed, mapped into (0, 1): stable
/// across processes and Rust versions, unlike `DefaultHasher`.
fn unit_hash(key: &str, id: &str) -> f64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes().chain([0xff]).chain(id.bytes()) {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    ((crate::strategy::mix64(hash) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ConfigError;
    use crate::testing::{chat_config, config, deployment, group};

    fn router() -> Router {
        Router::new(&chat_config()).unwrap()
    }

    fn ok() -> Outcome {
        Outcome {
            input_tokens: 3,
            output_tokens: 4,
            ..Outcome::ok(10.0)
        }
    }

    /// Records `outcome` on a fresh lease of `deployment`.
    fn record_on(router: &Router, deployment: &str, outcome: &Outcome) -> Result<(), RouterError> {
        let lease = router.reserve(deployment, "", "", 0, 0)?;
        router.record(lease, outcome)
    }

    /// The decision's order and explanation, which equal seeds must reproduce.
    fn explained(decision: &Decision) -> (Vec<Candidate>, Vec<Rejection>) {
        (decision.candidates.clone(), decision.rejected.clone())
    }

    #[test]
    fn router_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Router>();
    }

    #[test]
    fn decision_lists_candidates_and_explains_rejections() {
        let request = RouteRequest {
            capabilities: &["vision"],
            seed: Some(1),
            ..RouteRequest::new("chat")
        };
        let decision = router().route(&request).unwrap();
        assert_eq!(
            (&*decision.model_group, decision.strategy),
            ("chat", Strategy::Weighted)
        );
        let mut ids: Vec<&str> = decision.candidates.iter().map(|c| &*c.deployment).collect();
        ids.sort_unstable();
        assert_eq!(ids, ["c", "d"]);
        let rejected: Vec<(&str, Filter)> = decision
            .rejected
            .iter()
            .map(|r| (&*r.deployment, r.filter))
            .collect();
        assert_eq!(
            rejected,
            [("a", Filter::Capabilities), ("b", Filter::Capabilities)]
        );
    }

    #[test]
    fn all_rejected_gives_empty_candidates() {
        let request = RouteRequest {
            regions: &["mars"],
            ..RouteRequest::new("chat")
        };
        let decision = router().route(&request).unwrap();
        assert!(decision.candidates.is_empty());
        assert_eq!(decision.rejected.len(), 4);
    }

    #[test]
    fn same_seed_same_decision() {
        let router = router();
        let request = RouteRequest {
            seed: Some(99),
            ..RouteRequest::new("chat")
        };
        assert_eq!(
            explained(&router.route(&request).unwrap()),
            explained(&router.route(&request).unwrap())
        );
    }

    #[test]
    fn auto_selects_the_default_group() {
        let decision = router().route(&RouteRequest::new("auto")).unwrap();
        assert_eq!(&*decision.model_group, "chat");
    }

    #[test]
    fn unknown_group_lists_known_groups_sorted() {
        let json = config(
            vec![deployment("x", "eu", 10, &[])],
            vec![
                group("zeta", "weighted", &["x"]),
                group("alpha", "priority", &["x"]),
            ],
        );
        let router = Router::new(&json).unwrap();
        let known = vec!["alpha".to_string(), "zeta".to_string()];
        for model in ["gpt-9", "auto"] {
            let err = router.route(&RouteRequest::new(model)).unwrap_err();
            let expected = RouterError::UnknownModelGroup {
                name: model.into(),
                known: known.clone(),
            };
            assert_eq!(err, expected);
        }
        let message = |model| {
            router
                .route(&RouteRequest::new(model))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            message("gpt-9"),
            "unknown model group \"gpt-9\" (known: alpha, zeta)"
        );
        let auto =
            "model \"auto\" needs a default_group, and none is configured (known: alpha, zeta)";
        assert_eq!(message("auto"), auto);
    }

    #[test]
    fn record_updates_stats_and_rejects_bad_input() {
        let router = router();
        record_on(&router, "b", &ok()).unwrap();
        let stats = router.stats();
        assert_eq!(
            stats
                .iter()
                .map(|s| s.deployment.as_str())
                .collect::<Vec<_>>(),
            ["a", "b", "c", "d"]
        );
        assert_eq!(
            (
                stats[1].requests,
                stats[1].health.ewma_latency_ms,
                stats[1].output_tokens,
                stats[1].in_flight,
            ),
            (1, Some(10.0), 4, 0)
        );
        assert_eq!(stats[0].requests, 0);
        assert_eq!(
            record_on(&router, "zz", &ok()),
            Err(RouterError::UnknownDeployment("zz".into()))
        );
        let nan = Outcome {
            latency_ms: f64::NAN,
            ..ok()
        };
        assert!(matches!(
            record_on(&router, "b", &nan),
            Err(RouterError::InvalidLatency(_))
        ));
        let stats = router.stats();
        assert_eq!(
            (stats[1].requests, stats[1].in_flight),
            (1, 0),
            "a rejected record releases its lease"
        );
    }

    #[test]
    fn reload_keeps_stats_of_surviving_deployments() {
        let router = router();
        record_on(&router, "a", &ok()).unwrap();
        record_on(&router, "b", &ok()).unwrap();
        let json = config(
            vec![
                deployment("b", "us", 10, &[]),
                deployment("e", "us", 10, &[]),
            ],
            vec![group("small", "priority", &["e", "b"])],
        );
        router.reload(&json).unwrap();
        let requests: Vec<(String, u64)> = router
            .stats()
            .into_iter()
            .map(|s| (s.deployment, s.requests))
            .collect();
        assert_eq!(requests, [("b".to_string(), 1), ("e".to_string(), 0)]);
        assert_eq!(router.default_group(), None);
        assert_eq!(
            router.model_groups(),
            [("small".to_string(), vec!["e".to_string(), "b".to_string()])]
        );
    }

    #[test]
    fn failed_reload_keeps_the_old_table() {
        let router = router();
        let err = router
            .reload(r#"{"deployments": [], "model_groups": [], "extra": 1}"#)
            .unwrap_err();
        assert!(
            matches!(err, RouterError::Config(ConfigError::Schema { .. })),
            "{err}"
        );
        assert_eq!(router.default_group().as_deref(), Some("chat"));
        assert!(router.route(&RouteRequest::new("chat")).is_ok());
    }

    #[test]
    fn concurrent_route_record_and_reload() {
        let router = router();
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..500 {
                        let decision = router.route(&RouteRequest::new("auto")).unwrap();
                        router.record(decision.lease.unwrap(), &ok()).unwrap();
                    }
                });
            }
            scope.spawn(|| {
                for _ in 0..20 {
                    router.reload(&chat_config()).unwrap();
                }
            });
        });
        assert_eq!(router.stats().iter().map(|s| s.requests).sum::<u64>(), 2000);
    }
}
