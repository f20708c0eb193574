//! Routers on one shared region, as the worker processes of a host map it.

use super::*;
use crate::measures::Extra;
use crate::testing::chat_config;
use serde_json::json;
use std::path::PathBuf;

/// A region file of the test's own, removed when the test ends.
struct RegionFile(PathBuf);

impl RegionFile {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("router-{name}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        RegionFile(path)
    }

    fn open(&self) -> Arc<Region> {
        Arc::new(Region::open(&self.0).unwrap())
    }

    /// Two routers on the region, as two workers would be.
    fn routers(&self, config: &Config, clock: &Clock) -> [Router; 2] {
        [(); 2].map(|()| Router::sharing(config, clock.clone(), Some(self.open())))
    }
}

impl Drop for RegionFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Two routers on one region, as two worker processes would map it: `a`'s
/// rpm of 10 admits 10 in all, not 10 each, and a reload of one keeps it.
#[test]
fn routers_sharing_a_region_admit_one_budget_between_them() {
    let file = RegionFile::new("share");
    let mut value: serde_json::Value = serde_json::from_str(&chat_config()).unwrap();
    value["deployments"][0]["rpm"] = json!(10);
    value["rate_limits"] = json!({"tenants": {"t": {"rpm": 4}}});
    let config = Config::from_json(&value.to_string()).unwrap();
    let clock = Clock::manual();
    let routers = file.routers(&config, &clock);
    let admitted = |tenant: &str| {
        (0..30)
            .filter(|i| {
                let router = &routers[i % 2];
                router
                    .reserve("a", tenant, "", 0, 0)
                    .is_ok_and(|lease| router.record(lease, &ok()).is_ok())
            })
            .count()
    };
    assert_eq!(admitted("t"), 4, "the tenant's budget binds first, in both");
    assert_eq!(
        admitted(""),
        6,
        "then the deployment's 10, less the tenant's 4"
    );
    routers[1].reload_config(&config);
    assert_eq!(admitted(""), 0, "a reload hands out no fresh budget");
    clock.advance(Duration::from_secs(6));
    assert_eq!(admitted(""), 1, "a sixth of a minute refills one of ten");
    let alone = Router::from_config(&config, clock.clone());
    let alone_admitted = (0..30)
        .filter(|_| {
            alone
                .reserve("a", "", "", 0, 0)
                .is_ok_and(|lease| alone.record(lease, &ok()).is_ok())
        })
        .count();
    assert_eq!(
        alone_admitted, 10,
        "a router of its own has a budget of its own"
    );
}

/// Two routers on one region: failures recorded by either count toward one
/// breaker, which both then see open, the half-open probe is one per host, and
/// the latency estimate is one.
#[test]
fn routers_sharing_a_region_share_one_breaker_and_latency_estimate() {
    use crate::health::OutcomeClass;
    let file = RegionFile::new("breaker");
    let config = Config::from_json(&chat_config()).unwrap();
    let clock = Clock::manual();
    let routers = file.routers(&config, &clock);
    let fail = |router: &Router| {
        let lease = router.reserve("b", "", "", 0, 0).unwrap();
        router
            .record(lease, &Outcome::failed(OutcomeClass::ServerError, 5.0))
            .unwrap();
    };
    // Five consecutive failures open the breaker (the default policy): three
    // here and two there.
    for i in 0..5 {
        assert!(
            routers[0].reserve("b", "", "", 0, 0).is_ok(),
            "open after {i}"
        );
        fail(&routers[i % 2]);
    }
    for router in &routers {
        assert!(router.reserve("b", "", "", 0, 0).is_err(), "open for both");
        assert!(router.reserve("a", "", "", 0, 0).is_ok(), "others are not");
    }
    clock.advance(Duration::from_secs(6));
    let probe = routers[1].reserve("b", "", "", 0, 0).unwrap();
    assert!(probe.is_probe());
    assert!(
        routers[0].reserve("b", "", "", 0, 0).is_err(),
        "one probe for the host"
    );
    routers[1].record(probe, &ok()).unwrap();
    assert!(
        routers[0].reserve("b", "", "", 0, 0).is_ok(),
        "closed again for both"
    );
    assert_eq!(
        routers[0].latency_tail_ms("b", false).unwrap(),
        Some(10.0),
        "one latency estimate, learnt from either router's answers"
    );
}

/// Attempts in flight are counted for the host, each process in its own
/// column; when a process dies with attempts in flight, the next process to
/// map the region takes its column back, and its count with it.
#[test]
fn routers_sharing_a_region_count_attempts_in_flight_together() {
    let file = RegionFile::new("flight");
    let config = Config::from_json(&chat_config()).unwrap();
    let clock = Clock::manual();
    let in_flight = |router: &Router| {
        let stats = router.stats();
        stats
            .iter()
            .find(|s| s.deployment == "a")
            .unwrap()
            .in_flight
    };
    let first = Router::sharing(&config, clock.clone(), Some(file.open()));
    let lease = first.reserve("a", "", "", 0, 0).unwrap();
    let second = Router::sharing(&config, clock.clone(), Some(file.open()));
    assert_eq!(in_flight(&second), 1, "the other router's attempt counts");

    // A process that dies holding a lease: its column is handed to a pid that
    // no longer exists, and its mapping is never dropped.
    let dying = file.open();
    let doomed = Router::sharing(&config, clock.clone(), Some(Arc::clone(&dying)));
    std::mem::forget(doomed.reserve("a", "", "", 0, 0).unwrap());
    let mut exited = std::process::Command::new("true").spawn().unwrap();
    exited.wait().unwrap();
    dying.hand_column_to(exited.id());
    std::mem::forget(doomed);
    std::mem::forget(dying);
    assert_eq!(in_flight(&second), 2);

    let _third = Router::sharing(&config, clock.clone(), Some(file.open()));
    assert_eq!(
        in_flight(&second),
        1,
        "the dead owner's attempt is taken back"
    );
    drop(lease);
    assert_eq!(in_flight(&second), 0);
}

/// Two routers on one region turn one round-robin position: decisions taken
/// by either in turn go round the group once, not once per router.
#[test]
fn routers_sharing_a_region_turn_one_round_robin() {
    let file = RegionFile::new("rotation");
    let config = Config::from_json(&config(
        vec![
            deployment("a", "eu", 8_000, &[]),
            deployment("b", "eu", 8_000, &[]),
            deployment("c", "eu", 8_000, &[]),
        ],
        vec![group("rr", "round_robin", &["a", "b", "c"])],
    ))
    .unwrap();
    let clock = Clock::manual();
    let routers = file.routers(&config, &clock);
    let firsts: Vec<String> = (0..6)
        .map(|i| {
            let decision = routers[i % 2].route(&RouteRequest::new("rr")).unwrap();
            decision.candidates[0].deployment.to_string()
        })
        .collect();
    assert_eq!(firsts, ["a", "b", "c", "a", "b", "c"]);
}

/// Two routers on one region learn one token calibration: what either's
/// answers report moves the ratio both apply.
#[test]
fn routers_sharing_a_region_learn_one_token_calibration() {
    let file = RegionFile::new("calibration");
    let config = Config::from_json(&chat_config()).unwrap();
    let clock = Clock::manual();
    let routers = file.routers(&config, &clock);
    let ratio = |router: &Router| {
        let stats = router.stats();
        stats
            .iter()
            .find(|s| s.deployment == "a")
            .unwrap()
            .input_token_ratio
    };
    assert_eq!(ratio(&routers[1]), 1.0);
    let lease = routers[0].reserve("a", "", "", 1_000, 0).unwrap();
    let reported = Outcome {
        input_tokens: 2_000,
        ..Outcome::ok(10.0)
    };
    routers[0].record(lease, &reported).unwrap();
    assert!(
        (ratio(&routers[1]) - 1.1).abs() < 1e-12,
        "{}",
        ratio(&routers[1])
    );
}

/// What either of two routers on one region measured, both report: a scrape
/// of any worker shows the host.
#[test]
fn routers_sharing_a_region_report_one_set_of_measures() {
    let file = RegionFile::new("measures");
    let config = Config::from_json(&chat_config()).unwrap();
    let clock = Clock::manual();
    let routers = file.routers(&config, &clock);
    for router in &routers {
        let lease = router.reserve("a", "", "", 0, 0).unwrap();
        router.record(lease, &ok()).unwrap();
        router
            .record_call("chat", "Chat", 0, 0.5, Extra::default())
            .unwrap();
    }
    for router in &routers {
        assert_eq!(router.measures()[0].latency.count(), 2);
        assert_eq!(router.call_measures()[0].statuses, [(0, 2)]);
    }
}
