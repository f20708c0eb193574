//! Whole calls to the service, per model group: how many ended with each gRPC
//! status, per method, and how long they took.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use super::{Coarse, Distribution, Unit, DURATION_BOUNDS_S};
use crate::state::{Payload, Place, Region};

/// The service's methods whose calls are counted.
pub const CALL_METHODS: [&str; 4] = ["Chat", "ChatStream", "Route", "ListModels"];
/// The gRPC status codes, by number.
pub const GRPC_STATUSES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// What a call took beyond its first attempt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extra {
    /// Attempts on the same deployment again after it failed.
    pub retries: u32,
    /// Attempts on the next candidate after one failed.
    pub fallbacks: u32,
    /// Attempts started alongside one that had not answered in time.
    pub hedges: u32,
}

type PerMethod = [AtomicU64; CALL_METHODS.len()];

#[repr(C)]
#[derive(Debug)]
struct Calls {
    by_status: [[AtomicU64; GRPC_STATUSES.len()]; CALL_METHODS.len()],
    durations: [Coarse; CALL_METHODS.len()],
    retries: PerMethod,
    fallbacks: PerMethod,
    hedges: PerMethod,
}

fn zeros<const N: usize>() -> [AtomicU64; N] {
    std::array::from_fn(|_| AtomicU64::new(0))
}

impl Default for Calls {
    fn default() -> Self {
        Calls {
            by_status: std::array::from_fn(|_| zeros()),
            durations: std::array::from_fn(|_| Coarse::default()),
            retries: zeros(),
            fallbacks: zeros(),
            hedges: zeros(),
        }
    }
}

// Safety: atomics of plain integers; all zero is nothing counted.
unsafe impl Payload for Calls {}

/// One model group's calls (or those of calls that reached none).
#[derive(Debug)]
pub(crate) struct CallCounters(Place<Calls>);

/// One method's calls to one model group, read at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct CallMeasures {
    pub model_group: String,
    pub method: &'static str,
    /// Calls per gRPC status code, by number, for the codes that ended any.
    pub statuses: Vec<(u8, u64)>,
    pub duration: Distribution,
    /// Summed over the calls.
    pub retries: u64,
    pub fallbacks: u64,
    pub hedges: u64,
}

impl CallCounters {
    /// Group `name`'s counters: in `region` when there is one with a slot
    /// left, else this process's own.
    pub(crate) fn at(region: Option<&Arc<Region>>, name: &str) -> Self {
        CallCounters(Place::at(region, &format!("calls/{name}")))
    }

    /// `method` indexes `CALL_METHODS` and `status` `GRPC_STATUSES`; the
    /// caller has checked both.
    pub(crate) fn record(&self, method: usize, status: usize, duration_s: f64, extra: Extra) {
        let calls = &*self.0;
        calls.by_status[method][status].fetch_add(1, Relaxed);
        calls.durations[method].record(&DURATION_BOUNDS_S, Unit::Seconds, duration_s);
        calls.retries[method].fetch_add(u64::from(extra.retries), Relaxed);
        calls.fallbacks[method].fetch_add(u64::from(extra.fallbacks), Relaxed);
        calls.hedges[method].fetch_add(u64::from(extra.hedges), Relaxed);
    }

    /// One entry per method with any calls.
    pub(crate) fn snapshot(&self, model_group: &str) -> Vec<CallMeasures> {
        CALL_METHODS
            .iter()
            .enumerate()
            .filter_map(|(m, &method)| {
                let statuses: Vec<(u8, u64)> = (0u8..)
                    .zip(&self.0.by_status[m])
                    .map(|(code, count)| (code, count.load(Relaxed)))
                    .filter(|&(_, count)| count > 0)
                    .collect();
                (!statuses.is_empty()).then(|| CallMeasures {
                    model_group: model_group.to_owned(),
                    method,
                    statuses,
                    duration: self.0.durations[m].snapshot(&DURATION_BOUNDS_S, Unit::Seconds),
                    retries: self.0.retries[m].load(Relaxed),
                    fallbacks: self.0.fallbacks[m].load(Relaxed),
                    hedges: self.0.hedges[m].load(Relaxed),
                })
            })
            .collect()
    }
}
