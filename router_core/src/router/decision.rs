//! The request and decision data that cross the router's API: what a caller
//! asks routed, and the ordered candidates (with the rejected ones explained)
//! it gets back.

use std::sync::Arc;
use std::time::Duration;

use crate::attempts::{ContentFallback, Hedge};
use crate::filter::Filter;
use crate::lease::Lease;
use crate::strategy::Strategy;

use super::draw::Drawing;
use super::{Assignment, ShadowCopy};

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
    /// What the caller favours among the candidates, in place of the plan's strategy.
    pub preference: Option<Preference>,
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
            preference: None,
            seed: None,
            dry_run: false,
        }
    }
}

/// What a caller may favour among the deployments that qualify; each stands for a strategy
/// that orders them for this request instead of the plan's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preference {
    /// The cheapest first: [`Strategy::LowestCost`].
    Cost,
    /// The fastest first: [`Strategy::LowestLatency`].
    Latency,
}

impl<'a, S: AsRef<str>> RouteRequest<'a, S> {
    /// The value of the metadata field `key`; empty when the request has none.
    pub(crate) fn metadata_value(&self, key: &str) -> &'a str {
        self.metadata
            .iter()
            .find(|(k, _)| k.as_ref() == key)
            .map_or("", |(_, v)| v.as_ref())
    }
}

impl Preference {
    pub fn strategy(self) -> Strategy {
        match self {
            Preference::Cost => Strategy::LowestCost,
            Preference::Latency => Strategy::LowestLatency,
        }
    }
}

/// The router's answer: deployments to try in order, and why the others were left out.
///
/// A decision from [`crate::Router::decide`] holds its candidates as far as
/// they have been drawn: [`Decision::draw`] draws more, [`Decision::draw_all`]
/// the rest. `rejected` lists the deployments met and rejected so far; once
/// every candidate is drawn it lists all of them, in the plan's order.
#[derive(Debug)]
pub struct Decision {
    /// The requested group, or the first group of the matched policy's target
    /// (empty when the policy names only deployments).
    pub model_group: Arc<str>,
    /// The policy that decided; `None` when no policy matched and the model
    /// group's own strategy applied.
    pub policy: Option<Arc<str>>,
    pub strategy: Strategy,
    /// Best first, as far as drawn; empty once drawn when every deployment was rejected.
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
    /// The matched policy's experiment and the variant this request was assigned.
    pub experiment: Option<Assignment>,
    /// Where to copy this request, when the matched policy shadows and this
    /// request was sampled.
    pub shadow: Option<ShadowCopy>,
    /// What draws the candidates not drawn yet.
    pub(super) drawing: Option<Box<Drawing>>,
}

impl Decision {
    /// Draws candidates until `candidates[index]` exists or none are left;
    /// whether it exists.
    pub fn draw(&mut self, index: usize) -> bool {
        if self.candidates.len() > index {
            return true;
        }
        match &self.drawing {
            Some(drawing) => {
                let now = drawing.clock.now();
                self.draw_at(index, now)
            }
            None => false,
        }
    }

    /// [`Decision::draw`], judging health and budgets at `now`.
    pub(super) fn draw_at(&mut self, index: usize, now: crate::clock::Nanos) -> bool {
        while self.candidates.len() <= index {
            let Some(drawing) = self.drawing.as_mut().filter(|d| !d.is_done()) else {
                return false; // finished (and sorted) when the last tier ran out
            };
            match drawing.next(now, &mut self.rejected) {
                Some(candidate) => self.candidates.push(candidate),
                None => {
                    self.finish();
                    return false;
                }
            }
        }
        true
    }

    /// Draws every candidate left.
    pub fn draw_all(&mut self) {
        self.draw(usize::MAX);
    }

    /// Whether every candidate has been drawn.
    pub fn is_complete(&self) -> bool {
        self.drawing.as_ref().is_none_or(|d| d.is_done())
    }

    /// When the first of the deployments only waiting on a budget or a
    /// provider's Retry-After could take the request, as far as met.
    pub(super) fn retry_at(&self) -> Option<crate::clock::Nanos> {
        self.drawing.as_ref().and_then(|d| d.retry_at)
    }

    /// Puts the rejections in the plan's order, now that all are known.
    pub(super) fn finish(&mut self) {
        if let Some(drawing) = &self.drawing {
            drawing.sort(&mut self.rejected);
        }
    }
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
