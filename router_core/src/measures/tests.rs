use super::*;

fn fine(values: &[f64]) -> Distribution {
    let histogram = Fine::default();
    for &value in values {
        histogram.record(&FINE_DURATION_BOUNDS_S[..], Unit::Seconds, value);
    }
    histogram.snapshot(&FINE_DURATION_BOUNDS_S[..], Unit::Seconds)
}

#[test]
fn fine_bounds_rise_by_quarter_octaves_through_the_conventions_bounds() {
    let fine = &*FINE_DURATION_BOUNDS_S;
    assert!((fine[0] - 0.000625).abs() < 1e-12);
    assert_eq!(fine.last(), DURATION_BOUNDS_S.last());
    for pair in fine.windows(2) {
        let ratio = pair[1] / pair[0];
        assert!((ratio - 2f64.powf(0.25)).abs() < 1e-9, "{pair:?}");
    }
    let every_fourth: Vec<f64> = fine[FINE_BELOW..].iter().step_by(4).copied().collect();
    assert_eq!(every_fourth, DURATION_BOUNDS_S);
}

#[test]
fn a_value_on_a_bound_counts_in_that_bound_s_bucket() {
    let histogram = Coarse::default();
    for value in [0.01, 0.010001, 81.92, 100.0, 0.0] {
        histogram.record(&DURATION_BOUNDS_S, Unit::Seconds, value);
    }
    let counts = histogram.snapshot(&DURATION_BOUNDS_S, Unit::Seconds).counts;
    assert_eq!(counts[0], 2, "0 and 0.01 are at most the first bound");
    assert_eq!(counts[1], 1);
    assert_eq!(counts[13], 1, "81.92 is the last bound's");
    assert_eq!(counts[14], 1, "100 is above every bound");
}

#[test]
fn the_sum_is_kept_to_the_microsecond() {
    let distribution = fine(&[0.0015, 0.25, 2.0]);
    assert!(
        (distribution.sum - 2.2515).abs() < 1e-9,
        "{}",
        distribution.sum
    );
    assert_eq!(distribution.count(), 3);
}

#[test]
fn quantiles_are_within_a_quarter_octave_of_the_true_ones() {
    // 1..=1000 ms, evenly: the true p50 is 0.5 s, p95 0.95 s, p99 0.99 s.
    let values: Vec<f64> = (1..=1000).map(|ms| f64::from(ms) / 1000.0).collect();
    let distribution = fine(&values);
    for (q, truth) in [(0.5, 0.5), (0.95, 0.95), (0.99, 0.99), (0.01, 0.01)] {
        let estimate = distribution.quantile(q).unwrap();
        assert!(
            (estimate / truth - 1.0).abs() < 0.1,
            "p{q}: {estimate} vs {truth}"
        );
    }
}

#[test]
fn quantiles_of_nothing_or_out_of_range_are_none_and_the_top_is_the_last_bound() {
    assert_eq!(fine(&[]).quantile(0.5), None);
    assert_eq!(fine(&[1.0]).quantile(1.5), None);
    assert_eq!(fine(&[500.0]).quantile(0.99), Some(81.92));
    let one = fine(&[0.3]).quantile(0.5).unwrap();
    assert!(one > 0.25 && one <= 0.3 * 2f64.powf(0.25), "{one}");
}

#[test]
fn at_coarser_bounds_the_counts_are_those_recorded_at_them() {
    let mut seed = 7u64;
    let values: Vec<f64> = (0..5000)
        .map(|_| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            // Log-uniform from 0.1 ms to about 200 s, with every bound itself among them.
            (seed >> 11) as f64 / (1u64 << 53) as f64
        })
        .map(|u| 1e-4 * 2f64.powf(u * 21.0))
        .chain(DURATION_BOUNDS_S)
        .collect();
    let coarse = Coarse::default();
    for &value in &values {
        coarse.record(&DURATION_BOUNDS_S, Unit::Seconds, value);
    }
    let direct = coarse.snapshot(&DURATION_BOUNDS_S, Unit::Seconds);
    let summed = fine(&values).at_bounds(&DURATION_BOUNDS_S).unwrap();
    assert_eq!(summed.counts, direct.counts);
    assert!((summed.sum - direct.sum).abs() < 1e-3);
}

#[test]
fn bounds_that_are_not_its_own_are_refused() {
    static ODD: [f64; 2] = [0.01, 0.03];
    assert_eq!(fine(&[0.02]).at_bounds(&ODD), Err(NotABound(0.03)));
    static BEYOND: [f64; 1] = [200.0];
    assert_eq!(fine(&[0.02]).at_bounds(&BEYOND), Err(NotABound(200.0)));
}

#[test]
fn failures_are_kept_per_class_and_successes_apart() {
    let failed = FailedDurations::default();
    failed.record(OutcomeClass::Timeout, 30.0);
    failed.record(OutcomeClass::Timeout, 30.0);
    failed.record(OutcomeClass::RateLimited, 0.05);
    failed.record(OutcomeClass::Ok, 1.0);
    let classes: Vec<(OutcomeClass, u64)> = failed
        .snapshot()
        .into_iter()
        .map(|(class, d)| (class, d.count()))
        .collect();
    assert_eq!(
        classes,
        [(OutcomeClass::RateLimited, 1), (OutcomeClass::Timeout, 2)]
    );
}

#[test]
fn concurrent_records_are_all_counted() {
    let histogram = Fine::default();
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                for i in 0..1000 {
                    histogram.record(
                        &FINE_DURATION_BOUNDS_S[..],
                        Unit::Seconds,
                        f64::from(i) / 100.0,
                    );
                }
            });
        }
    });
    let distribution = histogram.snapshot(&FINE_DURATION_BOUNDS_S[..], Unit::Seconds);
    assert_eq!(distribution.count(), 4000);
}
