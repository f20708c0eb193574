//! The façade: a `Router` owns the current table and answers `route`,
//! `record`, `stats` and `reload`. It is `Send + Sync`; routing and recording
//! read the table through `ArcSwap`, which takes no lock.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;

use crate::clock::Clock;
use crate::config::Config;
use crate::error::RouterError;
use crate::filter::{Filter, Query};
use crate::stats::{DeploymentStats, Outcome};
use crate::strategy::{next_shared_seed, OrderContext, Signals, SplitMix64, Strategy, Survivor};
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
#[derive(Debug, Clone, PartialEq)]
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
}

#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub deployment: Arc<str>,
    /// Strategy-specific, in [0, 1], higher is better (see [`Strategy`]).
    pub score: f64,
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
                    Some(policy.id.clone()),
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
        let mut rng = SplitMix64::new(
            request
                .seed
                .unwrap_or_else(|| next_shared_seed(&self.seeds)),
        );
        let mut candidates = Vec::with_capacity(plan.tiers.iter().map(Vec::len).sum());
        let mut rejected = Vec::new();
        let mut survivors = Vec::new();
        for tier in &plan.tiers {
            survivors.clear();
            for deployment in tier.iter().map(|&i| &table.deployments[i]) {
                match query.reject(deployment) {
                    Some(rejection) => rejected.push(rejection),
                    None => survivors.push(Survivor {
                        deployment,
                        signals: signals(deployment, &query),
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
        }
        Ok(Decision {
            model_group,
            policy,
            strategy: plan.strategy,
            candidates,
            rejected,
        })
    }

    /// Counts one attempt's outcome against a deployment of the current table.
    pub fn record(&self, outcome: &Outcome<'_>) -> Result<(), RouterError> {
        if !(outcome.latency_ms.is_finite() && outcome.latency_ms >= 0.0) {
            return Err(RouterError::InvalidLatency(outcome.latency_ms));
        }
        let table = self.table.load();
        let deployment = table
            .deployment(outcome.deployment)
            .ok_or_else(|| RouterError::UnknownDeployment(outcome.deployment.to_owned()))?;
        deployment.stats.record(outcome);
        Ok(())
    }

    /// One entry per deployment of the current table, in config order.
    pub fn stats(&self) -> Vec<DeploymentStats> {
        let table = self.table.load();
        table
            .deployments
            .iter()
            .map(|d| d.stats.snapshot(&d.id))
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

/// What the strategies know of `deployment` for this request.
fn signals<S: AsRef<str>>(deployment: &Deployment, query: &Query<'_, S>) -> Signals {
    let stats = &deployment.stats;
    Signals {
        cost_usd: query.cost_usd(deployment),
        tail_latency_ms: stats.ewma_latency_ms(),
        error_rate: stats.error_rate(),
        in_flight: stats.in_flight(),
        headroom: 1.0,
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

    fn ok(deployment: &str) -> Outcome<'_> {
        Outcome {
            deployment,
            success: true,
            latency_ms: 10.0,
            input_tokens: 3,
            output_tokens: 4,
        }
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
            router.route(&request).unwrap(),
            router.route(&request).unwrap()
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
        router.record(&ok("b")).unwrap();
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
                stats[1].ewma_latency_ms,
                stats[1].output_tokens
            ),
            (1, Some(10.0), 4)
        );
        assert_eq!(stats[0].requests, 0);
        assert_eq!(
            router.record(&ok("zz")),
            Err(RouterError::UnknownDeployment("zz".into()))
        );
        let nan = Outcome {
            latency_ms: f64::NAN,
            ..ok("b")
        };
        assert!(matches!(
            router.record(&nan),
            Err(RouterError::InvalidLatency(_))
        ));
        assert_eq!(router.stats()[1].requests, 1);
    }

    #[test]
    fn reload_keeps_stats_of_surviving_deployments() {
        let router = router();
        router.record(&ok("a")).unwrap();
        router.record(&ok("b")).unwrap();
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
                        router
                            .record(&ok(&decision.candidates[0].deployment))
                            .unwrap();
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
