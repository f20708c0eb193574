//! Whole calls and attempts' distributions, as the exporters and the admin API read them.

use super::*;
use crate::measures::Extra;

#[test]
fn attempts_are_measured_per_deployment_outcome_and_price() {
    let mut value: serde_json::Value = serde_json::from_str(&chat_config()).unwrap();
    value["deployments"][0]["input_price_per_mtok"] = json!(2.0);
    value["deployments"][0]["output_price_per_mtok"] = json!(10.0);
    let router = Router::new(&value.to_string()).unwrap();
    let streamed = Outcome {
        ttft_ms: Some(40.0),
        input_tokens: 1000,
        output_tokens: 100,
        ..Outcome::ok(250.0)
    };
    record_on(&router, "a", &streamed).unwrap();
    record_on(
        &router,
        "a",
        &Outcome::failed(OutcomeClass::Timeout, 30_000.0),
    )
    .unwrap();
    let measures = router.measures();
    let a = measures.iter().find(|m| m.deployment == "a").unwrap();
    assert_eq!(
        a.outcomes,
        [(OutcomeClass::Ok, 1), (OutcomeClass::Timeout, 1)]
    );
    assert!((a.cost_usd - 0.003).abs() < 1e-12, "{}", a.cost_usd);
    assert_eq!(a.latency.count(), 1, "only successes are in the latency");
    assert!((a.latency.sum - 0.25).abs() < 1e-9);
    assert!((a.first_token.sum - 0.04).abs() < 1e-9);
    assert_eq!(a.failed_latency.len(), 1);
    assert_eq!(a.failed_latency[0].0, OutcomeClass::Timeout);
    assert_eq!(a.input_tokens.sum, 1000.0);
    assert_eq!(a.output_tokens.sum, 100.0);
    let b = measures.iter().find(|m| m.deployment == "b").unwrap();
    assert!(b.outcomes.is_empty() && b.latency.count() == 0);
}

#[test]
fn calls_are_counted_per_group_method_and_status_and_unknown_groups_as_none() {
    let router = router();
    router
        .record_call("chat", "Chat", 0, 0.2, Extra::default())
        .unwrap();
    let extra = Extra {
        retries: 1,
        fallbacks: 2,
        hedges: 3,
    };
    router.record_call("chat", "Chat", 14, 1.0, extra).unwrap();
    router.record_call("chat", "Chat", 14, 0.0, extra).unwrap();
    router
        .record_call("chat", "ChatStream", 0, 3.0, Extra::default())
        .unwrap();
    router
        .record_call("no-such-model", "Chat", 5, 0.001, Extra::default())
        .unwrap();
    router
        .record_call("", "ListModels", 0, 0.001, Extra::default())
        .unwrap();
    let measures = router.call_measures();
    type Counted<'a> = (&'a str, &'a str, Vec<(u8, u64)>);
    let counted: Vec<Counted> = measures
        .iter()
        .map(|m| (m.model_group.as_str(), m.method, m.statuses.clone()))
        .collect();
    assert_eq!(
        counted,
        [
            ("chat", "Chat", vec![(0, 1), (14, 2)]),
            ("chat", "ChatStream", vec![(0, 1)]),
            ("", "Chat", vec![(5, 1)]),
            ("", "ListModels", vec![(0, 1)]),
        ]
    );
    assert_eq!(measures[0].duration.count(), 3);
    assert!((measures[0].duration.sum - 1.2).abs() < 1e-9);
    let extras = (
        measures[0].retries,
        measures[0].fallbacks,
        measures[0].hedges,
    );
    assert_eq!(extras, (2, 4, 6));
    assert_eq!(measures[1].hedges, 0);
}

#[test]
fn a_call_of_an_unknown_method_or_status_or_duration_is_refused() {
    let router = router();
    assert!(matches!(
        router.record_call("chat", "Nope", 0, 0.1, Extra::default()),
        Err(RouterError::UnknownMethod(_))
    ));
    assert_eq!(
        router.record_call("chat", "Chat", 17, 0.1, Extra::default()),
        Err(RouterError::UnknownStatus(17))
    );
    assert!(matches!(
        router.record_call("chat", "Chat", 0, f64::NAN, Extra::default()),
        Err(RouterError::InvalidLatency(_))
    ));
    assert!(router.call_measures().is_empty());
}

#[test]
fn a_reload_keeps_the_measures_of_groups_and_deployments_that_survive_it() {
    let router = router();
    router
        .record_call("chat", "Chat", 0, 0.1, Extra::default())
        .unwrap();
    router
        .record_call("elsewhere", "Chat", 5, 0.1, Extra::default())
        .unwrap();
    record_on(&router, "a", &ok()).unwrap();
    router.reload(&chat_config()).unwrap();
    let calls = router.call_measures();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].statuses, [(0, 1)]);
    assert_eq!(calls[1].statuses, [(5, 1)]);
    assert_eq!(router.measures()[0].latency.count(), 1);
}
