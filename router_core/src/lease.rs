//! Leases: the budget and the in-flight slot one attempt holds on one
//! deployment, from the decision (or a fallback's `reserve`) until the
//! attempt's outcome is recorded or the lease is dropped.

use std::sync::Arc;

use crate::calibration::Calibration;
use crate::clock::{Clock, Nanos};
use crate::health::Health;
use crate::ratelimit::{self, Limit, Reservation};
use crate::stats::Counters;
use crate::table::Prices;

/// Held for one attempt. `Router::record` settles it with the attempt's
/// outcome; dropped unrecorded (abandoned, cancelled, forgotten on some path),
/// it gives its budget, its in-flight slot and any half-open probe back by
/// itself. Both consume it, so it settles once. It keeps the limits it
/// reserved on, so an attempt started before a config reload settles on the
/// budget it was taken from.
#[derive(Debug)]
pub struct Lease {
    pub(crate) deployment: Arc<str>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) health: Arc<Health>,
    pub(crate) limits: Limits,
    /// Taken by `Router::record`; still here when the lease drops, it is released.
    pub(crate) reservation: Option<Reservation>,
    tokens: u32,
    /// This attempt is the half-open breaker's probe.
    pub(crate) probe: bool,
    /// The deployment's calibration, and the input estimate the attempt was
    /// leased for (0: unknown), which the provider's reported count calibrates.
    pub(crate) calibration: Arc<Calibration>,
    pub(crate) estimated_input_tokens: u32,
    /// The deployment's prices when the lease was taken: what its answer costs.
    pub(crate) prices: Prices,
    /// The router's clock, for the refill when the lease gives itself back.
    clock: Clock,
}

impl Lease {
    #[allow(clippy::too_many_arguments)] // one field each; built only by leasing
    pub(crate) fn new(
        deployment: Arc<str>,
        counters: Arc<Counters>,
        health: Arc<Health>,
        limits: Limits,
        reservation: Reservation,
        probe: bool,
        calibration: Arc<Calibration>,
        estimated_input_tokens: u32,
        prices: Prices,
        clock: Clock,
    ) -> Lease {
        Lease {
            deployment,
            counters,
            health,
            limits,
            tokens: reservation.tokens(),
            reservation: Some(reservation),
            probe,
            calibration,
            estimated_input_tokens,
            prices,
            clock,
        }
    }

    pub fn deployment(&self) -> &str {
        &self.deployment
    }

    /// Tokens reserved: the input estimate as this deployment counts it
    /// (calibrated), plus the maximum output.
    pub fn tokens(&self) -> u32 {
        self.tokens
    }

    /// The input estimate before calibration; 0 when the lease was taken without one.
    pub fn estimated_input_tokens(&self) -> u32 {
        self.estimated_input_tokens
    }

    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// Gives the lease back with no outcome: its budget returns in full. The
    /// same as dropping it; the name says so at the call site.
    pub fn release(self) {}
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(reservation) = self.reservation.take() else {
            return; // recorded
        };
        let now = self.clock.now();
        self.limits.release(reservation, now);
        self.counters.end_attempt();
        if self.probe {
            self.health.abandon_probe(now);
        }
    }
}

/// The deployment's own limit and, where configured, the tenant's and the
/// API key's: the set every reservation takes from at once.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub(crate) deployment: Arc<Limit>,
    pub(crate) tenant: Option<Arc<Limit>>,
    pub(crate) api_key: Option<Arc<Limit>>,
}

/// Whose budget ran out, in the order `Limits::with` lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    Deployment,
    Tenant,
    ApiKey,
}

impl Limits {
    /// Calls `f` with the limits as the slice `ratelimit` takes, without allocating.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&[&Limit]) -> R) -> R {
        let mut all: [&Limit; 3] = [&self.deployment; 3];
        let mut count = 1;
        for limit in [&self.tenant, &self.api_key].into_iter().flatten() {
            all[count] = limit;
            count += 1;
        }
        f(&all[..count])
    }

    /// Maps a `Denied`'s `owner_index` back to whose budget it was.
    pub(crate) fn owner(&self, index: usize) -> Owner {
        let present = [
            (Owner::Tenant, self.tenant.is_some()),
            (Owner::ApiKey, self.api_key.is_some()),
        ];
        match index {
            0 => Owner::Deployment,
            i => present
                .into_iter()
                .filter(|(_, here)| *here)
                .nth(i - 1)
                .map_or(Owner::Deployment, |(owner, _)| owner),
        }
    }

    pub(crate) fn settle(&self, reservation: Reservation, actual_tokens: u32, now: Nanos) {
        self.with(|limits| ratelimit::settle(limits, reservation, actual_tokens, now));
    }

    pub(crate) fn release(&self, reservation: Reservation, now: Nanos) {
        self.with(|limits| ratelimit::release(limits, reservation, now));
    }
}
