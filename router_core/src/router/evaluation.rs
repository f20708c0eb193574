//! A policy's evaluation rules at decision time: which experiment variant a
//! request is assigned to, and whether it is copied to the policy's shadow
//! deployments.

use std::sync::Arc;

use crate::config::StickyKey;
use crate::filter::Query;
use crate::strategy::SplitMix64;
use crate::table::{Arm, Policy, Table};

use super::affinity::unit_hash;
use super::RouteRequest;

/// The experiment a request took part in and the variant it was assigned.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    pub experiment: Arc<str>,
    pub variant: Arc<str>,
}

/// The deployments a request is to be copied to, with the policy's bound on
/// shadow calls in flight.
#[derive(Debug, Clone, PartialEq)]
pub struct ShadowCopy {
    pub deployments: Vec<Arc<str>>,
    pub max_in_flight: u32,
}

/// The arm that routes `request`: a plain policy's only one, or the variant
/// its sticky key picks by weighted rendezvous hashing of (key, variant): the
/// same on every process and host, in proportion to the weights, and a key
/// keeps its variant when another variant is added or left out (a host
/// lacking one's credentials moves only that variant's keys). A request
/// without a key is assigned at random.
pub(super) fn arm_for<'p, S: AsRef<str>>(
    policy: &'p Policy,
    request: &RouteRequest<'_, S>,
    rng: &mut SplitMix64,
) -> (&'p Arm, Option<Assignment>) {
    let Some(experiment) = &policy.experiment else {
        return (&policy.arms[0], None);
    };
    let key = sticky_value(&experiment.sticky_by, request);
    let arm = if key.is_empty() {
        let mut point = rng.next_unit() * experiment.total_weight;
        policy.arms.iter().find(|arm| {
            point -= arm.weight;
            point <= 0.0
        })
    } else {
        policy.arms.iter().max_by(|a, b| {
            let score = |arm: &Arm| -arm.weight / unit_hash(key, &arm.sticky_salt).ln();
            score(a).total_cmp(&score(b))
        })
    }
    .unwrap_or_else(|| policy.arms.last().expect("an experiment has variants"));
    let variant = arm
        .variant
        .clone()
        .expect("an experiment's arms are variants");
    let assignment = Assignment {
        experiment: Arc::clone(&experiment.id),
        variant,
    };
    (arm, Some(assignment))
}

fn sticky_value<'r, S: AsRef<str>>(key: &StickyKey, request: &'r RouteRequest<'r, S>) -> &'r str {
    match key {
        StickyKey::Tenant => request.tenant,
        StickyKey::AffinityKey => request.affinity_key,
        StickyKey::Metadata(field) => request.metadata_value(field),
    }
}

/// The policy's shadow deployments for a sampled share of the requests that
/// are served for real (never for a dry run, which calls nothing): those of
/// them the request's own filters pass (its context window, capabilities,
/// regions and cost ceiling, the policy's constraints included), so that a
/// copy goes nowhere the request itself could not.
pub(super) fn shadow_copy<S: AsRef<str>>(
    policy: &Policy,
    table: &Table,
    query: &Query,
    request: &RouteRequest<'_, S>,
    rng: &mut SplitMix64,
) -> Option<ShadowCopy> {
    let shadow = policy.shadow.as_ref()?;
    if request.dry_run || rng.next_unit() > shadow.sample {
        return None;
    }
    let deployments: Vec<Arc<str>> = (shadow.deployments.iter())
        .map(|&i| &table.deployments[i])
        .filter(|deployment| query.reject(table, deployment).is_none())
        .map(|deployment| Arc::clone(&deployment.id))
        .collect();
    (!deployments.is_empty()).then_some(ShadowCopy {
        deployments,
        max_in_flight: shadow.max_in_flight,
    })
}
