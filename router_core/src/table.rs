//! The compiled, immutable routing table (phase two of the config). Names are
//! interned once here so that routing touches integers and bitmasks, and the
//! only string hashing per request is the model-group lookup.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use crate::attempts::{ContentFallback, Hedge};
use crate::calibration::Calibration;
use crate::clock::Nanos;
use crate::config::{
    Config, PolicyConfig, Priority, ScoringConfig, StickyKey, TargetConfig, AUTO_GROUP,
};
use crate::health::{Health, RateGate};
use crate::matcher::Matcher;
use crate::measures::CallCounters;
use crate::ratelimit::{Keep, Limit, LimitSpec, Refill};
use crate::router::RouteRequest;
use crate::state::{Payload, Place, Region};
use crate::stats::Counters;
use crate::strategy::Strategy;
use crate::weights::{integer_weights, WeightTree};

/// Capabilities and regions each live in a `u64` bitmask (the top bit is kept for [`IMPOSSIBLE`]).
pub const MAX_NAMES: usize = 63;

/// Config validation caps names at 63 bits, so this bit is never a real
/// capability: requiring it leaves no candidate.
pub(crate) const IMPOSSIBLE: u64 = 1 << 63;

/// Names interned to bit positions. Lookups scan linearly: with at most 64
/// short names that is cheaper than hashing, and it keeps routing hash-free.
#[derive(Debug, Default)]
pub(crate) struct NameBits {
    names: Vec<String>,
}

impl NameBits {
    /// The bit for `name`, or `None` when no deployment uses it.
    pub(crate) fn bit(&self, name: &str) -> Option<u64> {
        self.names.iter().position(|n| n == name).map(|i| 1 << i)
    }

    /// The name behind a single-bit mask.
    pub(crate) fn name(&self, bit: u64) -> &str {
        &self.names[bit.trailing_zeros() as usize]
    }

    /// Every name with its bit, in interning order.
    pub(crate) fn names(&self) -> impl Iterator<Item = (&str, u64)> {
        self.names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), 1 << i))
    }

    /// Config validation guarantees at most `MAX_NAMES` distinct names.
    fn intern(&mut self, name: &str) -> u64 {
        self.bit(name).unwrap_or_else(|| {
            self.names.push(name.to_owned());
            1 << (self.names.len() - 1)
        })
    }
}

#[derive(Debug)]
pub(crate) struct Deployment {
    pub(crate) id: Arc<str>,
    /// A single bit in the table's region set.
    pub(crate) region: u64,
    pub(crate) context_window: u32,
    pub(crate) capabilities: u64,
    pub(crate) prices: Prices,
    pub(crate) weight: f64,
    pub(crate) priority: u32,
    /// Shared with the table this one replaced when the id survives a reload.
    pub(crate) stats: Arc<Counters>,
    /// The deployment's own rpm/tpm budget. Leases hold it, so an attempt
    /// started before a reload settles on the budget it was taken from.
    pub(crate) limit: Arc<Limit>,
    /// Breaker, cool-downs and latency estimate; carried over a reload.
    pub(crate) health: Arc<Health>,
    /// How this deployment counts input against the estimate; carried over a reload.
    pub(crate) calibration: Arc<Calibration>,
    /// Indices of the groups this deployment belongs to: its peers for
    /// outlier ejection.
    pub(crate) groups: Vec<usize>,
}

impl Deployment {
    /// Tokens an attempt reserves here: the input estimate as this deployment
    /// counts it (calibrated), plus the max output.
    pub(crate) fn reserved_tokens(&self, estimated_input: u32, max_output: u32) -> u32 {
        self.calibration
            .apply(estimated_input)
            .saturating_add(max_output)
    }

    /// What a request of this size would cost here at most, in USD.
    pub(crate) fn cost_usd(&self, input_tokens: u32, max_output_tokens: u32) -> f64 {
        self.prices.cost_usd(input_tokens, max_output_tokens)
    }
}

/// A deployment's prices in USD per million tokens, and the one formula for
/// what tokens cost: the estimate a cost filter or strategy weighs, and the
/// cost of an answer its lease settles.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Prices {
    pub(crate) input_per_mtok: f64,
    pub(crate) output_per_mtok: f64,
}

impl Prices {
    pub(crate) fn cost_usd(self, input_tokens: u32, output_tokens: u32) -> f64 {
        (f64::from(input_tokens) * self.input_per_mtok
            + f64::from(output_tokens) * self.output_per_mtok)
            / 1_000_000.0
    }
}

/// Where a policy or a model group sends requests, compiled.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) strategy: Strategy,
    /// The primary candidates, then each fallback in turn. A deployment sits
    /// only in the first tier that names it.
    pub(crate) tiers: Vec<Tier>,
    pub(crate) max_cost_usd: Option<f64>,
    /// `None` allows any region.
    pub(crate) regions: Option<u64>,
    pub(crate) capabilities: u64,
    pub(crate) rotation: Rotation,
}

/// Round-robin position: this process's own, starting again at zero after a
/// reload, or for a round-robin plan in a shared region, the host's.
pub(crate) type Rotation = Place<Cursor>;

/// A round-robin position.
#[repr(transparent)]
#[derive(Debug, Default)]
pub(crate) struct Cursor(pub(crate) AtomicU64);

// Safety: an atomic integer; zero is the first turn.
unsafe impl Payload for Cursor {}

/// The position `key` names in `region`, for a plan that turns round-robin;
/// else this process's own.
fn rotation(strategy: Strategy, region: Option<&Arc<Region>>, key: &str) -> Rotation {
    Place::at(region.filter(|_| strategy == Strategy::RoundRobin), key)
}

/// One tier of a plan, with what drawing from it needs precomputed.
#[derive(Debug)]
pub(crate) struct Tier {
    /// Indices into `Table::deployments`, in the order the strategy expects
    /// (see [`Strategy::member_order`]).
    pub(crate) members: Vec<usize>,
    /// The members' weights, for weighted draws without replacement.
    pub(crate) weights: WeightTree,
    /// The members' total weight, in the tree's integer units.
    pub(crate) total_weight: u64,
    /// Ranges of `members` of equal rank (one range unless the strategy ranks).
    pub(crate) runs: Vec<Range<usize>>,
}

impl Tier {
    fn new(strategy: Strategy, members: Vec<usize>, deployments: &[Deployment]) -> Tier {
        let weights = integer_weights(members.iter().map(|&i| deployments[i].weight));
        let mut runs: Vec<Range<usize>> = Vec::new();
        for (position, &i) in members.iter().enumerate() {
            match runs.last_mut() {
                Some(run)
                    if strategy.rank(&deployments[members[run.start]])
                        == strategy.rank(&deployments[i]) =>
                {
                    run.end = position + 1;
                }
                _ => runs.push(position..position + 1),
            }
        }
        Tier {
            total_weight: weights.iter().sum(),
            weights: WeightTree::new(&weights),
            members,
            runs,
        }
    }
}

impl Plan {
    fn new(
        strategy: Strategy,
        tiers: Vec<Vec<usize>>,
        deployments: &[Deployment],
        rotation: Rotation,
    ) -> Plan {
        let mut seen = HashSet::new();
        let tiers = tiers
            .into_iter()
            .map(|tier| {
                let mut members: Vec<usize> =
                    tier.into_iter().filter(|&i| seen.insert(i)).collect();
                strategy.member_order(&mut members, deployments);
                members
            })
            .filter(|members| !members.is_empty())
            .map(|members| Tier::new(strategy, members, deployments))
            .collect();
        Plan {
            strategy,
            tiers,
            max_cost_usd: None,
            regions: None,
            capabilities: 0,
            rotation,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Group {
    pub(crate) name: Arc<str>,
    /// A single tier: the group's deployments.
    pub(crate) plan: Plan,
    /// Outlier ejection compares the group's members at most once a second.
    pub(crate) outlier_gate: RateGate,
    /// The calls served by the group; carried over a reload.
    pub(crate) calls: Arc<CallCounters>,
}

impl Group {
    pub(crate) fn members(&self) -> &[usize] {
        self.plan.tiers.first().map_or(&[], |tier| &tier.members)
    }
}

#[derive(Debug)]
pub(crate) struct Policy {
    pub(crate) id: Arc<str>,
    /// `None` matches every request.
    pub(crate) when: Option<Matcher>,
    /// One for a plain policy; one per variant for an experiment.
    pub(crate) arms: Vec<Arm>,
    pub(crate) experiment: Option<Experiment>,
    pub(crate) shadow: Option<Shadow>,
    /// Passed on to every decision the policy makes (see [`Hedge`]).
    pub(crate) hedge: Option<Hedge>,
    pub(crate) content_fallback: ContentFallback,
}

/// Where a policy sends a request: its `route_to` (or one variant's target)
/// then its fallback tiers.
#[derive(Debug)]
pub(crate) struct Arm {
    /// The experiment variant's name; `None` outside an experiment.
    pub(crate) variant: Option<Arc<str>>,
    /// What a sticky key is hashed with to score this variant: the experiment's id and the
    /// variant's name, joined once here rather than on every request. Empty outside one.
    pub(crate) sticky_salt: Arc<str>,
    pub(crate) weight: f64,
    pub(crate) plan: Plan,
    /// The first group the arm routes to, reported as the decision's model group.
    pub(crate) model_group: Option<Arc<str>>,
}

#[derive(Debug)]
pub(crate) struct Experiment {
    pub(crate) id: Arc<str>,
    pub(crate) sticky_by: StickyKey,
    /// The sum of the arms' weights.
    pub(crate) total_weight: f64,
}

#[derive(Debug)]
pub(crate) struct Shadow {
    /// Indices into `Table::deployments`.
    pub(crate) deployments: Vec<usize>,
    pub(crate) sample: f64,
    pub(crate) max_in_flight: u32,
}

#[derive(Debug)]
pub(crate) struct Table {
    pub(crate) deployments: Vec<Deployment>,
    deployment_index: HashMap<Arc<str>, usize>,
    pub(crate) groups: Vec<Group>,
    group_index: HashMap<Arc<str>, usize>,
    default_group: Option<usize>,
    pub(crate) policies: Vec<Policy>,
    pub(crate) scoring: ScoringConfig,
    pub(crate) tenant_limits: HashMap<Arc<str>, Arc<Limit>>,
    pub(crate) api_key_limits: HashMap<Arc<str>, Arc<Limit>>,
    /// What each tenant leaves of a deployment's budget for higher priorities
    /// (`RateLimitsConfig::keep_share`); `normal_keep` for any other caller.
    keeps: HashMap<Arc<str>, Keep>,
    normal_keep: Keep,
    /// What a shadow call leaves: more than any caller does.
    pub(crate) shadow_keep: Keep,
    pub(crate) capabilities: NameBits,
    pub(crate) regions: NameBits,
    /// Calls that reached no model group (an unknown model, a bad request).
    pub(crate) unrouted_calls: Arc<CallCounters>,
}

impl Table {
    /// Compiles a validated config. The counters and budgets of deployments
    /// (and tenants and keys) that also exist in `previous` are carried over,
    /// so a reload keeps their stats and does not hand out fresh budget.
    #[cfg(test)]
    pub(crate) fn compile(config: &Config, previous: Option<&Table>, now: Nanos) -> Table {
        Table::compile_sharing(config, previous, now, None, &Arc::default())
    }

    /// [`Table::compile`] with the rate limits kept in `region`, shared with
    /// every process that maps it, when there is one, and refilled as
    /// `refill` says.
    pub(crate) fn compile_sharing(
        config: &Config,
        previous: Option<&Table>,
        now: Nanos,
        region: Option<&Arc<Region>>,
        refill: &Arc<Refill>,
    ) -> Table {
        let mut capabilities = NameBits::default();
        let mut regions = NameBits::default();
        let deployments: Vec<Deployment> = config
            .deployments
            .iter()
            .map(|d| Deployment {
                id: d.id.as_str().into(),
                region: regions.intern(&d.region),
                context_window: d.context_window,
                capabilities: d
                    .capabilities
                    .iter()
                    .fold(0, |mask, c| mask | capabilities.intern(c)),
                prices: Prices {
                    input_per_mtok: d.input_price_per_mtok,
                    output_per_mtok: d.output_price_per_mtok,
                },
                weight: d.weight,
                priority: d.priority,
                stats: match previous.and_then(|t| t.deployment(&d.id)) {
                    Some(old) => Arc::clone(&old.stats),
                    None => Arc::new(Counters::at(region, &d.id)),
                },
                limit: carried_limit(
                    &format!("deployment/{}", d.id),
                    d.limit(),
                    previous
                        .and_then(|t| t.deployment(&d.id))
                        .map(|old| &*old.limit),
                    now,
                    (region, refill),
                ),
                health: Arc::new({
                    let old = previous.and_then(|t| t.deployment(&d.id));
                    let old = old.map(|old| &*old.health);
                    match (region, old) {
                        (Some(region), old) => {
                            Health::shared(config.health.clone(), region, &d.id, old)
                        }
                        (None, Some(old)) => Health::carry_over(old, config.health.clone()),
                        (None, None) => Health::new(config.health.clone()),
                    }
                }),
                calibration: match previous.and_then(|t| t.deployment(&d.id)) {
                    Some(old) => Arc::clone(&old.calibration),
                    None => Arc::new(Calibration::at(region, &d.id)),
                },
                groups: config
                    .model_groups
                    .iter()
                    .enumerate()
                    .filter(|(_, g)| g.deployments.contains(&d.id))
                    .map(|(i, _)| i)
                    .collect(),
            })
            .collect();
        let deployment_index: HashMap<Arc<str>, usize> = deployments
            .iter()
            .enumerate()
            .map(|(i, d)| (Arc::clone(&d.id), i))
            .collect();
        let group_index: HashMap<Arc<str>, usize> = config
            .model_groups
            .iter()
            .enumerate()
            .map(|(i, g)| (g.name.as_str().into(), i))
            .collect();
        let members_of = |target: &TargetConfig| -> Vec<usize> {
            let grouped = target.groups.iter().flat_map(|name| {
                config.model_groups[group_index[name.as_str()]]
                    .deployments
                    .iter()
                    .map(|id| deployment_index[id.as_str()])
            });
            let direct = target
                .deployments
                .iter()
                .map(|id| deployment_index[id.as_str()]);
            grouped.chain(direct).collect()
        };
        let groups: Vec<Group> = config
            .model_groups
            .iter()
            .map(|g| {
                let members = g
                    .deployments
                    .iter()
                    .map(|id| deployment_index[id.as_str()])
                    .collect();
                Group {
                    name: g.name.as_str().into(),
                    plan: Plan::new(
                        g.strategy,
                        vec![members],
                        &deployments,
                        rotation(g.strategy, region, &format!("rotation/group/{}", g.name)),
                    ),
                    outlier_gate: RateGate::new(),
                    calls: match previous.and_then(|t| t.group_named(&g.name)) {
                        Some(old) => Arc::clone(&old.calls),
                        None => Arc::new(CallCounters::at(region, &g.name)),
                    },
                }
            })
            .collect();
        let plan_of = |p: &PolicyConfig, first: &TargetConfig, rotation_name: String| {
            let strategy = config.target_strategy(p, first);
            let tiers = std::iter::once(first)
                .chain(&p.fallback)
                .map(members_of)
                .collect();
            let turns = rotation(strategy, region, &rotation_name);
            let mut plan = Plan::new(strategy, tiers, &deployments, turns);
            let constraints = &p.constraints;
            plan.max_cost_usd = constraints.max_cost_usd;
            // Validation checked that every region exists, so none is lost here.
            plan.regions = constraints.regions.as_ref().map(|names| {
                names
                    .iter()
                    .filter_map(|n| regions.bit(n))
                    .fold(0, |m, b| m | b)
            });
            // A capability no deployment has leaves no candidate, which is what it asks for.
            plan.capabilities = constraints
                .capabilities
                .iter()
                .map(|c| capabilities.bit(c).unwrap_or(IMPOSSIBLE))
                .fold(0, |m, b| m | b);
            Arm {
                variant: None,
                sticky_salt: "".into(),
                weight: 1.0,
                plan,
                model_group: first.groups.first().map(|g| g.as_str().into()),
            }
        };
        let policies = config
            .policies
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let rotation_name = format!("rotation/policy/{}", p.id);
                let arms = match &p.experiment {
                    None => vec![plan_of(p, &p.route_to, rotation_name)],
                    Some(experiment) => (experiment.variants.iter().enumerate())
                        .map(|(j, v)| {
                            let name = v.display_name(j);
                            let arm = plan_of(p, &v.target(), format!("{rotation_name}/{name}"));
                            Arm {
                                sticky_salt: format!("{}\u{0}{name}", experiment.id).into(),
                                variant: Some(name.into()),
                                weight: v.weight,
                                ..arm
                            }
                        })
                        .collect(),
                };
                Policy {
                    id: p.id.as_str().into(),
                    when: p.when.as_ref().map(|w| {
                        Matcher::compile(w, &format!("policies[{i}].when")).expect("validated")
                    }),
                    experiment: p.experiment.as_ref().map(|e| Experiment {
                        id: e.id.as_str().into(),
                        sticky_by: e.sticky_by.clone(),
                        total_weight: arms.iter().map(|a| a.weight).sum(),
                    }),
                    arms,
                    shadow: p.shadow.as_ref().map(|s| Shadow {
                        deployments: s
                            .deployments
                            .iter()
                            .map(|d| deployment_index[d.as_str()])
                            .collect(),
                        sample: s.sample,
                        max_in_flight: s.max_in_flight,
                    }),
                    hedge: p.hedge,
                    content_fallback: p.content_fallback,
                }
            })
            .collect();
        let default_group = config
            .default_group
            .as_ref()
            .map(|name| group_index[name.as_str()]);
        Table {
            unrouted_calls: previous.map_or_else(
                || Arc::new(CallCounters::at(region, "")),
                |t| Arc::clone(&t.unrouted_calls),
            ),
            deployments,
            deployment_index,
            groups,
            group_index,
            default_group,
            policies,
            scoring: config.scoring.clone(),
            keeps: config
                .rate_limits
                .tenant_priorities
                .iter()
                .map(|(tenant, p)| {
                    let keep = Keep::share(config.rate_limits.keep_share(*p));
                    (tenant.as_str().into(), keep)
                })
                .collect(),
            normal_keep: Keep::share(config.rate_limits.keep_share(Priority::Normal)),
            shadow_keep: Keep::share(config.rate_limits.shadow_keep_share()),
            tenant_limits: owner_limits(
                "tenant",
                &config.rate_limits.tenants,
                previous.map(|t| &t.tenant_limits),
                now,
                (region, refill),
            ),
            api_key_limits: owner_limits(
                "api_key",
                &config.rate_limits.api_keys,
                previous.map(|t| &t.api_key_limits),
                now,
                (region, refill),
            ),
            capabilities,
            regions,
        }
    }

    /// The first policy whose condition matches, if any.
    /// The index of the first policy that matches `request`.
    pub(crate) fn policy_for<S: AsRef<str>>(&self, request: &RouteRequest<'_, S>) -> Option<usize> {
        self.policies
            .iter()
            .position(|p| p.when.as_ref().is_none_or(|m| m.matches(request)))
    }

    /// Resolves a requested model: a group name, or `"auto"` for the default group.
    /// What `tenant`'s calls leave of a deployment's budget for callers of
    /// higher priority.
    pub(crate) fn keep_for(&self, tenant: &str) -> Keep {
        self.keeps.get(tenant).copied().unwrap_or(self.normal_keep)
    }

    #[cfg(test)]
    pub(crate) fn group(&self, model: &str) -> Option<&Group> {
        self.group_position(model).map(|i| &self.groups[i])
    }

    /// [`Table::group`]'s index in `groups`.
    pub(crate) fn group_position(&self, model: &str) -> Option<usize> {
        if model == AUTO_GROUP {
            self.default_group
        } else {
            self.group_index.get(model).copied()
        }
    }

    /// The group called `name`, taking "auto" literally (see [`Table::group`]).
    pub(crate) fn group_named(&self, name: &str) -> Option<&Group> {
        self.group_index.get(name).map(|&i| &self.groups[i])
    }

    /// The index of deployment `id` in `deployments`.
    pub(crate) fn deployment_index(&self, id: &str) -> Option<usize> {
        self.deployment_index.get(id).copied()
    }

    pub(crate) fn deployment(&self, id: &str) -> Option<&Deployment> {
        self.deployment_index.get(id).map(|&i| &self.deployments[i])
    }

    pub(crate) fn default_group(&self) -> Option<&Group> {
        self.default_group.map(|i| &self.groups[i])
    }

    /// Sorted, for stable error messages.
    pub(crate) fn group_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.groups.iter().map(|g| g.name.to_string()).collect();
        names.sort_unstable();
        names
    }
}

/// Where a table's limits keep their levels (a shared region, if any) and
/// how they refill.
type LimitHome<'a> = (Option<&'a Arc<Region>>, &'a Arc<Refill>);

/// `key`'s limit: its slot of the shared region when there is one (which
/// keeps its levels across reloads and processes), else a fresh limit or one
/// that keeps the old limit's bucket levels. A full region leaves a limit local.
fn carried_limit(
    key: &str,
    spec: LimitSpec,
    old: Option<&Limit>,
    now: Nanos,
    (region, refill): LimitHome<'_>,
) -> Arc<Limit> {
    if let Some(shared) = region.and_then(|region| Limit::shared(spec, region, key, refill)) {
        return Arc::new(shared);
    }
    Arc::new(match old {
        Some(old) => Limit::with_state_of(spec, old, now),
        None => Limit::under(spec, refill),
    })
}

fn owner_limits(
    kind: &str,
    specs: &BTreeMap<String, LimitSpec>,
    previous: Option<&HashMap<Arc<str>, Arc<Limit>>>,
    now: Nanos,
    home: LimitHome<'_>,
) -> HashMap<Arc<str>, Arc<Limit>> {
    specs
        .iter()
        .map(|(owner, spec)| {
            let old = previous.and_then(|p| p.get(owner.as_str())).map(|l| &**l);
            let limit = carried_limit(&format!("{kind}/{owner}"), *spec, old, now, home);
            (owner.as_str().into(), limit)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{chat_config, config, group, weighted};

    #[test]
    fn names_are_interned_to_bits() {
        let table = Table::compile(&Config::from_json(&chat_config()).unwrap(), None, 0);
        let bit = |name| table.capabilities.bit(name).unwrap();
        let d = table.deployment("d").unwrap();
        assert_eq!(
            d.capabilities,
            bit("streaming") | bit("tools") | bit("vision")
        );
        assert_eq!(table.regions.name(d.region), "us");
        assert_eq!(table.regions.bit("mars"), None);
    }

    #[test]
    fn priority_members_are_sorted_weighted_members_keep_config_order() {
        let json = config(
            vec![
                weighted("p2", 1.0, 2),
                weighted("p0", 1.0, 0),
                weighted("p1", 1.0, 1),
            ],
            vec![
                group("p", "priority", &["p2", "p0", "p1"]),
                group("w", "weighted", &["p2", "p0", "p1"]),
            ],
        );
        let table = Table::compile(&Config::from_json(&json).unwrap(), None, 0);
        let members = |name| -> Vec<&str> {
            table
                .group(name)
                .unwrap()
                .members()
                .iter()
                .map(|&i| &*table.deployments[i].id)
                .collect()
        };
        assert_eq!(members("p"), ["p0", "p1", "p2"]);
        assert_eq!(members("w"), ["p2", "p0", "p1"]);
    }

    #[test]
    fn compile_shares_counters_with_the_previous_table() {
        let config = Config::from_json(&chat_config()).unwrap();
        let old = Table::compile(&config, None, 0);
        let new = Table::compile(&config, Some(&old), 0);
        let (a_old, a_new) = (old.deployment("a").unwrap(), new.deployment("a").unwrap());
        assert!(Arc::ptr_eq(&a_old.stats, &a_new.stats));
    }
}
