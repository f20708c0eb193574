//! Time for rate limits and health: the monotonic clock in production, a
//! hand-driven one in tests so that refills, cool-downs and probes are exact.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Nanoseconds since the clock's origin.
pub type Nanos = u64;

#[derive(Debug, Clone)]
pub enum Clock {
    /// Real monotonic time, counted from the moment the clock was made.
    Monotonic(Instant),
    /// The host's monotonic clock (CLOCK_MONOTONIC), the same in every process
    /// of the host: what routers that share state read.
    Host,
    /// Time that moves only when `advance` is called.
    Manual(Arc<AtomicU64>),
}

impl Default for Clock {
    fn default() -> Self {
        Clock::Monotonic(Instant::now())
    }
}

impl Clock {
    /// A clock standing at zero until advanced.
    pub fn manual() -> Self {
        Clock::Manual(Arc::new(AtomicU64::new(0)))
    }

    pub fn now(&self) -> Nanos {
        match self {
            Clock::Monotonic(origin) => origin.elapsed().as_nanos() as Nanos,
            Clock::Manual(now) => now.load(Relaxed),
            Clock::Host => host_now(),
        }
    }

    /// Moves a manual clock forward; returns false (and does nothing) on the real one.
    pub fn advance(&self, by: Duration) -> bool {
        match self {
            Clock::Monotonic(_) | Clock::Host => false,
            Clock::Manual(now) => {
                now.fetch_add(by.as_nanos() as Nanos, Relaxed);
                true
            }
        }
    }
}

fn host_now() -> Nanos {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // Safety: a valid timespec to write; CLOCK_MONOTONIC cannot fail on a
    // supported system.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as Nanos * 1_000_000_000 + now.tv_nsec as Nanos
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        let clock = Clock::manual();
        assert_eq!(clock.now(), 0);
        assert!(clock.advance(Duration::from_millis(1500)));
        assert_eq!(clock.now(), 1_500_000_000);
        let shared = clock.clone();
        shared.advance(Duration::from_nanos(1));
        assert_eq!(clock.now(), 1_500_000_001);
    }

    #[test]
    fn monotonic_clock_does_not_go_back_and_cannot_be_advanced() {
        let clock = Clock::default();
        let first = clock.now();
        assert!(!clock.advance(Duration::from_secs(1)));
        assert!(clock.now() >= first);
    }
}
