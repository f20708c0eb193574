//! Every transition of `Health`, driven by the manual clock, plus a property
//! test over random outcome sequences and a race for the probe slot.

use std::sync::Barrier;
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::clock::Clock;

use super::OutcomeClass::{
    AuthError, BadRequest, ContentFiltered, ContextWindowExceeded, RateLimited,
};
use super::UnavailableReason::{AuthFailed, CircuitOpen, CoolingDown, ProbeInFlight};

const SEC: Nanos = 1_000_000_000;

/// A health with the default policy and a clock standing at 1 s.
fn setup() -> (Health, Clock) {
    let clock = Clock::manual();
    clock.advance(Duration::from_secs(1));
    (Health::new(HealthPolicy::default()), clock)
}

fn record(health: &Health, clock: &Clock, class: OutcomeClass) {
    health.on_outcome(class, 100.0, None, None, clock.now());
}

fn unavailable(until: Nanos, reason: UnavailableReason) -> Admission {
    Admission::Unavailable { until, reason }
}

/// Trips the breaker with consecutive failures; it stays open for 5 s.
fn trip(health: &Health, clock: &Clock) {
    for _ in 0..5 {
        record(health, clock, OutcomeClass::ServerError);
    }
    assert_eq!(health.snapshot(clock.now()).state, BreakerState::Open);
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn health_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Health>();
}

#[test]
fn consecutive_failures_open_the_breaker() {
    let (health, clock) = setup();
    for class in [
        OutcomeClass::ServerError,
        OutcomeClass::Timeout,
        OutcomeClass::ConnectionError,
        OutcomeClass::Overloaded,
    ] {
        record(&health, &clock, class);
    }
    assert_eq!(health.admit(clock.now()), Admission::Available);
    record(&health, &clock, OutcomeClass::ProtocolError);
    let admission = health.admit(clock.now());
    assert_eq!(admission, unavailable(6 * SEC, CircuitOpen));
    clock.advance(Duration::from_millis(1800));
    let explained = health.admit(clock.now()).explain(clock.now()).to_string();
    assert_eq!(explained, "circuit open for another 3.2 s");
}

#[test]
fn a_success_resets_the_streak() {
    let (health, clock) = setup();
    for _ in 0..4 {
        record(&health, &clock, OutcomeClass::ServerError);
    }
    record(&health, &clock, OutcomeClass::Ok);
    for _ in 0..4 {
        record(&health, &clock, OutcomeClass::ServerError);
    }
    let snapshot = health.snapshot(clock.now());
    assert_eq!(
        (snapshot.state, snapshot.consecutive_failures),
        (BreakerState::Closed, 4)
    );
    assert_eq!(
        (snapshot.window_outcomes, snapshot.error_rate),
        (9, Some(8.0 / 9.0))
    );
}

#[test]
fn error_ratio_opens_the_breaker_once_the_window_holds_enough() {
    let (health, clock) = setup();
    // Alternating: never two failures in a row, half of them failed.
    for i in 0..19 {
        let class = if i % 2 == 0 {
            OutcomeClass::Timeout
        } else {
            OutcomeClass::Ok
        };
        record(&health, &clock, class);
        clock.advance(Duration::from_millis(100));
    }
    // 19 outcomes, 10 failed: over the ratio, under the minimum volume.
    assert_eq!(health.snapshot(clock.now()).error_rate, Some(10.0 / 19.0));
    assert_eq!(health.admit(clock.now()), Admission::Available);
    record(&health, &clock, OutcomeClass::Ok);
    // A success cannot trip it; the next failure, at 11 of 21, does.
    assert_eq!(health.admit(clock.now()), Admission::Available);
    record(&health, &clock, OutcomeClass::ServerError);
    assert_eq!(health.snapshot(clock.now()).state, BreakerState::Open);
}

#[test]
fn failures_leave_the_window_as_it_slides() {
    let (health, clock) = setup();
    for _ in 0..10 {
        record(&health, &clock, OutcomeClass::ServerError);
        record(&health, &clock, OutcomeClass::Ok);
    }
    clock.advance(secs(10));
    for _ in 0..19 {
        record(&health, &clock, OutcomeClass::Ok);
    }
    record(&health, &clock, OutcomeClass::ServerError);
    let snapshot = health.snapshot(clock.now());
    assert_eq!(
        (snapshot.state, snapshot.window_outcomes),
        (BreakerState::Closed, 20)
    );
}

#[test]
fn half_open_admits_exactly_one_probe() {
    let (health, clock) = setup();
    trip(&health, &clock);
    assert!(!health.claim_probe(clock.now()));
    clock.advance(secs(5));
    assert_eq!(health.admit(clock.now()), Admission::Probe);
    assert_eq!(health.snapshot(clock.now()).state, BreakerState::HalfOpen);
    assert!(health.claim_probe(clock.now()));
    assert_eq!(
        health.admit(clock.now()),
        unavailable(36 * SEC, ProbeInFlight)
    );
    assert!(!health.claim_probe(clock.now()));
    let explained = health.admit(clock.now()).explain(clock.now()).to_string();
    assert_eq!(
        explained,
        "circuit half-open, probe in flight (claim lapses in 30.0 s)"
    );
}

#[test]
fn probe_success_closes_and_resets() {
    let (health, clock) = setup();
    trip(&health, &clock);
    clock.advance(secs(5));
    assert!(health.claim_probe(clock.now()));
    record(&health, &clock, OutcomeClass::Ok);
    let snapshot = health.snapshot(clock.now());
    assert_eq!(
        (snapshot.state, snapshot.consecutive_failures),
        (BreakerState::Closed, 0)
    );
    assert_eq!((snapshot.window_outcomes, snapshot.open_until), (0, None));
    // Reset means the full streak is needed again, and the base open period.
    trip(&health, &clock);
    assert_eq!(
        health.snapshot(clock.now()).open_until,
        Some(clock.now() + 5 * SEC)
    );
}

#[test]
fn failed_probes_double_the_open_period_up_to_the_cap() {
    let (health, clock) = setup();
    trip(&health, &clock);
    let mut periods = Vec::new();
    for _ in 0..6 {
        let until = health.snapshot(clock.now()).open_until.unwrap();
        periods.push((until - clock.now()) / SEC);
        clock.advance(Duration::from_nanos(until - clock.now()));
        assert!(health.claim_probe(clock.now()));
        record(&health, &clock, OutcomeClass::Timeout);
    }
    assert_eq!(periods, [5, 10, 20, 40, 60, 60]);
}

#[test]
fn outcomes_while_open_are_stragglers_and_change_nothing() {
    let (health, clock) = setup();
    trip(&health, &clock);
    let before = health.snapshot(clock.now()).open_until;
    record(&health, &clock, OutcomeClass::Ok);
    record(&health, &clock, OutcomeClass::ServerError);
    assert_eq!(health.snapshot(clock.now()).open_until, before);
}

#[test]
fn a_lost_probe_claim_lapses() {
    let (health, clock) = setup();
    trip(&health, &clock);
    clock.advance(secs(5));
    assert!(health.claim_probe(clock.now()));
    clock.advance(Duration::from_secs(30) - Duration::from_nanos(1));
    assert!(!health.claim_probe(clock.now()));
    clock.advance(Duration::from_nanos(1));
    assert_eq!(health.admit(clock.now()), Admission::Probe);
    assert!(health.claim_probe(clock.now()));
}

#[test]
fn rate_limit_cools_down_for_retry_after_and_is_never_shortened() {
    let (health, clock) = setup();
    let limited = |retry_after: Option<u64>| {
        health.on_outcome(RateLimited, 5.0, None, retry_after.map(secs), clock.now())
    };
    limited(None);
    assert_eq!(health.admit(clock.now()), unavailable(2 * SEC, CoolingDown));
    limited(Some(10));
    assert_eq!(
        health.admit(clock.now()),
        unavailable(11 * SEC, CoolingDown)
    );
    limited(Some(3));
    assert_eq!(
        health.admit(clock.now()),
        unavailable(11 * SEC, CoolingDown)
    );
    // A repeat 429 while cooling extends from its own arrival.
    clock.advance(secs(8));
    limited(Some(4));
    assert_eq!(
        health.admit(clock.now()),
        unavailable(13 * SEC, CoolingDown)
    );
    assert_eq!(health.snapshot(clock.now()).state, BreakerState::Closed);
    let explained = health.admit(clock.now()).explain(clock.now()).to_string();
    assert_eq!(explained, "rate limited for another 4.0 s");
    clock.advance(secs(4) - Duration::from_millis(50));
    let explained = health.admit(clock.now()).explain(clock.now()).to_string();
    assert_eq!(explained, "rate limited for another 50 ms");
    clock.advance(Duration::from_millis(50));
    assert_eq!(health.admit(clock.now()), Admission::Available);
}

#[test]
fn rate_limits_do_not_count_as_failures() {
    let (health, clock) = setup();
    for _ in 0..30 {
        record(&health, &clock, RateLimited);
    }
    let snapshot = health.snapshot(clock.now());
    assert_eq!(
        (snapshot.consecutive_failures, snapshot.window_outcomes),
        (0, 0)
    );
}

#[test]
fn auth_error_takes_the_deployment_out_for_the_auth_cooldown() {
    let (health, clock) = setup();
    record(&health, &clock, AuthError);
    assert_eq!(
        health.admit(clock.now()),
        unavailable(301 * SEC, AuthFailed)
    );
    // The longest blocker explains the rejection.
    health.on_outcome(RateLimited, 5.0, None, Some(secs(2)), clock.now());
    assert_eq!(
        health.admit(clock.now()),
        unavailable(301 * SEC, AuthFailed)
    );
    record(&health, &clock, OutcomeClass::Ok);
    clock.advance(secs(299));
    assert_eq!(
        health.admit(clock.now()),
        unavailable(301 * SEC, AuthFailed)
    );
    clock.advance(secs(1));
    assert_eq!(health.admit(clock.now()), Admission::Available);
}

#[test]
fn neutral_classes_do_nothing() {
    let (health, clock) = setup();
    for _ in 0..3 {
        record(&health, &clock, OutcomeClass::ServerError);
    }
    let before = health.snapshot(clock.now());
    for _ in 0..30 {
        for class in [BadRequest, ContentFiltered, ContextWindowExceeded] {
            record(&health, &clock, class);
        }
    }
    assert_eq!(health.snapshot(clock.now()), before);
    assert_eq!(health.admit(clock.now()), Admission::Available);
}

#[test]
fn an_outcome_that_says_nothing_still_frees_the_probe_slot() {
    let (health, clock) = setup();
    trip(&health, &clock);
    clock.advance(secs(5));
    assert!(health.claim_probe(clock.now()));
    record(&health, &clock, BadRequest);
    assert_eq!(health.snapshot(clock.now()).state, BreakerState::HalfOpen);
    assert!(health.claim_probe(clock.now()));
    // A rate-limited probe frees the slot too, but the cool-down blocks the next one.
    record(&health, &clock, RateLimited);
    assert_eq!(
        health.admit(clock.now()),
        unavailable(clock.now() + SEC, CoolingDown)
    );
    assert!(!health.claim_probe(clock.now()));
    clock.advance(secs(1));
    assert!(health.claim_probe(clock.now()));
}

#[test]
fn carry_over_keeps_the_state_under_the_new_policy() {
    let (health, clock) = setup();
    trip(&health, &clock);
    health.on_outcome(RateLimited, 5.0, None, Some(secs(9)), clock.now());
    let policy = HealthPolicy {
        consecutive_failures: 2,
        ..HealthPolicy::default()
    };
    let carried = Health::carry_over(&health, policy);
    assert_eq!(carried.snapshot(clock.now()), health.snapshot(clock.now()));
    assert_eq!(carried.policy().consecutive_failures, 2);
}

#[test]
fn outcome_classes_round_trip_through_their_names() {
    for class in OutcomeClass::ALL {
        assert_eq!(class.as_str().parse(), Ok(class));
    }
    let err = "teapot".parse::<OutcomeClass>().unwrap_err().to_string();
    assert!(
        err.starts_with("unknown outcome class \"teapot\" (known: ok, rate_limited"),
        "{err}"
    );
}

#[test]
fn latency_is_estimated_from_successes_only() {
    let (health, clock) = setup();
    health.on_outcome(OutcomeClass::Ok, 200.0, Some(40.0), None, clock.now());
    health.on_outcome(OutcomeClass::ConnectionError, 1.0, None, None, clock.now());
    assert_eq!(health.ewma_latency_ms(), Some(200.0));
    assert_eq!(health.ewma_ttft_ms(), Some(40.0));
    assert_eq!(health.tail_latency_ms(), Some(200.0));
}

#[test]
fn concurrent_claims_on_a_half_open_breaker_have_one_winner() {
    let (health, clock) = setup();
    trip(&health, &clock);
    clock.advance(secs(5));
    let threads = 8;
    let barrier = Barrier::new(threads);
    let winners = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    (0..100).filter(|_| health.claim_probe(clock.now())).count()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum::<usize>()
    });
    assert_eq!(winners, 1);
}

#[derive(Debug, Clone)]
enum Op {
    Advance(u64),
    Outcome(OutcomeClass, Option<u64>),
    Claim,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u64..3_000).prop_map(Op::Advance),
        (
            proptest::sample::select(OutcomeClass::ALL.to_vec()),
            proptest::option::of(0u64..5_000)
        )
            .prop_map(|(class, retry)| Op::Outcome(class, retry)),
        Just(Op::Claim),
    ]
}

proptest! {
    /// For any sequence of outcomes, claims and clock advances: at most one
    /// probe claim is held at a time, `Probe` always means a claim would win,
    /// open periods stay within the cap, and no cool-down or ejection ends
    /// earlier than it said while it is active.
    #[test]
    fn health_invariants_hold(ops in proptest::collection::vec(op(), 1..200)) {
        let policy = HealthPolicy {
            consecutive_failures: 3,
            min_requests: 4,
            open_secs: 1.0,
            max_open_secs: 4.0,
            probe_timeout_secs: 2.0,
            auth_cooldown_secs: 5.0,
            ..HealthPolicy::default()
        };
        let health = Health::new(policy);
        let clock = Clock::manual();
        // When the probe claim this model knows of lapses.
        let mut claim: Option<Nanos> = None;
        let mut before = health.snapshot(0);
        for op in ops {
            match op {
                Op::Advance(ms) => { clock.advance(Duration::from_millis(ms)); }
                Op::Outcome(class, retry) => {
                    let retry = retry.map(Duration::from_millis);
                    health.on_outcome(class, 50.0, None, retry, clock.now());
                    claim = None;
                }
                Op::Claim => {
                    let now = clock.now();
                    let admitted = health.admit(now);
                    let won = health.claim_probe(now);
                    prop_assert_eq!(won, admitted == Admission::Probe);
                    if won {
                        prop_assert!(claim.is_none_or(|lapses| lapses <= now), "two claims held");
                        claim = Some(now + 2 * SEC);
                    }
                }
            }
            let now = clock.now();
            let after = health.snapshot(now);
            for (old, new) in [
                (before.rate_limited_until, after.rate_limited_until),
                (before.auth_failed_until, after.auth_failed_until),
                (before.open_until, after.open_until),
            ] {
                if let Some(old) = old.filter(|&u| u > now) {
                    prop_assert!(new >= Some(old), "{old} shrank to {new:?}");
                }
            }
            if let Some(until) = after.open_until {
                prop_assert!(until - now <= 4 * SEC);
            }
            let admission = health.admit(now);
            if admission == Admission::Available {
                prop_assert_eq!(after.state, BreakerState::Closed);
            }
            if claim.is_some_and(|lapses| lapses > now) {
                prop_assert!(
                    matches!(admission, Admission::Unavailable { .. }),
                    "a held claim must block: {:?}",
                    admission
                );
            }
            before = after;
        }
    }
}
