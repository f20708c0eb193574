//! Where a deployment's breaker and cool-downs live: in this process, or in
//! two slots of a region that every process of the host maps (see `state`),
//! so that a circuit opened by one worker's failures is open for all, the
//! half-open probe is claimed once per host, and latency estimates learn from
//! every worker's calls.

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, PoisonError};

use super::breaker::Breaker;
use super::latency::Latency;
use super::policy::HealthPolicy;
use crate::state::{Held, Payload, Region};

/// What is read and written without a lock: the breaker's mirror, the
/// cool-downs and the latency estimate. All zero is a closed breaker with
/// nothing cooling down and no latency sample, as a fresh slot is.
#[repr(C)]
#[derive(Debug, Default)]
pub(super) struct Atomics {
    /// Mirrors "the breaker is not closed", written under the breaker's lock
    /// after every change, so the common case of `admit` (closed, nothing
    /// cooling) takes no lock. A stale read admits or rejects one request
    /// early or late, which routing tolerates anyway.
    pub(super) tripped: AtomicBool,
    /// Cool-down ends are only ever raised (`fetch_max`), so a later, shorter
    /// Retry-After can never cut a longer cool-down short.
    pub(super) rate_limited_until: AtomicU64,
    pub(super) auth_failed_until: AtomicU64,
    pub(super) ejected_until: AtomicU64,
    /// Until when other hosts of a cluster said its circuit is open, or that
    /// it is cooling down (see `peers`); never passed on again.
    pub(super) peer_open_until: AtomicU64,
    pub(super) peer_cooling_until: AtomicU64,
    /// Out of rotation until an operator puts it back.
    pub(super) drained: AtomicBool,
    pub(super) latency: Latency,
}

// Safety: atomics of plain integers; all zero is the fresh state.
unsafe impl Payload for Atomics {}

/// A breaker as a slot holds it: none until a process first wrote one.
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct Stored {
    written: bool,
    breaker: MaybeUninit<Breaker>,
}

// Safety: `breaker` is read only once `written`; a Breaker is plain data.
unsafe impl Payload for Stored {}

// The local breaker stays inline, as it was before regions: one process's
// health is the common case and boxing it would add a load to every `admit`.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(super) enum Cell {
    Local {
        breaker: Mutex<Breaker>,
        atomics: Atomics,
    },
    Shared {
        region: Arc<Region>,
        breaker: usize,
        atomics: usize,
    },
}

impl Cell {
    pub(super) fn local(policy: &HealthPolicy) -> Self {
        Cell::Local {
            breaker: Mutex::new(Breaker::new(policy)),
            atomics: Atomics::default(),
        }
    }

    /// `id`'s health in `region`; None when the region has no slots left.
    pub(super) fn shared(region: &Arc<Region>, id: &str) -> Option<Self> {
        Some(Cell::Shared {
            breaker: region.slot(&format!("breaker/{id}"))?,
            atomics: region.slot(&format!("health/{id}"))?,
            region: Arc::clone(region),
        })
    }

    pub(super) fn atomics(&self) -> &Atomics {
        match self {
            Cell::Local { atomics, .. } => atomics,
            Cell::Shared {
                region, atomics, ..
            } => region.shared(*atomics),
        }
    }

    /// The breaker, locked; a shared one that no process wrote yet is a new
    /// breaker under `policy`.
    pub(super) fn lock(&self, policy: &HealthPolicy) -> Locked<'_> {
        match self {
            // Nothing panics while the breaker is locked; were it to, the state
            // would still be a valid one, and a poisoned lock must not stop
            // routing for good.
            Cell::Local { breaker, .. } => {
                Held::Local(breaker.lock().unwrap_or_else(PoisonError::into_inner))
            }
            Cell::Shared {
                region, breaker, ..
            } => {
                let guard = region.locked::<Stored>(*breaker);
                let found = guard.get();
                let breaker = if found.written {
                    // Safety: written whole by a process of this build.
                    unsafe { found.breaker.assume_init() }
                } else {
                    Breaker::new(policy)
                };
                Held::Shared {
                    guard,
                    value: breaker,
                    store: stored,
                }
            }
        }
    }
}

/// A breaker, locked (see `Held`).
pub(super) type Locked<'a> = Held<'a, Breaker, Stored>;

/// How a breaker goes back into its slot.
fn stored(breaker: &Breaker) -> Stored {
    Stored {
        written: true,
        breaker: MaybeUninit::new(*breaker),
    }
}
