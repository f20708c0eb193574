use super::*;

const DEC_31_2026_NOON: f64 = 1_798_718_400.0; // 2026-12-31T12:00:00Z

fn budget(daily: Option<f64>, monthly: Option<f64>, total: Option<f64>) -> Arc<DollarBudget> {
    let spec = BudgetSpec {
        daily_usd: daily,
        monthly_usd: monthly,
        total_usd: total,
    };
    Arc::new(DollarBudget::at(None, "t", spec))
}

#[test]
fn the_calendar_is_the_utc_one() {
    for days in [-1000, 0, 59, 365, 10_957, 20_818, 100_000] {
        let (y, m, d) = civil(days);
        assert_eq!(days_from_civil(y, m, d), days);
    }
    assert_eq!(civil(20_818), (2026, 12, 31));
    let when = When::at(DEC_31_2026_NOON);
    assert_eq!(when.next_start_s(Period::Day), Some(1_798_761_600.0)); // 2027-01-01T00:00Z
    assert_eq!(when.next_start_s(Period::Month), Some(1_798_761_600.0));
    assert_eq!(
        When::at(1_796_083_200.0).next_start_s(Period::Month),
        Some(1_798_761_600.0)
    ); // Dec 1
    assert_eq!(when.next_start_s(Period::Total), None);
}

#[test]
fn a_budget_admits_to_the_cent_and_names_the_period_and_its_reset() {
    let daily = budget(Some(1.0), None, None);
    let held: Vec<Hold> = (0..100)
        .map(|_| reserve(&[Arc::clone(&daily)], 0.01, DEC_31_2026_NOON, false).unwrap())
        .collect();
    let refused = reserve(&[Arc::clone(&daily)], 0.01, DEC_31_2026_NOON, false).unwrap_err();
    assert_eq!((refused.period, refused.left_usd), (Period::Day, 0.0));
    assert_eq!(refused.resets_at_s, Some(1_798_761_600.0));
    drop(held);
    assert_eq!(
        daily.spent_usd(DEC_31_2026_NOON).0,
        0.0,
        "dropped holds give their dollars back"
    );
}

#[test]
fn the_actual_cost_settles_the_reservation() {
    let total = budget(None, None, Some(1.0));
    reserve(&[Arc::clone(&total)], 0.5, DEC_31_2026_NOON, false)
        .unwrap()
        .settle(0.2, DEC_31_2026_NOON);
    assert!((total.spent_usd(DEC_31_2026_NOON).2 - 0.2).abs() < 1e-9);
    let err = reserve(&[Arc::clone(&total)], 0.81, DEC_31_2026_NOON, false).unwrap_err();
    assert!((err.left_usd - 0.8).abs() < 1e-9 && err.resets_at_s.is_none());
}

#[test]
fn a_new_day_and_a_new_month_start_again_but_the_total_does_not() {
    let all = budget(Some(1.0), Some(2.0), Some(2.5));
    reserve(&[Arc::clone(&all)], 1.0, DEC_31_2026_NOON, false)
        .unwrap()
        .settle(1.0, DEC_31_2026_NOON);
    assert_eq!(
        reserve(&[Arc::clone(&all)], 0.5, DEC_31_2026_NOON, false)
            .unwrap_err()
            .period,
        Period::Day
    );
    let next_day = DEC_31_2026_NOON + 86_400.0; // 2027-01-01: a new day and a new month
    reserve(&[Arc::clone(&all)], 1.0, next_day, false)
        .unwrap()
        .settle(1.0, next_day);
    assert_eq!(all.spent_usd(next_day), (1.0, 1.0, 2.0));
    let err = reserve(&[Arc::clone(&all)], 0.6, next_day + 86_400.0, false).unwrap_err();
    assert_eq!(err.period, Period::Total);
}

#[test]
fn several_budgets_are_all_reserved_or_none() {
    let (tenant, key) = (
        budget(Some(10.0), None, None),
        budget(Some(1.0), None, None),
    );
    let both = [Arc::clone(&tenant), Arc::clone(&key)];
    let err = reserve(&both, 2.0, DEC_31_2026_NOON, false).unwrap_err();
    assert_eq!(err.owner_index, 1, "the key's binds");
    assert_eq!(
        tenant.spent_usd(DEC_31_2026_NOON).0,
        0.0,
        "nothing taken from the tenant"
    );
}

#[test]
fn concurrent_reservations_never_overdraw() {
    let daily = budget(Some(1.0), None, None);
    let admitted = std::sync::atomic::AtomicU32::new(0);
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                for _ in 0..50 {
                    if let Ok(hold) = reserve(&[Arc::clone(&daily)], 0.01, DEC_31_2026_NOON, false)
                    {
                        admitted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        hold.settle(0.01, DEC_31_2026_NOON);
                    }
                }
            });
        }
    });
    assert_eq!(admitted.into_inner(), 100);
}

#[test]
fn budgets_on_one_region_are_one_budget() {
    let path = std::env::temp_dir().join(format!("router-budget-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let region = || Arc::new(Region::open(&path).unwrap());
    let spec = BudgetSpec {
        daily_usd: Some(1.0),
        ..BudgetSpec::default()
    };
    let (first, second) = (region(), region());
    let a = Arc::new(DollarBudget::at(Some(&first), "tenant/acme", spec));
    let b = Arc::new(DollarBudget::at(Some(&second), "tenant/acme", spec));
    reserve(&[a], 0.7, DEC_31_2026_NOON, false)
        .unwrap()
        .settle(0.7, DEC_31_2026_NOON);
    assert_eq!(
        reserve(&[b], 0.4, DEC_31_2026_NOON, false)
            .unwrap_err()
            .period,
        Period::Day
    );
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_seed_counts_what_was_spent_before_once_however_often_it_is_given() {
    let daily = budget(Some(10.0), None, None);
    daily.seed((8.0, 8.0, 20.0), DEC_31_2026_NOON);
    daily.seed((8.0, 8.0, 20.0), DEC_31_2026_NOON);
    assert_eq!(daily.spent_usd(DEC_31_2026_NOON), (8.0, 8.0, 20.0));
    let err = reserve(&[Arc::clone(&daily)], 2.5, DEC_31_2026_NOON, false).unwrap_err();
    assert!((err.left_usd - 2.0).abs() < 1e-9);
}

fn nanos(usd: f64) -> i64 {
    to_nanos(usd)
}

#[test]
fn a_pooled_budget_admits_only_what_its_allowance_holds() {
    let daily = budget(Some(10.0), None, None);
    let now = When::at(DEC_31_2026_NOON);
    let refused = reserve(&[Arc::clone(&daily)], 0.5, DEC_31_2026_NOON, true).unwrap_err();
    assert!(refused.pooled, "nothing drawn yet: {refused:?}");
    daily.grant(nanos(1.0), now, nanos(4.0), Period::Day);
    let held = reserve(&[Arc::clone(&daily)], 0.75, DEC_31_2026_NOON, true).unwrap();
    let refused = reserve(&[Arc::clone(&daily)], 0.5, DEC_31_2026_NOON, true).unwrap_err();
    assert!(refused.pooled && refused.period == Period::Day);
    assert!(
        (refused.left_usd - 4.25).abs() < 1e-9,
        "the allowance's 0.25 and the pool's 4: {refused:?}"
    );
    held.settle(0.25, DEC_31_2026_NOON);
    assert_eq!(
        daily.pooled_view(DEC_31_2026_NOON).allowance_nanos,
        nanos(0.75)
    );
    reserve(&[Arc::clone(&daily)], 0.5, DEC_31_2026_NOON, true)
        .unwrap()
        .settle(0.5, DEC_31_2026_NOON);
}

#[test]
fn a_pooled_budget_owes_what_the_estimate_understated_and_gives_back_the_rest() {
    let daily = budget(Some(10.0), None, None);
    let now = When::at(DEC_31_2026_NOON);
    daily.grant(nanos(1.0), now, 0, Period::Day);
    reserve(&[Arc::clone(&daily)], 0.5, DEC_31_2026_NOON, true)
        .unwrap()
        .settle(1.5, DEC_31_2026_NOON);
    assert_eq!(
        daily.take_back(0, DEC_31_2026_NOON),
        vec![(-nanos(0.5), now.day, now.month)],
        "a debt to cover"
    );
    daily.grant(nanos(2.0), now, 0, Period::Day);
    assert_eq!(
        daily.take_back(nanos(0.5), DEC_31_2026_NOON),
        vec![(nanos(1.5), now.day, now.month)],
        "what is above the part kept"
    );
    assert_eq!(daily.take_back(nanos(0.5), DEC_31_2026_NOON), vec![]);
}

#[test]
fn an_allowance_is_good_for_its_day_only() {
    let daily = budget(Some(10.0), None, None);
    let today = When::at(DEC_31_2026_NOON);
    daily.grant(nanos(1.0), today, 0, Period::Day);
    let tomorrow_s = DEC_31_2026_NOON + 86_400.0;
    let refused = reserve(&[Arc::clone(&daily)], 0.1, tomorrow_s, true).unwrap_err();
    assert!(refused.pooled);
    assert_eq!(
        daily.take_back(nanos(5.0), tomorrow_s),
        vec![(nanos(1.0), today.day, today.month)],
        "all of yesterday's allowance goes back, however much is kept"
    );
    daily.grant(nanos(1.0), When::at(tomorrow_s), 0, Period::Day);
    reserve(&[Arc::clone(&daily)], 0.1, tomorrow_s, true).unwrap();
}

#[test]
fn an_unpooled_reservation_leaves_the_allowance_alone() {
    let daily = budget(Some(10.0), None, None);
    let now = When::at(DEC_31_2026_NOON);
    daily.grant(nanos(1.0), now, 0, Period::Day);
    reserve(&[Arc::clone(&daily)], 0.5, DEC_31_2026_NOON, false)
        .unwrap()
        .settle(0.5, DEC_31_2026_NOON);
    assert_eq!(
        daily.pooled_view(DEC_31_2026_NOON).allowance_nanos,
        nanos(1.0)
    );
}

#[test]
fn a_grant_for_a_new_day_keeps_yesterdays_allowance_to_give_back() {
    let daily = budget(Some(10.0), None, None);
    let today = When::at(DEC_31_2026_NOON);
    let tomorrow_s = DEC_31_2026_NOON + 86_400.0;
    daily.grant(nanos(0.5), today, 0, Period::Day);
    daily.grant(nanos(1.0), When::at(tomorrow_s), 0, Period::Day);
    assert_eq!(
        daily.take_back(nanos(1.0), tomorrow_s),
        vec![(nanos(0.5), today.day, today.month)],
        "yesterday's half goes back for yesterday; today's dollar stays"
    );
}

#[test]
fn a_call_settled_after_midnight_settles_with_the_day_it_was_reserved_on() {
    let daily = budget(Some(10.0), None, None);
    let today = When::at(DEC_31_2026_NOON);
    let tomorrow_s = DEC_31_2026_NOON + 86_400.0;
    let tomorrow = When::at(tomorrow_s);
    daily.grant(nanos(1.0), today, 0, Period::Day);
    let hold = reserve(&[Arc::clone(&daily)], 0.8, DEC_31_2026_NOON, true).unwrap();
    daily.grant(nanos(0.1), tomorrow, 0, Period::Day);
    hold.settle(0.3, tomorrow_s);
    assert_eq!(
        daily.pooled_view(tomorrow_s).allowance_nanos,
        nanos(0.1),
        "today's untouched"
    );
    assert_eq!(
        daily.take_back(nanos(1.0), tomorrow_s),
        vec![(nanos(0.7), today.day, today.month)],
        "yesterday's 0.2 left and the 0.5 the call did not spend go back for yesterday"
    );
}

#[test]
fn a_budget_without_bounds_needs_no_allowance() {
    let unbounded = budget(None, None, None);
    reserve(&[Arc::clone(&unbounded)], 5.0, DEC_31_2026_NOON, true)
        .unwrap()
        .settle(5.0, DEC_31_2026_NOON);
    let refused = reserve(
        &[budget(None, Some(3.0), None)],
        1.0,
        DEC_31_2026_NOON,
        true,
    )
    .unwrap_err();
    assert_eq!(
        (refused.period, refused.limit_usd),
        (Period::Month, 3.0),
        "unheard: its first bound"
    );
}
