//! Random operation sequences, and many threads, against the exact accounting.

use std::sync::Barrier;
use std::thread;

use proptest::prelude::*;

use super::*;
use crate::strategy::SplitMix64;

#[derive(Debug, Clone)]
enum Op {
    /// On the owners whose bit is set in `owners` (a non-empty subset of three).
    Reserve {
        owners: u8,
        tokens: u32,
    },
    /// `pick` chooses an outstanding reservation, modulo their number.
    Settle {
        pick: usize,
        actual: u32,
    },
    Release {
        pick: usize,
    },
    Advance(Nanos),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u8..8, 0u32..400).prop_map(|(owners, tokens)| Op::Reserve { owners, tokens }),
        2 => (any::<usize>(), 0u32..800).prop_map(|(pick, actual)| Op::Settle { pick, actual }),
        1 => any::<usize>().prop_map(|pick| Op::Release { pick }),
        2 => (0..20 * SECOND).prop_map(Op::Advance),
    ]
}

/// Small limits, so that denials, debt and the capacity clamp all happen.
fn spec() -> impl Strategy<Value = LimitSpec> {
    (
        proptest::option::of(1u32..30),
        proptest::option::of(1u32..2_000),
    )
        .prop_map(|(rpm, tpm)| LimitSpec { rpm, tpm })
}

/// Every limit's levels; refilling to `now` changes nothing observable.
fn snapshot(limits: &[Limit], now: Nanos) -> Vec<(Option<i128>, Option<i128>)> {
    limits.iter().map(|limit| levels(limit, now)).collect()
}

/// A denial must leave every limit as it was, and its `retry_at` must be
/// exact: checked on copies of the limits so that the run goes on unchanged.
fn check_denial(chosen: &[&Limit], tokens: u32, now: Nanos, denied: Denied) {
    match denied {
        Denied::Exhausted { retry_at, .. } => {
            assert!(retry_at > now, "{denied:?} at {now}");
            let copies: Vec<Limit> = chosen
                .iter()
                .map(|limit| Limit::with_state_of(limit.spec(), limit, now))
                .collect();
            let copies: Vec<&Limit> = copies.iter().collect();
            assert!(reserve(&copies, tokens, retry_at - 1).is_err());
            assert!(reserve(&copies, tokens, retry_at).is_ok());
        }
        Denied::TooLarge {
            owner_index,
            kind,
            per_minute,
        } => {
            assert_eq!(kind, LimitKind::Tokens);
            assert_eq!(chosen[owner_index].spec().tpm, Some(per_minute));
            assert!(tokens > per_minute);
        }
    }
}

/// Over any run of operations from event `i` to event `j`, requests admitted
/// minus requests released are at most one bucket plus what the elapsed time
/// refills, since the bucket starts at most full and ends at least empty.
fn check_windows(rpm: u32, events: &[(Nanos, i128)]) {
    let rpm = i128::from(rpm);
    for (i, &(start, _)) in events.iter().enumerate() {
        let mut net = 0;
        for &(end, delta) in &events[i..] {
            net += delta;
            let refilled = rpm * i128::from(end - start) / i128::from(MINUTE);
            assert!(net <= rpm + refilled, "{net} admitted in [{start}, {end}]");
        }
    }
}

fn run(specs: [LimitSpec; 3], ops: Vec<Op>) {
    let limits = specs.map(Limit::new);
    let mut now = 0;
    let mut outstanding: Vec<(Vec<usize>, Reservation)> = Vec::new();
    // Per owner: (time, +1 for a request admitted, -1 for one released).
    let mut events: [Vec<(Nanos, i128)>; 3] = Default::default();
    for op in ops {
        match op {
            Op::Reserve { owners, tokens } => {
                let owners: Vec<usize> = (0..3).filter(|i| owners & (1 << i) != 0).collect();
                let chosen: Vec<&Limit> = owners.iter().map(|&i| &limits[i]).collect();
                let before = snapshot(&limits, now);
                match reserve(&chosen, tokens, now) {
                    Ok(reservation) => {
                        owners.iter().for_each(|&i| events[i].push((now, 1)));
                        outstanding.push((owners, reservation));
                    }
                    Err(denied) => {
                        assert_eq!(snapshot(&limits, now), before);
                        check_denial(&chosen, tokens, now, denied);
                    }
                }
            }
            Op::Settle { pick, actual } if !outstanding.is_empty() => {
                let (owners, reservation) = outstanding.swap_remove(pick % outstanding.len());
                let chosen: Vec<&Limit> = owners.iter().map(|&i| &limits[i]).collect();
                settle(&chosen, reservation, actual, now);
            }
            Op::Release { pick } if !outstanding.is_empty() => {
                let (owners, reservation) = outstanding.swap_remove(pick % outstanding.len());
                let chosen: Vec<&Limit> = owners.iter().map(|&i| &limits[i]).collect();
                release(&chosen, reservation, now);
                owners.iter().for_each(|&i| events[i].push((now, -1)));
            }
            Op::Advance(by) => now += by,
            Op::Settle { .. } | Op::Release { .. } => {}
        }
        for (limit, (requests, tokens)) in limits.iter().zip(snapshot(&limits, now)) {
            let spec = limit.spec();
            if let (Some(rpm), Some(level)) = (spec.rpm, requests) {
                assert!((0..=units(rpm)).contains(&level), "requests {level}");
            }
            if let (Some(tpm), Some(level)) = (spec.tpm, tokens) {
                assert!(
                    (-units(tpm)..=units(tpm)).contains(&level),
                    "tokens {level}"
                );
            }
        }
    }
    for (spec, events) in specs.iter().zip(&events) {
        if let Some(rpm) = spec.rpm {
            check_windows(rpm, events);
        }
    }
}

proptest! {
    #[test]
    fn random_operations_keep_buckets_bounded_and_admissions_within_rate(
        specs in [spec(), spec(), spec()],
        ops in proptest::collection::vec(op(), 1..200),
    ) {
        run(specs, ops);
    }
}

const THREADS: u64 = 8;

/// Many short rounds, so that threads cross the point of exhaustion together
/// many times: that is where a check-then-take race would overdraw.
#[test]
fn concurrent_reservations_never_overdraw_and_deny_only_when_short() {
    for round in 0..200 {
        scarce_round(round * THREADS);
    }
}

/// The clock is frozen, so nothing refills and every admission must come out
/// of the initial buckets.
fn scarce_round(seed: u64) {
    let clock = Clock::manual();
    clock.advance(Duration::from_secs(5));
    let deployment = limit(Some(40), Some(3_000));
    let tenant = limit(Some(30), Some(10_000));
    let start = Barrier::new(THREADS as usize);
    type Denial<'a> = (Denied, u32, [&'a Limit; 2]);
    let per_thread: Vec<(u64, u64, Vec<Denial>)> = thread::scope(|scope| {
        let (clock, start) = (&clock, &start);
        let handles: Vec<_> = (seed..seed + THREADS)
            .map(|seed| {
                // Half the threads list the limits the other way round, which
                // would deadlock if locks were taken in slice order.
                let limits = match seed % 2 {
                    0 => [&deployment, &tenant],
                    _ => [&tenant, &deployment],
                };
                scope.spawn(move || {
                    let mut rng = SplitMix64::new(seed);
                    let (mut admitted, mut tokens, mut denials) = (0, 0, Vec::new());
                    start.wait();
                    for _ in 0..20 {
                        let want = 1 + (rng.next_u64() % 200) as u32;
                        match reserve(&limits, want, clock.now()) {
                            Ok(reservation) => {
                                admitted += 1;
                                tokens += u64::from(reservation.tokens());
                            }
                            Err(denied) => denials.push((denied, want, limits)),
                        }
                    }
                    (admitted, tokens, denials)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let admitted: u64 = per_thread.iter().map(|t| t.0).sum();
    let tokens: u64 = per_thread.iter().map(|t| t.1).sum();
    assert!(
        admitted <= 30 && tokens <= 3_000,
        "{admitted} requests, {tokens} tokens"
    );
    let now = clock.now();
    let (admitted, tokens) = (i128::from(admitted), i128::from(tokens));
    assert_eq!(
        whole(&deployment, now),
        (Some(40 - admitted), Some(3_000 - tokens))
    );
    assert_eq!(
        whole(&tenant, now),
        (Some(30 - admitted), Some(10_000 - tokens))
    );
    // Levels only fell after a denial, so what it found short is short still.
    let denials: Vec<&Denial> = per_thread.iter().flat_map(|t| &t.2).collect();
    assert!(!denials.is_empty());
    for &&(denied, want, limits) in &denials {
        let Denied::Exhausted {
            owner_index,
            kind,
            retry_at,
        } = denied
        else {
            panic!("{denied:?}");
        };
        assert!(retry_at > now);
        let (requests, tokens) = levels(limits[owner_index], now);
        let (level, need) = match kind {
            LimitKind::Requests => (requests, 1),
            LimitKind::Tokens => (tokens, want),
        };
        assert!(level.unwrap() < units(need), "{denied:?} for {want} tokens");
    }
}

/// With room for every request, none is denied, and after settling and
/// releasing from many threads the levels are exactly what was used.
#[test]
fn concurrent_reserve_settle_release_account_exactly() {
    let now = 5 * SECOND;
    let deployment = limit(Some(20_000), Some(10_000_000));
    let tenant = limit(Some(20_000), Some(5_000_000));
    let limits = [&deployment, &tenant];
    let per_thread: Vec<(i128, i128)> = thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|seed| {
                scope.spawn(move || {
                    let mut rng = SplitMix64::new(seed);
                    let (mut released, mut used) = (0, 0);
                    for _ in 0..1_000 {
                        let want = 1 + (rng.next_u64() % 200) as u32;
                        let reservation = reserve(&limits, want, now).unwrap();
                        if rng.next_u64().is_multiple_of(4) {
                            release(&limits, reservation, now);
                            released += 1;
                        } else {
                            let actual = (rng.next_u64() % 400) as u32;
                            settle(&limits, reservation, actual, now);
                            used += i128::from(actual);
                        }
                    }
                    (released, used)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let admitted =
        i128::from(THREADS as u32) * 1_000 - per_thread.iter().map(|t| t.0).sum::<i128>();
    let used: i128 = per_thread.iter().map(|t| t.1).sum();
    assert_eq!(
        whole(&deployment, now),
        (Some(20_000 - admitted), Some(10_000_000 - used))
    );
    assert_eq!(
        whole(&tenant, now),
        (Some(20_000 - admitted), Some(5_000_000 - used))
    );
}
