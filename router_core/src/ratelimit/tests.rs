//! Unit tests with exact levels; the random and multi-threaded ones are in
//! `properties`.

use std::time::Duration;

use super::*;
use crate::clock::Clock;

mod properties;

const SECOND: Nanos = 1_000_000_000;
const MINUTE: Nanos = 60 * SECOND;

fn limit(rpm: Option<u32>, tpm: Option<u32>) -> Limit {
    Limit::new(LimitSpec { rpm, tpm })
}

/// Requests and tokens left at `now`, in units (1/60e9 of one).
fn levels(limit: &Limit, now: Nanos) -> (Option<i128>, Option<i128>) {
    let mut state = limit.lock();
    state.refill(now, limit.refill.share());
    (
        state.requests.map(|b| b.level),
        state.tokens.map(|b| b.level),
    )
}

/// `levels` in whole requests and tokens, for values known to be whole.
fn whole(limit: &Limit, now: Nanos) -> (Option<i128>, Option<i128>) {
    let (requests, tokens) = levels(limit, now);
    let whole = |level: i128| {
        assert_eq!(level % UNITS, 0, "{level} is not whole");
        level / UNITS
    };
    (requests.map(whole), tokens.map(whole))
}

fn exhausted(owner_index: usize, kind: LimitKind, retry_at: Nanos) -> Denied {
    Denied::Exhausted {
        owner_index,
        kind,
        retry_at,
    }
}

#[test]
fn limit_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Limit>();
}

#[test]
fn spec_parses_strictly_and_rejects_zero() {
    let spec: LimitSpec = serde_json::from_str(r#"{"rpm": 10}"#).unwrap();
    assert_eq!(
        spec,
        LimitSpec {
            rpm: Some(10),
            tpm: None
        }
    );
    assert_eq!(spec.validate("tenants[0].limits"), Ok(()));
    assert_eq!(LimitSpec::default().validate("x"), Ok(()));
    let unknown = serde_json::from_str::<LimitSpec>(r#"{"rpm": 1, "rps": 2}"#).unwrap_err();
    assert!(
        unknown.to_string().contains("unknown field `rps`"),
        "{unknown}"
    );
    let zero = |spec: LimitSpec| {
        spec.validate("deployments[2].limits")
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        zero(LimitSpec {
            rpm: Some(0),
            tpm: Some(5)
        }),
        "deployments[2].limits.rpm: must be > 0 (leave it out for no limit), got 0"
    );
    assert_eq!(
        zero(LimitSpec {
            rpm: Some(5),
            tpm: Some(0)
        }),
        "deployments[2].limits.tpm: must be > 0 (leave it out for no limit), got 0"
    );
}

#[test]
fn buckets_start_full_and_refill_exactly() {
    let clock = Clock::manual();
    // 60 rpm is one request a second; 600 tpm ten tokens a second.
    let owner = limit(Some(60), Some(600));
    for _ in 0..60 {
        let _ = reserve(&[&owner], 10, clock.now()).unwrap();
    }
    assert_eq!(whole(&owner, clock.now()), (Some(0), Some(0)));
    clock.advance(Duration::from_millis(250));
    assert_eq!(
        levels(&owner, clock.now()),
        (Some(UNITS / 4), Some(UNITS * 10 / 4))
    );
    // An odd rate, refilled in many small steps, lands on the same level as
    // in one step: nothing is rounded away.
    let odd = limit(Some(7), None);
    let _ = reserve(&[&odd], 0, 0).unwrap();
    for step in 1..=1_000 {
        levels(&odd, step * 3_333);
    }
    assert_eq!(levels(&odd, 3_333_000).0, Some(6 * UNITS + 7 * 3_333_000));
}

#[test]
fn refill_stops_at_capacity() {
    let owner = limit(Some(10), Some(1_000));
    let _ = reserve(&[&owner], 500, 0).unwrap();
    assert_eq!(whole(&owner, 10 * MINUTE), (Some(10), Some(1_000)));
    // Ten idle minutes do not bank more than one bucket.
    for _ in 0..10 {
        let _ = reserve(&[&owner], 0, 10 * MINUTE).unwrap();
    }
    assert_eq!(
        reserve(&[&owner], 0, 10 * MINUTE),
        Err(exhausted(0, LimitKind::Requests, 10 * MINUTE + 6 * SECOND))
    );
}

#[test]
fn retry_at_is_exact_to_the_nanosecond() {
    let start = 5 * SECOND + 17;
    let owner = limit(Some(7), Some(1_000));
    for _ in 0..7 {
        let _ = reserve(&[&owner], 0, start).unwrap();
    }
    // One request every 60/7 s = 8_571_428_571.43 ns, rounded up.
    let retry_at = start + 8_571_428_572;
    let denied = exhausted(0, LimitKind::Requests, retry_at);
    assert_eq!(reserve(&[&owner], 0, start), Err(denied));
    assert_eq!(reserve(&[&owner], 0, retry_at - 1), Err(denied));
    let reservation = reserve(&[&owner], 0, retry_at).unwrap();
    release(&[&owner], reservation, retry_at);

    // Tokens: 999 of 1000 taken, 500 wanted: 499 tokens at 1000 a minute.
    let owner = limit(None, Some(1_000));
    let _ = reserve(&[&owner], 999, 0).unwrap();
    let retry_at = 29_940_000_000;
    assert_eq!(
        reserve(&[&owner], 500, retry_at - 1),
        Err(exhausted(0, LimitKind::Tokens, retry_at))
    );
    assert!(reserve(&[&owner], 500, retry_at).is_ok());
}

#[test]
fn all_or_nothing_takes_from_no_limit_when_one_is_short() {
    let deployment = limit(Some(100), Some(1_000));
    let tenant = limit(Some(100), Some(100));
    let both = [&deployment, &tenant];
    let _ = reserve(&both, 60, 0).unwrap();
    assert_eq!(
        reserve(&both, 60, 0),
        Err(exhausted(1, LimitKind::Tokens, 12 * SECOND))
    );
    assert_eq!(whole(&deployment, 0), (Some(99), Some(940)));
    assert_eq!(whole(&tenant, 0), (Some(99), Some(40)));
    // Reserving on the deployment alone is unaffected by the failed attempt.
    assert!(reserve(&[&deployment], 60, 0).is_ok());
}

#[test]
fn denial_names_the_owner_that_binds_longest() {
    let key = limit(Some(1), None); // empty: next request in 60 s
    let tenant = limit(Some(60), None); // empty: next request in 1 s
    let _ = reserve(&[&key, &tenant], 0, 0).unwrap();
    for _ in 1..60 {
        let _ = reserve(&[&tenant], 0, 0).unwrap();
    }
    let limits = [&tenant, &key];
    assert_eq!(
        reserve(&limits, 0, 0),
        Err(exhausted(1, LimitKind::Requests, MINUTE))
    );
    // Too large outranks any wait, and stays too large however long one waits.
    let small = limit(None, Some(50));
    let limits = [&tenant, &key, &small];
    let too_large = Denied::TooLarge {
        owner_index: 2,
        kind: LimitKind::Tokens,
        per_minute: 50,
    };
    assert_eq!(reserve(&limits, 51, 0), Err(too_large));
    assert_eq!(reserve(&limits, 51, 60 * MINUTE), Err(too_large));
    assert!(reserve(&limits, 50, 60 * MINUTE).is_ok());
}

#[test]
fn denials_explain_themselves() {
    assert_eq!(
        exhausted(1, LimitKind::Tokens, 42).to_string(),
        "tokens-per-minute limit of owner 1 is exhausted until 42 ns"
    );
    let too_large = Denied::TooLarge {
        owner_index: 0,
        kind: LimitKind::Tokens,
        per_minute: 50,
    };
    assert_eq!(
        too_large.to_string(),
        "tokens-per-minute limit of owner 0 is 50, too small for this request ever to fit"
    );
}

#[test]
fn settle_returns_the_surplus_and_keeps_the_request() {
    let owner = limit(Some(10), Some(600));
    let reservation = reserve(&[&owner], 100, 0).unwrap();
    assert_eq!(reservation.tokens(), 100);
    settle(&[&owner], reservation, 40, 0);
    assert_eq!(whole(&owner, 0), (Some(9), Some(560)));
}

#[test]
fn settle_takes_an_overrun_into_debt_that_later_requests_wait_out() {
    let owner = limit(None, Some(600)); // ten tokens a second
    let reservation = reserve(&[&owner], 100, 0).unwrap();
    settle(&[&owner], reservation, 1_000, 0);
    assert_eq!(whole(&owner, 0), (None, Some(-400)));
    assert_eq!(owner.headroom(0), 0.0);
    // Even a zero-token request waits until the debt is paid: 40 s.
    assert_eq!(
        reserve(&[&owner], 0, 0),
        Err(exhausted(0, LimitKind::Tokens, 40 * SECOND))
    );
    assert!(reserve(&[&owner], 0, 40 * SECOND).is_ok());
    // Debt stops at one full bucket.
    let reservation = reserve(&[&owner], 0, 40 * SECOND).unwrap();
    settle(&[&owner], reservation, u32::MAX, 40 * SECOND);
    assert_eq!(whole(&owner, 40 * SECOND), (None, Some(-600)));
}

#[test]
fn release_returns_the_request_and_the_tokens() {
    let owner = limit(Some(10), Some(600));
    let tenant = limit(Some(5), None);
    let reservation = reserve(&[&owner, &tenant], 250, 0).unwrap();
    release(&[&owner, &tenant], reservation, 0);
    assert_eq!(whole(&owner, 0), (Some(10), Some(600)));
    assert_eq!(whole(&tenant, 0), (Some(5), None));
    // What refill has already restored is not returned twice.
    let reservation = reserve(&[&owner], 250, 0).unwrap();
    release(&[&owner], reservation, 30 * SECOND);
    assert_eq!(whole(&owner, 30 * SECOND), (Some(10), Some(600)));
}

#[test]
fn a_limit_listed_twice_is_charged_once() {
    let owner = limit(Some(2), Some(100));
    let reservation = reserve(&[&owner, &owner], 30, 0).unwrap();
    assert_eq!(whole(&owner, 0), (Some(1), Some(70)));
    settle(&[&owner, &owner], reservation, 10, 0);
    assert_eq!(whole(&owner, 0), (Some(1), Some(90)));
    let reservation = reserve(&[&owner, &owner], 30, 0).unwrap();
    release(&[&owner, &owner], reservation, 0);
    assert_eq!(whole(&owner, 0), (Some(1), Some(90)));
}

#[test]
fn an_older_now_neither_refills_nor_rewinds() {
    let owner = limit(Some(60), None);
    for _ in 0..60 {
        let _ = reserve(&[&owner], 0, 10 * SECOND).unwrap();
    }
    // Another thread read the clock earlier and reserves later.
    assert_eq!(
        reserve(&[&owner], 0, 5 * SECOND),
        Err(exhausted(0, LimitKind::Requests, 11 * SECOND))
    );
    assert_eq!(levels(&owner, 5 * SECOND).0, Some(0));
    assert!(reserve(&[&owner], 0, 11 * SECOND).is_ok());
}

#[test]
fn headroom_is_the_emptier_bucket() {
    let owner = limit(Some(100), Some(1_000));
    assert_eq!(owner.headroom(0), 1.0);
    for _ in 0..10 {
        let _ = reserve(&[&owner], 50, 0).unwrap();
    }
    assert_eq!(owner.headroom(0), 0.5);
    // 15 s refill a quarter of each bucket: requests full, tokens at 3/4.
    assert_eq!(owner.headroom(15 * SECOND), 0.75);
}

#[test]
fn unlimited_buckets_never_deny() {
    let owner = limit(None, None);
    for _ in 0..1_000 {
        let _ = reserve(&[&owner], u32::MAX, 0).unwrap();
    }
    assert_eq!(owner.headroom(0), 1.0);
    let requests_only = limit(Some(1), None);
    let _ = reserve(&[&requests_only], u32::MAX, 0).unwrap();
    assert_eq!(levels(&requests_only, 0), (Some(0), None));
}

#[test]
fn reload_carries_levels_over_clamped_to_the_new_capacity() {
    let old = limit(Some(100), Some(1_000));
    for _ in 0..10 {
        let _ = reserve(&[&old], 10, 0).unwrap();
    }
    let grown = Limit::with_state_of(
        LimitSpec {
            rpm: Some(200),
            tpm: Some(2_000),
        },
        &old,
        0,
    );
    assert_eq!(whole(&grown, 0), (Some(90), Some(900)));
    assert_eq!(
        grown.spec(),
        LimitSpec {
            rpm: Some(200),
            tpm: Some(2_000)
        }
    );
    let shrunk = Limit::with_state_of(
        LimitSpec {
            rpm: Some(50),
            tpm: None,
        },
        &old,
        0,
    );
    assert_eq!(whole(&shrunk, 0), (Some(50), None));
    // Levels are taken as of `now`, at the old rate; then the new rate applies.
    let later = Limit::with_state_of(
        LimitSpec {
            rpm: Some(200),
            tpm: None,
        },
        &old,
        3 * SECOND,
    );
    assert_eq!(whole(&later, 3 * SECOND), (Some(95), None));
    assert_eq!(whole(&later, 6 * SECOND), (Some(105), None));
    // A bucket that was unlimited starts full; debt is carried, clamped.
    let unlimited = limit(Some(100), None);
    let indebted = limit(None, Some(1_000));
    let reservation = reserve(&[&indebted], 1_000, 0).unwrap();
    settle(&[&indebted], reservation, 1_900, 0);
    let spec = LimitSpec {
        rpm: Some(100),
        tpm: Some(500),
    };
    assert_eq!(
        whole(&Limit::with_state_of(spec, &unlimited, 0), 0),
        (Some(100), Some(500))
    );
    assert_eq!(
        whole(&Limit::with_state_of(spec, &indebted, 0), 0),
        (Some(100), Some(-500))
    );
}

#[test]
fn a_reservation_keeping_part_of_the_first_limit_leaves_it_there() {
    let deployment = limit(Some(10), None);
    let tenant = limit(Some(100), None);
    let keep = Keep::share(0.2);
    let taken = (0..20)
        .filter_map(|_| reserve_keeping(&[&deployment, &tenant], 0, 0, keep).ok())
        .count();
    assert_eq!(taken, 8, "two of ten kept");
    let denied = reserve_keeping(&[&deployment, &tenant], 0, 0, keep).unwrap_err();
    assert_eq!(denied.owner_index(), 0);
    assert_eq!(deployment.check_keeping(0, 0, keep), Err(denied));
    let rest = reserve(&[&deployment], 0, 0).expect("without keeping, the rest is there");
    release(&[&deployment], rest, 0);
    let fresh = limit(Some(100), None);
    assert_eq!(
        reserve_keeping(&[&fresh, &deployment], 0, 0, Keep::share(0.95)).map(|r| r.tokens()),
        Ok(0),
        "only the first limit keeps"
    );
}
