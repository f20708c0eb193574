//! Two routers standing for two hosts, joined by hand as a cluster link
//! would join them.

use std::time::Duration;

use super::*;
use crate::clock::Clock;
use crate::config::Config;
use crate::health::OutcomeClass;
use crate::stats::Outcome;
use crate::testing::chat_config;
use serde_json::json;

fn host(config: &str) -> (Router, Clock) {
    let clock = Clock::manual();
    let router = Router::from_config(&Config::from_json(config).unwrap(), clock.clone());
    (router, clock)
}

fn record(router: &Router, deployment: &str, outcome: &Outcome) {
    let lease = router.reserve(deployment, "", "", 0, 0).unwrap();
    router.record(lease, outcome).unwrap();
}

fn pass_on(from: &Router, to: &Router) -> Vec<(String, HealthNews)> {
    let news = from.health_news();
    for (deployment, change) in &news {
        assert!(to.hear(deployment, *change));
    }
    news.into_iter().map(|(d, n)| (d.to_string(), n)).collect()
}

#[test]
fn an_open_circuit_keeps_the_other_hosts_off_until_it_closes() {
    let (here, here_clock) = host(&chat_config());
    let (there, _) = host(&chat_config());
    for _ in 0..5 {
        record(&here, "b", &Outcome::failed(OutcomeClass::ServerError, 5.0));
    }
    // Open for 5 s, then 30 s for its probe (the defaults).
    let open = HealthNews::CircuitOpen {
        for_nanos: 35_000_000_000,
    };
    assert_eq!(pass_on(&here, &there), [("b".to_owned(), open)]);
    assert_eq!(pass_on(&here, &there), [], "told once");
    here.retell_health();
    assert_eq!(here.health_news().len(), 1, "told again when asked");
    assert!(there.reserve("b", "", "", 0, 0).is_err());
    assert!(there.reserve("a", "", "", 0, 0).is_ok());
    assert_eq!(there.health_news(), [], "what it heard it does not pass on");

    here_clock.advance(Duration::from_secs(6));
    record(&here, "b", &Outcome::ok(5.0));
    let closed = ("b".to_owned(), HealthNews::CircuitClosed);
    assert_eq!(pass_on(&here, &there), [closed]);
    assert!(there.reserve("b", "", "", 0, 0).is_ok(), "back in at once");
}

#[test]
fn a_cool_down_keeps_the_other_hosts_off_for_its_length() {
    let (here, _) = host(&chat_config());
    let (there, there_clock) = host(&chat_config());
    let limited = Outcome {
        retry_after: Some(Duration::from_secs(2)),
        ..Outcome::failed(OutcomeClass::RateLimited, 5.0)
    };
    record(&here, "b", &limited);
    let cooling = HealthNews::CoolingDown {
        for_nanos: 2_000_000_000,
    };
    assert_eq!(pass_on(&here, &there), [("b".to_owned(), cooling)]);
    assert!(there.reserve("b", "", "", 0, 0).is_err());
    there_clock.advance(Duration::from_secs(2));
    assert!(there.reserve("b", "", "", 0, 0).is_ok());
    assert!(!there.hear("nowhere", cooling), "a deployment it lacks");
}

#[test]
fn fed_limits_admit_only_what_was_granted() {
    let mut value: serde_json::Value = serde_json::from_str(&chat_config()).unwrap();
    value["deployments"][0]["rpm"] = json!(10);
    value["rate_limits"] = json!({"tenants": {"t": {"tpm": 100}}});
    let (router, clock) = host(&value.to_string());
    router.set_refill_share(0.0);
    let levels: Vec<(String, LimitKind, f64)> = router
        .budgets()
        .into_iter()
        .map(|(key, b)| (key, b.kind, b.level))
        .collect();
    assert_eq!(
        levels,
        [
            ("deployment/a".to_owned(), LimitKind::Requests, 0.0),
            ("tenant/t".to_owned(), LimitKind::Tokens, 0.0),
        ]
    );
    clock.advance(Duration::from_secs(30));
    assert!(
        router.reserve("a", "", "", 0, 0).is_err(),
        "no refill of its own"
    );
    assert_eq!(router.grant("deployment/a", LimitKind::Requests, 3), 3);
    assert_eq!(router.grant("deployment/gone", LimitKind::Requests, 3), 0);
    record(&router, "a", &Outcome::ok(5.0));
    assert_eq!(router.take_back("deployment/a", LimitKind::Requests), 2);
    assert!(router.reserve("a", "", "", 0, 0).is_err());

    // Unreachable cluster: a share of the rate, 10 a minute × 0.5.
    router.set_refill_share(0.5);
    clock.advance(Duration::from_secs(12));
    assert_eq!(router.take_back("deployment/a", LimitKind::Requests), 1);
}
