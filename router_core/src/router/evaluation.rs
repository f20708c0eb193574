//! A policy's evaluation rules at decision time: which experiment variant a
//! request is assigned to, and whether it is copied to the policy's shadow
//! deployments.

use std::sync::Arc;

use crate::config::StickyKey;
use crate::strategy::SplitMix64;
use crate::table::{Arm, Policy};

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
/// its sticky key hashes to (the same on every process and host, in
/// proportion to the weights); a request without a key is assigned at random.
pub(super) fn arm_for<'p, S: AsRef<str>>(
    policy: &'p Policy,
    request: &RouteRequest<'_, S>,
    rng: &mut SplitMix64,
) -> (&'p Arm, Option<Assignment>) {
    let Some(experiment) = &policy.experiment else {
        return (&policy.arms[0], None);
    };
    let key = sticky_value(&experiment.sticky_by, request);
    let unit = if key.is_empty() {
        rng.next_unit()
    } else {
        unit_hash(key, &experiment.id)
    };
    let mut point = unit * experiment.total_weight;
    let arm = policy
        .arms
        .iter()
        .find(|arm| {
            point -= arm.weight;
            point <= 0.0
        })
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
/// are served for real (never for a dry run, which calls nothing).
pub(super) fn shadow_copy<S>(
    policy: &Policy,
    request: &RouteRequest<'_, S>,
    rng: &mut SplitMix64,
) -> Option<ShadowCopy> {
    let shadow = policy.shadow.as_ref()?;
    if request.dry_run || rng.next_unit() > shadow.sample {
        return None;
    }
    Some(ShadowCopy {
        deployments: shadow.deployments.clone(),
        max_in_flight: shadow.max_in_flight,
    })
}
