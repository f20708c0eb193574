//! The façade end to end: routing, recording, reloading, and all three at
//! once from several threads.

use super::*;
use crate::error::ConfigError;
use crate::strategy::Strategy;
use crate::testing::{chat_config, config, deployment, group};
use serde_json::json;

fn router() -> Router {
    Router::new(&chat_config()).unwrap()
}

fn ok() -> Outcome {
    Outcome {
        input_tokens: 3,
        output_tokens: 4,
        ..Outcome::ok(10.0)
    }
}

/// Records `outcome` on a fresh lease of `deployment`.
fn record_on(router: &Router, deployment: &str, outcome: &Outcome) -> Result<f64, RouterError> {
    let lease = router.reserve(deployment, "", "", 0, 0)?;
    router.record(lease, outcome)
}

/// The decision's order and explanation, which equal seeds must reproduce.
fn explained(decision: &Decision) -> (Vec<Candidate>, Vec<Rejection>) {
    (decision.candidates.clone(), decision.rejected.clone())
}

#[test]
fn router_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Router>();
}

#[test]
fn decision_lists_candidates_and_explains_rejections() {
    let request = RouteRequest {
        capabilities: &["vision"],
        seed: Some(1),
        ..RouteRequest::new("chat")
    };
    let decision = router().route(&request).unwrap();
    assert_eq!(
        (&*decision.model_group, decision.strategy),
        ("chat", Strategy::Weighted)
    );
    let mut ids: Vec<&str> = decision.candidates.iter().map(|c| &*c.deployment).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["c", "d"]);
    let rejected: Vec<(&str, Filter)> = decision
        .rejected
        .iter()
        .map(|r| (&*r.deployment, r.filter))
        .collect();
    assert_eq!(
        rejected,
        [("a", Filter::Capabilities), ("b", Filter::Capabilities)]
    );
}

#[test]
fn all_rejected_gives_empty_candidates() {
    let request = RouteRequest {
        regions: &["mars"],
        ..RouteRequest::new("chat")
    };
    let decision = router().route(&request).unwrap();
    assert!(decision.candidates.is_empty());
    assert_eq!(decision.rejected.len(), 4);
}

#[test]
fn same_seed_same_decision() {
    let router = router();
    let request = RouteRequest {
        seed: Some(99),
        ..RouteRequest::new("chat")
    };
    assert_eq!(
        explained(&router.route(&request).unwrap()),
        explained(&router.route(&request).unwrap())
    );
}

#[test]
fn auto_selects_the_default_group() {
    let decision = router().route(&RouteRequest::new("auto")).unwrap();
    assert_eq!(&*decision.model_group, "chat");
}

#[test]
fn unknown_group_lists_known_groups_sorted() {
    let json = config(
        vec![deployment("x", "eu", 10, &[])],
        vec![
            group("zeta", "weighted", &["x"]),
            group("alpha", "priority", &["x"]),
        ],
    );
    let router = Router::new(&json).unwrap();
    let known = vec!["alpha".to_string(), "zeta".to_string()];
    for model in ["gpt-9", "auto"] {
        let err = router.route(&RouteRequest::new(model)).unwrap_err();
        let expected = RouterError::UnknownModelGroup {
            name: model.into(),
            known: known.clone(),
        };
        assert_eq!(err, expected);
    }
    let message = |model| {
        router
            .route(&RouteRequest::new(model))
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        message("gpt-9"),
        "unknown model group \"gpt-9\" (known: alpha, zeta)"
    );
    let auto = "model \"auto\" needs a default_group, and none is configured (known: alpha, zeta)";
    assert_eq!(message("auto"), auto);
}

#[test]
fn record_updates_stats_and_rejects_bad_input() {
    let router = router();
    record_on(&router, "b", &ok()).unwrap();
    let stats = router.stats();
    assert_eq!(
        stats
            .iter()
            .map(|s| s.deployment.as_str())
            .collect::<Vec<_>>(),
        ["a", "b", "c", "d"]
    );
    assert_eq!(
        (
            stats[1].requests,
            stats[1].health.ewma_latency_ms,
            stats[1].output_tokens,
            stats[1].in_flight,
        ),
        (1, Some(10.0), 4, 0)
    );
    assert_eq!(stats[0].requests, 0);
    assert_eq!(
        record_on(&router, "zz", &ok()),
        Err(RouterError::UnknownDeployment("zz".into()))
    );
    let nan = Outcome {
        latency_ms: f64::NAN,
        ..ok()
    };
    assert!(matches!(
        record_on(&router, "b", &nan),
        Err(RouterError::InvalidLatency(_))
    ));
    let stats = router.stats();
    assert_eq!(
        (stats[1].requests, stats[1].in_flight),
        (1, 0),
        "a rejected record releases its lease"
    );
}

#[test]
fn reload_keeps_stats_of_surviving_deployments() {
    let router = router();
    record_on(&router, "a", &ok()).unwrap();
    record_on(&router, "b", &ok()).unwrap();
    let json = config(
        vec![
            deployment("b", "us", 10, &[]),
            deployment("e", "us", 10, &[]),
        ],
        vec![group("small", "priority", &["e", "b"])],
    );
    router.reload(&json).unwrap();
    let requests: Vec<(String, u64)> = router
        .stats()
        .into_iter()
        .map(|s| (s.deployment, s.requests))
        .collect();
    assert_eq!(requests, [("b".to_string(), 1), ("e".to_string(), 0)]);
    assert_eq!(router.default_group(), None);
    assert_eq!(
        router.model_groups(),
        [("small".to_string(), vec!["e".to_string(), "b".to_string()])]
    );
}

#[test]
fn failed_reload_keeps_the_old_table() {
    let router = router();
    let err = router
        .reload(r#"{"deployments": [], "model_groups": [], "extra": 1}"#)
        .unwrap_err();
    assert!(
        matches!(err, RouterError::Config(ConfigError::Schema { .. })),
        "{err}"
    );
    assert_eq!(router.default_group().as_deref(), Some("chat"));
    assert!(router.route(&RouteRequest::new("chat")).is_ok());
}

#[test]
fn concurrent_route_record_and_reload() {
    let router = router();
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                for _ in 0..500 {
                    let decision = router.route(&RouteRequest::new("auto")).unwrap();
                    router.record(decision.lease.unwrap(), &ok()).unwrap();
                }
            });
        }
        scope.spawn(|| {
            for _ in 0..20 {
                router.reload(&chat_config()).unwrap();
            }
        });
    });
    assert_eq!(router.stats().iter().map(|s| s.requests).sum::<u64>(), 2000);
}

#[test]
fn record_returns_what_the_answer_cost_at_the_prices_it_was_leased_at() {
    let priced = |input: f64| {
        let mut d = deployment("a", "eu", 1_000, &[]);
        d["input_price_per_mtok"] = json!(input);
        d["output_price_per_mtok"] = json!(10.0);
        config(vec![d], vec![group("g", "weighted", &["a"])])
    };
    let router = Router::new(&priced(2.0)).unwrap();
    let lease = router.reserve("a", "", "", 0, 0).unwrap();
    router.reload(&priced(4.0)).unwrap();
    let used = Outcome {
        input_tokens: 500_000,
        output_tokens: 100_000,
        ..Outcome::ok(1.0)
    };
    assert_eq!(router.record(lease, &used), Ok(1.0 + 1.0));
    let lease = router.reserve("a", "", "", 0, 0).unwrap();
    assert_eq!(router.record(lease, &used), Ok(2.0 + 1.0));
}

#[test]
fn a_callers_preference_orders_the_candidates_instead_of_the_plan() {
    let priced = |id: &str, input: f64| {
        let mut d = deployment(id, "eu", 1_000, &[]);
        d["input_price_per_mtok"] = json!(input);
        d
    };
    let router = Router::new(&config(
        vec![
            priced("dear", 9.0),
            priced("cheap", 1.0),
            priced("mid", 5.0),
        ],
        vec![group("g", "priority", &["dear", "cheap", "mid"])],
    ))
    .unwrap();
    let request = RouteRequest {
        input_tokens: 100,
        preference: Some(Preference::Cost),
        seed: Some(3),
        dry_run: true,
        ..RouteRequest::new("g")
    };
    let decision = router.route(&request).unwrap();
    let order: Vec<&str> = decision.candidates.iter().map(|c| &*c.deployment).collect();
    assert_eq!(
        (decision.strategy, order),
        (Strategy::LowestCost, vec!["cheap", "mid", "dear"])
    );
    let plain = router
        .route(&RouteRequest {
            preference: None,
            ..request
        })
        .unwrap();
    assert_eq!(plain.strategy, Strategy::Priority);
}

mod drawing;
mod evaluation;
mod measures;
mod priorities;
mod sharing;

#[test]
fn a_drained_deployment_gets_no_attempt_until_it_is_put_back() {
    let router = router();
    router.set_drained("c", true).unwrap();
    let request = RouteRequest {
        seed: Some(1),
        ..RouteRequest::new("chat")
    };
    let decision = router.route(&request).unwrap();
    assert!(decision.candidates.iter().all(|c| &*c.deployment != "c"));
    let rejection = decision
        .rejected
        .iter()
        .find(|r| &*r.deployment == "c")
        .unwrap();
    assert_eq!(
        (rejection.filter, rejection.detail.as_str()),
        (Filter::Health, "drained by an operator")
    );
    assert!(
        router.reserve("c", "", "", 0, 0).is_err(),
        "nor as a fallback"
    );
    let stats = router.stats();
    let c = stats.iter().find(|s| s.deployment == "c").unwrap();
    assert_eq!(c.unavailable, Some(("drained", Duration::ZERO)));
    router.reload(&chat_config()).unwrap();
    assert!(
        router.reserve("c", "", "", 0, 0).is_err(),
        "a reload keeps it drained"
    );
    router.set_drained("c", false).unwrap();
    assert!(router.reserve("c", "", "", 0, 0).is_ok());
    assert!(matches!(
        router.set_drained("nowhere", true),
        Err(RouterError::UnknownDeployment(_))
    ));
}
