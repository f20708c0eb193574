//! Tenants' priorities on a deployment's rate-limit budget: lower ones leave
//! a reserve of it to the higher ones that are in use.

use super::*;
use crate::testing::chat_config;
use serde_json::json;

fn router(rate_limits: serde_json::Value) -> Router {
    let mut value: serde_json::Value = serde_json::from_str(&chat_config()).unwrap();
    value["deployments"][0]["rpm"] = json!(100);
    value["rate_limits"] = rate_limits;
    Router::with_clock(&value.to_string(), Clock::manual()).unwrap()
}

fn admitted(router: &Router, tenant: &str) -> usize {
    (0..200)
        .filter(|_| {
            router
                .reserve("a", tenant, "", 0, 0)
                .is_ok_and(|lease| router.record(lease, &ok()).is_ok())
        })
        .count()
}

#[test]
fn each_priority_leaves_a_reserve_for_every_one_above_it() {
    let router = router(json!({"tenant_priorities": {"vip": "high", "batch": "low"}}));
    assert_eq!(
        admitted(&router, "batch"),
        60,
        "low leaves two reserves of 20"
    );
    assert_eq!(admitted(&router, "anyone"), 20, "normal leaves one");
    assert_eq!(admitted(&router, "vip"), 20, "high takes the rest");
}

#[test]
fn without_a_higher_priority_in_use_nothing_is_kept() {
    let limits = json!({"tenant_priorities": {"batch": "low"}, "priority_reserve": 0.3});
    assert_eq!(
        admitted(&router(limits.clone()), "anyone"),
        100,
        "no tenant is high"
    );
    assert_eq!(
        admitted(&router(limits), "batch"),
        70,
        "normal is always in use"
    );
}

#[test]
fn route_explains_a_deployment_kept_for_higher_priorities() {
    let router = router(json!({"tenant_priorities": {"vip": "high"}}));
    assert_eq!(admitted(&router, ""), 80);
    let mut request = RouteRequest::new("chat");
    request.dry_run = true;
    let decision = router.route(&request).unwrap();
    assert!(
        decision
            .rejected
            .iter()
            .any(|r| r.deployment.as_ref() == "a"),
        "{decision:?}"
    );
    request.tenant = "vip";
    let decision = router.route(&request).unwrap();
    assert!(
        decision
            .candidates
            .iter()
            .any(|c| c.deployment.as_ref() == "a"),
        "{decision:?}"
    );
}

#[test]
fn a_reserve_beyond_the_bound_is_refused() {
    let mut value: serde_json::Value = serde_json::from_str(&chat_config()).unwrap();
    value["rate_limits"] = json!({"priority_reserve": 0.5});
    let error = Config::from_json(&value.to_string()).unwrap_err();
    assert!(
        error.to_string().contains("rate_limits.priority_reserve"),
        "{error}"
    );
}
