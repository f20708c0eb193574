//! Health and rate limits through the router: leases, settlement, circuit
//! breakers, cool-downs, outlier ejection, and exactness under concurrency.
//! Time is a manual clock, so every refill and cool-down is exact.

use std::time::Duration;

use router_core::{Clock, Decision, Outcome, OutcomeClass, RouteRequest, Router, RouterError};
use serde_json::{json, Value};

fn deployment(id: &str, extra: Value) -> Value {
    let mut value = json!({"id": id, "region": "eu", "context_window": 100_000,
                           "input_price_per_mtok": 0.0, "output_price_per_mtok": 0.0});
    value
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    value
}

/// Group `g` of `a` then `b` (priority), plus whatever `extra` adds at the top level.
fn router(a: Value, b: Value, extra: Value) -> (Router, Clock) {
    let mut config = json!({
        "default_group": "g",
        "deployments": [deployment("a", a), deployment("b", b)],
        "model_groups": [{"name": "g", "strategy": "priority", "deployments": ["a", "b"]}],
    });
    config["deployments"][1]["priority"] = json!(1);
    config
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let clock = Clock::manual();
    (
        Router::with_clock(&config.to_string(), clock.clone()).unwrap(),
        clock,
    )
}

fn ids(decision: &Decision) -> Vec<&str> {
    decision.candidates.iter().map(|c| &*c.deployment).collect()
}

fn rejections(decision: &Decision) -> Vec<(&str, &str, &str)> {
    decision
        .rejected
        .iter()
        .map(|r| (&*r.deployment, r.filter.as_str(), r.detail.as_str()))
        .collect()
}

/// The deployment a plain request to "g" leases (the lease is then dropped).
fn leased(router: &Router) -> String {
    let decision = router.route(&RouteRequest::new("g")).unwrap();
    decision.lease.unwrap().deployment().to_owned()
}

fn fail(router: &Router, decision: Decision, class: OutcomeClass) {
    router
        .record(decision.lease.unwrap(), &Outcome::failed(class, 5.0))
        .unwrap();
}

#[test]
fn a_decision_leases_its_first_candidate_and_record_settles_it() {
    let (router, _) = router(json!({"tpm": 1000}), json!({}), json!({}));
    let request = RouteRequest {
        input_tokens: 300,
        max_output_tokens: 500,
        ..RouteRequest::new("g")
    };
    let decision = router.route(&request).unwrap();
    let lease = decision.lease.unwrap();
    assert_eq!((lease.deployment(), lease.tokens()), ("a", 800));
    assert_eq!(router.stats()[0].in_flight, 1);
    // 800 of a's 1000 tokens are held, so the next 800-token request goes to b.
    let second = router.route(&request).unwrap();
    assert_eq!(second.lease.as_ref().unwrap().deployment(), "b");
    assert_eq!(
        rejections(&second),
        [(
            "a",
            "rate_limit",
            "deployment tokens-per-minute budget exhausted"
        )]
    );
    // The first attempt used only 350 tokens: settling returns 450 of the 800.
    let used = Outcome {
        input_tokens: 300,
        output_tokens: 50,
        ..Outcome::ok(20.0)
    };
    router.record(lease, &used).unwrap();
    router.release(second.lease.unwrap());
    // a has 650 tokens now: 600 fit, 800 would not.
    let smaller = RouteRequest {
        max_output_tokens: 300,
        ..request.clone()
    };
    let third = router.route(&smaller).unwrap().lease.unwrap();
    assert_eq!(third.deployment(), "a");
    let stats = router.stats();
    assert_eq!((stats[0].in_flight, stats[1].in_flight), (1, 0));
}

#[test]
fn a_lease_dropped_unrecorded_gives_back_its_budget_and_slot() {
    let (budgeted, _) = router(json!({"tpm": 10_000, "rpm": 2}), json!({}), json!({}));
    let request = RouteRequest {
        input_tokens: 300,
        max_output_tokens: 500,
        ..RouteRequest::new("g")
    };
    for _ in 0..5 {
        // Never recorded nor released: each lease gives itself back as the decision drops.
        let decision = budgeted.route(&request).unwrap();
        assert_eq!(decision.lease.as_ref().unwrap().deployment(), "a");
        assert_eq!(budgeted.stats()[0].in_flight, 1);
    }
    assert_eq!(budgeted.stats()[0].in_flight, 0);
    let held = budgeted.route(&request).unwrap();
    assert_eq!(held.lease.as_ref().unwrap().tokens(), 800);

    // A recorded lease keeps its request when it drops: a has one of its 2 rpm left.
    budgeted
        .record(held.lease.unwrap(), &Outcome::ok(5.0))
        .unwrap();
    let stats = budgeted.stats();
    assert_eq!((stats[0].requests, stats[0].in_flight), (1, 0));
    let last = budgeted.route(&request).unwrap();
    assert_eq!(ids(&last)[0], "a");
    let over = budgeted.route(&request).unwrap();
    assert_eq!(
        rejections(&over),
        [(
            "a",
            "rate_limit",
            "deployment requests-per-minute budget exhausted"
        )]
    );
}

#[test]
fn dry_runs_take_nothing() {
    let (router, _) = router(json!({"rpm": 1}), json!({}), json!({}));
    for _ in 0..3 {
        let decision = router
            .route(&RouteRequest {
                dry_run: true,
                ..RouteRequest::new("g")
            })
            .unwrap();
        assert!(decision.lease.is_none());
        assert_eq!(ids(&decision), ["a", "b"]);
    }
    assert_eq!(router.stats()[0].in_flight, 0);
}

#[test]
fn out_of_budget_everywhere_says_when_to_retry() {
    let (router, clock) = router(json!({"rpm": 2}), json!({"rpm": 1}), json!({}));
    for _ in 0..3 {
        let lease = router.route(&RouteRequest::new("g")).unwrap().lease;
        router.record(lease.unwrap(), &Outcome::ok(1.0)).unwrap();
    }
    let exhausted = router.route(&RouteRequest::new("g")).unwrap();
    assert!(exhausted.candidates.is_empty() && exhausted.lease.is_none());
    let detail = "deployment requests-per-minute budget exhausted";
    assert_eq!(
        rejections(&exhausted),
        [("a", "rate_limit", detail), ("b", "rate_limit", detail)]
    );
    // a refills one request every 30 s, b one every 60 s: a is back first.
    assert_eq!(exhausted.retry_after, Some(Duration::from_secs(30)));
    clock.advance(Duration::from_secs(30));
    assert_eq!(leased(&router), "a");
}

#[test]
fn a_tenant_out_of_budget_is_refused_everywhere_with_retry_time() {
    let limits = json!({"rate_limits": {"tenants": {"acme": {"tpm": 1000}}}});
    let (router, clock) = router(json!({}), json!({}), limits);
    let request = RouteRequest {
        tenant: "acme",
        input_tokens: 600,
        ..RouteRequest::new("g")
    };
    let first = router.route(&request).unwrap();
    assert!(first.lease.is_some());
    let second = router.route(&request).unwrap();
    assert!(second.candidates.is_empty());
    let detail = "tenant \"acme\" tokens-per-minute budget exhausted";
    assert_eq!(
        rejections(&second),
        [("a", "rate_limit", detail), ("b", "rate_limit", detail)]
    );
    // 200 tokens more are needed, at 1000 a minute: 12 s.
    assert_eq!(second.retry_after, Some(Duration::from_secs(12)));
    // Other tenants are not limited.
    assert!(router
        .route(&RouteRequest {
            tenant: "other",
            ..request.clone()
        })
        .unwrap()
        .lease
        .is_some());
    clock.advance(Duration::from_secs(12));
    assert!(router.route(&request).unwrap().lease.is_some());
}

#[test]
fn a_request_larger_than_a_limit_can_never_fit() {
    let limits = json!({"rate_limits": {"api_keys": {"k1": {"tpm": 100}}}});
    let (router, _) = router(json!({}), json!({}), limits);
    let decision = router
        .route(&RouteRequest {
            api_key: "k1",
            input_tokens: 500,
            ..RouteRequest::new("g")
        })
        .unwrap();
    assert_eq!(decision.retry_after, None);
    assert_eq!(
        decision.rejected[0].detail,
        "needs 500 tokens, more than the API key \"k1\" tokens-per-minute limit of 100"
    );
}

#[test]
fn consecutive_failures_open_the_circuit_and_one_probe_closes_it() {
    let (router, clock) = router(json!({}), json!({}), json!({}));
    for _ in 0..5 {
        fail(
            &router,
            router.route(&RouteRequest::new("g")).unwrap(),
            OutcomeClass::ServerError,
        );
    }
    let open = router.route(&RouteRequest::new("g")).unwrap();
    assert_eq!(ids(&open), ["b"]);
    assert_eq!(
        rejections(&open),
        [("a", "health", "circuit open for another 5.0 s")]
    );
    router.release(open.lease.unwrap());
    // A fallback lease on it is refused as out of rotation: no rate limit, no wait to offer.
    assert!(matches!(
        router.reserve("a", "", "", 0, 0),
        Err(RouterError::Unavailable {
            retry_after: None,
            rate_limited: false,
            ..
        })
    ));

    clock.advance(Duration::from_secs(5));
    let probe = router.route(&RouteRequest::new("g")).unwrap();
    let lease = probe.lease.unwrap();
    assert!(lease.is_probe() && lease.deployment() == "a");
    // While the probe is out, nobody else is sent to a.
    let meanwhile = router.route(&RouteRequest::new("g")).unwrap();
    assert_eq!(meanwhile.lease.as_ref().unwrap().deployment(), "b");
    router.record(lease, &Outcome::ok(10.0)).unwrap();
    let closed = router.route(&RouteRequest::new("g")).unwrap();
    assert_eq!(closed.lease.unwrap().deployment(), "a");
}

#[test]
fn an_abandoned_probe_frees_the_slot_at_once() {
    let (router, clock) = router(json!({}), json!({}), json!({}));
    for _ in 0..5 {
        fail(
            &router,
            router.route(&RouteRequest::new("g")).unwrap(),
            OutcomeClass::Timeout,
        );
    }
    clock.advance(Duration::from_secs(5));
    let probe = router
        .route(&RouteRequest::new("g"))
        .unwrap()
        .lease
        .unwrap();
    assert!(probe.is_probe());
    drop(probe); // unrecorded: the lease gives the probe back by itself
    assert!(router
        .route(&RouteRequest::new("g"))
        .unwrap()
        .lease
        .unwrap()
        .is_probe());
}

#[test]
fn rate_limited_deployments_cool_down_for_retry_after_never_less() {
    let (router, clock) = router(json!({}), json!({}), json!({}));
    let limited = |seconds| Outcome {
        retry_after: Some(Duration::from_secs(seconds)),
        ..Outcome::failed(OutcomeClass::RateLimited, 3.0)
    };
    let lease = router
        .route(&RouteRequest::new("g"))
        .unwrap()
        .lease
        .unwrap();
    router.record(lease, &limited(7)).unwrap();
    // A shorter Retry-After later does not shorten the pause.
    let lease = router.reserve("a", "", "", 0, 0);
    assert!(
        matches!(lease, Err(RouterError::Unavailable { retry_after: Some(d), rate_limited: true, .. }) if d == Duration::from_secs(7))
    );
    clock.advance(Duration::from_secs(6));
    let cooling = router.route(&RouteRequest::new("g")).unwrap();
    assert_eq!(rejections(&cooling)[0].1, "health");
    assert!(
        rejections(&cooling)[0].2.contains("rate limited"),
        "{:?}",
        rejections(&cooling)
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(leased(&router), "a");
}

#[test]
fn the_request_s_own_faults_do_not_trip_the_breaker() {
    let (router, _) = router(json!({}), json!({}), json!({}));
    for _ in 0..10 {
        fail(
            &router,
            router.route(&RouteRequest::new("g")).unwrap(),
            OutcomeClass::BadRequest,
        );
    }
    assert_eq!(leased(&router), "a");
}

#[test]
fn a_latency_outlier_is_ejected() {
    let ids: Vec<String> = (0..4).map(|i| format!("d{i}")).collect();
    let config = json!({
        "deployments": ids.iter().map(|id| deployment(id, json!({}))).collect::<Vec<_>>(),
        "model_groups": [{"name": "g", "deployments": ids}],
    });
    let clock = Clock::manual();
    let router = Router::with_clock(&config.to_string(), clock.clone()).unwrap();
    for round in 0..30 {
        for (i, id) in ids.iter().enumerate() {
            let latency = if i == 3 {
                2_000.0
            } else {
                100.0 + f64::from(round % 3)
            };
            // Once ejected, d3 takes no leases: that is what is being tested.
            if let Ok(lease) = router.reserve(id, "", "", 0, 0) {
                router.record(lease, &Outcome::ok(latency)).unwrap();
            }
        }
        clock.advance(Duration::from_millis(1100));
    }
    let decision = router
        .route(&RouteRequest {
            dry_run: true,
            ..RouteRequest::new("g")
        })
        .unwrap();
    assert_eq!(decision.candidates.len(), 3);
    let (id, filter, detail) = rejections(&decision)[0];
    assert_eq!((id, filter), ("d3", "health"));
    assert!(detail.contains("ejected"), "{detail}");
}

#[test]
fn reload_keeps_budgets_and_health() {
    let (router, _) = router(json!({"rpm": 6}), json!({}), json!({}));
    for _ in 0..5 {
        fail(
            &router,
            router.route(&RouteRequest::new("g")).unwrap(),
            OutcomeClass::ConnectionError,
        );
    }
    let config = json!({
        "deployments": [deployment("a", json!({"rpm": 6})), deployment("b", json!({"priority": 1}))],
        "model_groups": [{"name": "g", "strategy": "priority", "deployments": ["a", "b"]}],
    });
    router.reload(&config.to_string()).unwrap();
    let decision = router.route(&RouteRequest::new("g")).unwrap();
    assert_eq!(ids(&decision), ["b"]);
    assert_eq!(decision.rejected[0].filter.as_str(), "health");
    let stats = router.stats();
    assert_eq!(stats[0].requests, 5);
    assert!(
        (stats[0].headroom - 1.0 / 6.0).abs() < 1e-9,
        "{}",
        stats[0].headroom
    );
}

#[test]
fn concurrent_routing_never_admits_more_than_the_budget() {
    let limits = json!({"rate_limits": {"tenants": {"t": {"rpm": 50}}}});
    let (router, _) = router(json!({"rpm": 30}), json!({"rpm": 30}), limits);
    let admitted = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                for _ in 0..40 {
                    let decision = router
                        .route(&RouteRequest {
                            tenant: "t",
                            ..RouteRequest::new("g")
                        })
                        .unwrap();
                    if let Some(lease) = decision.lease {
                        admitted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        router.record(lease, &Outcome::ok(1.0)).unwrap();
                    }
                }
            });
        }
    });
    // The clock is frozen: exactly the tenant's 50 requests get through, split over a and b.
    assert_eq!(admitted.into_inner(), 50);
    let stats = router.stats();
    assert_eq!(stats[0].requests + stats[1].requests, 50);
    assert!(stats[0].requests <= 30 && stats[1].requests <= 30);
}
