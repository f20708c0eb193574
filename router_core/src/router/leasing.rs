//! Taking a lease: reserving rate-limit budget, claiming a half-open
//! breaker's probe and counting the attempt in flight, all or nothing, and
//! explaining a denial in the same terms as a routing rejection.

use std::sync::Arc;

use crate::clock::{Clock, Nanos};
use crate::filter::Filter;
use crate::health::Admission;
use crate::lease::{Lease, Limits, Owner};
use crate::ratelimit::{reserve_keeping, Denied};
use crate::table::{Deployment, Table};

use super::{Candidate, Decision, Rejection, RouteRequest};

/// Leases the first candidate that can take the attempt now, rejecting those
/// that cannot (a race with other requests, or a probe already claimed) and
/// drawing the next. A tenant or API key out of budget rejects every candidate.
pub(super) fn lease_first<S>(
    table: &Table,
    decision: &mut Decision,
    request: &RouteRequest<'_, S>,
    clock: &Clock,
    now: Nanos,
) {
    while decision.draw_at(0, now) {
        let first = &decision.candidates[0];
        let deployment = table
            .deployment(&first.deployment)
            .expect("candidates come from this table");
        match lease_on(
            table,
            deployment,
            LeaseFor::Caller {
                tenant: request.tenant,
                api_key: request.api_key,
            },
            (request.input_tokens, request.max_output_tokens),
            clock,
            now,
        ) {
            Ok(lease) => {
                decision.lease = Some(lease);
                return;
            }
            Err(denied) => {
                if let Some(drawing) = decision.drawing.as_mut() {
                    earliest(&mut drawing.retry_at, denied.retry_at);
                }
                let rejected: Vec<Candidate> = if denied.everyone {
                    decision.draw_all();
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
                if denied.everyone {
                    decision.finish();
                }
            }
        }
    }
}

/// Keeps in `current` the sooner of it and `candidate`: when the first of the
/// deployments that are only waiting could take the request.
pub(super) fn earliest(current: &mut Option<Nanos>, candidate: Option<Nanos>) {
    if let Some(at) = candidate {
        *current = Some(current.map_or(at, |c| c.min(at)));
    }
}

/// Why a lease could not be had.
pub(super) struct LeaseDenied {
    pub(super) filter: Filter,
    pub(super) detail: String,
    /// When the same lease could succeed; `None` if waiting cannot help.
    pub(super) retry_at: Option<Nanos>,
    /// A tenant's or API key's budget: no deployment can take the request.
    everyone: bool,
}

/// Whose attempt a lease is for.
#[derive(Debug, Clone, Copy)]
pub(super) enum LeaseFor<'a> {
    /// A caller's: its tenant's and key's budgets are reserved too, and it
    /// leaves the deployment's budget kept for higher priorities.
    Caller { tenant: &'a str, api_key: &'a str },
    /// The gateway's own copy of a request (a policy's shadow): it reserves
    /// only the deployment's budget, leaves more of it than any caller does,
    /// and never takes a half-open breaker's probe from callers.
    Shadow,
}

/// Reserves the (input estimate, max output) `tokens`, the input as the
/// deployment counts it, on the deployment's, tenant's and key's budgets at
/// once, claims the probe if the breaker is half-open, and counts the attempt
/// in flight.
pub(super) fn lease_on(
    table: &Table,
    deployment: &Deployment,
    whose: LeaseFor<'_>,
    (estimated_input_tokens, max_output_tokens): (u32, u32),
    clock: &Clock,
    now: Nanos,
) -> Result<Lease, LeaseDenied> {
    let probe = match deployment.health.admit(now) {
        admission @ Admission::Unavailable { .. } => {
            return Err(LeaseDenied {
                filter: Filter::Health,
                detail: admission.explain(now).to_string(),
                retry_at: admission.worth_waiting_until(),
                everyone: false,
            });
        }
        Admission::Probe if matches!(whose, LeaseFor::Shadow) => {
            return Err(LeaseDenied {
                filter: Filter::Health,
                detail: "half-open: its probe is kept for callers".to_owned(),
                retry_at: None,
                everyone: false,
            });
        }
        Admission::Probe => true,
        Admission::Available => false,
    };
    let tokens = deployment.reserved_tokens(estimated_input_tokens, max_output_tokens);
    let (tenant, api_key, keep) = match whose {
        LeaseFor::Caller { tenant, api_key } => (tenant, api_key, table.keep_for(tenant)),
        LeaseFor::Shadow => ("", "", table.shadow_keep),
    };
    let limits = Limits {
        deployment: Arc::clone(&deployment.limit),
        tenant: table.tenant_limits.get(tenant).cloned(),
        api_key: table.api_key_limits.get(api_key).cloned(),
    };
    let reservation = limits
        .with(|all| reserve_keeping(all, tokens, now, keep))
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
    Ok(Lease::new(
        Arc::clone(&deployment.id),
        Arc::clone(&deployment.stats),
        Arc::clone(&deployment.health),
        limits,
        reservation,
        probe,
        Arc::clone(&deployment.calibration),
        estimated_input_tokens,
        deployment.prices,
        clock.clone(),
    ))
}

/// Explains a denial of `owner`'s budget.
pub(super) fn budget_denied(
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
