//! What `route` learns of each deployment in a tier once the request's
//! filters pass it: whether it can take an attempt now, and the signals its
//! strategy orders by.

use crate::clock::Nanos;
use crate::filter::{Filter, Query};
use crate::health::Admission;
use crate::lease::Owner;
use crate::ratelimit::Keep;
use crate::strategy::{Needs, Signals};
use crate::table::Deployment;

use super::leasing::budget_denied;
use super::Rejection;

/// What the strategy needs to know of `deployment` for this request; the rest
/// keeps its neutral default.
pub(super) fn signals(deployment: &Deployment, query: &Query, needs: Needs, now: Nanos) -> Signals {
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
/// Budgets are checked here (leaving `keep` of the deployment's for callers of
/// higher priority) only when explaining (`dry_run`): a real decision
/// reserves on its first candidates in turn, which checks exactly, and skips
/// a lock per deployment it will never try.
pub(super) fn unavailable(
    deployment: &Deployment,
    query: &Query,
    dry_run: bool,
    keep: Keep,
    now: Nanos,
) -> Option<(Rejection, Option<Nanos>)> {
    let (filter, detail, until) = match deployment.health.admit(now) {
        admission @ Admission::Unavailable { .. } => (
            Filter::Health,
            admission.explain(now).to_string(),
            admission.worth_waiting_until(),
        ),
        _ if !dry_run => return None,
        _ => {
            let tokens = deployment.reserved_tokens(query.input_tokens, query.max_output_tokens);
            match deployment.limit.check_keeping(tokens, now, keep) {
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
