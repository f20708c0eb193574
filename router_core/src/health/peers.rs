//! What the hosts of a cluster tell each other about a deployment's health:
//! a circuit that opened or closed, a rate-limit cool-down. A host passes on
//! only its own breaker and cool-downs, and holds what it heard apart from
//! them (`Atomics::peer_*`), so that news is never passed back and forth.
//! Durations, not instants, cross hosts: their clocks share no epoch.

use std::sync::atomic::Ordering::Relaxed;

use super::{BreakerState, Health};
use crate::clock::Nanos;

/// One change in a deployment's health, as another host should apply it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthNews {
    /// Keep the deployment out for this long: the rest of the open interval
    /// and the time its half-open probe may take.
    CircuitOpen { for_nanos: Nanos },
    /// The probe succeeded: take it back now.
    CircuitClosed,
    /// A 429: keep it out until its Retry-After has passed.
    CoolingDown { for_nanos: Nanos },
}

impl HealthNews {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthNews::CircuitOpen { .. } => "circuit_open",
            HealthNews::CircuitClosed => "circuit_closed",
            HealthNews::CoolingDown { .. } => "cooling_down",
        }
    }

    /// `kind` as `as_str` spells it; None for an unknown kind.
    pub fn parse(kind: &str, for_nanos: Nanos) -> Option<Self> {
        match kind {
            "circuit_open" => Some(HealthNews::CircuitOpen { for_nanos }),
            "circuit_closed" => Some(HealthNews::CircuitClosed),
            "cooling_down" => Some(HealthNews::CoolingDown { for_nanos }),
            _ => None,
        }
    }

    pub fn for_nanos(self) -> Nanos {
        match self {
            HealthNews::CircuitOpen { for_nanos } | HealthNews::CoolingDown { for_nanos } => {
                for_nanos
            }
            HealthNews::CircuitClosed => 0,
        }
    }
}

/// What a host last told the others about one deployment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Told {
    open_until: Option<Nanos>,
    cooling_until: Nanos,
}

impl Health {
    /// What changed in this deployment's own breaker and cool-down since
    /// `told`, which is brought up to date: at most one circuit change and
    /// one cool-down.
    pub fn news(&self, told: &mut Told, now: Nanos) -> impl Iterator<Item = HealthNews> {
        let (state, open_until) = {
            let breaker = self.lock();
            (breaker.state(now), breaker.open_until(now))
        };
        let circuit = match (state, open_until) {
            (BreakerState::Closed, _) if told.open_until.is_some() => {
                told.open_until = None;
                Some(HealthNews::CircuitClosed)
            }
            (BreakerState::Open, Some(until)) if told.open_until != Some(until) => {
                told.open_until = Some(until);
                Some(HealthNews::CircuitOpen {
                    for_nanos: (until - now).saturating_add(self.policy.probe_timeout()),
                })
            }
            _ => None,
        };
        let cooling_until = self.cell.atomics().rate_limited_until.load(Relaxed);
        let cooling = (cooling_until > told.cooling_until && cooling_until > now).then(|| {
            told.cooling_until = cooling_until;
            HealthNews::CoolingDown {
                for_nanos: cooling_until - now,
            }
        });
        circuit.into_iter().chain(cooling)
    }

    /// Applies what another host told: the deployment is kept out for as
    /// long as the longest word on it says, or let back in on a close.
    pub fn hear(&self, news: HealthNews, now: Nanos) {
        let atomics = self.cell.atomics();
        match news {
            HealthNews::CircuitOpen { for_nanos } => {
                let until = now.saturating_add(for_nanos);
                atomics.peer_open_until.fetch_max(until, Relaxed);
            }
            HealthNews::CircuitClosed => atomics.peer_open_until.store(0, Relaxed),
            HealthNews::CoolingDown { for_nanos } => {
                let until = now.saturating_add(for_nanos);
                atomics.peer_cooling_until.fetch_max(until, Relaxed);
            }
        }
    }
}
