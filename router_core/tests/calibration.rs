//! Calibration of the input-token estimate through the router: successful
//! outcomes that report their input move a deployment's ratio, which then
//! scales the estimate in its context-window filter and its reservations.

use std::time::Duration;

use router_core::{
    Clock, Decision, Outcome, OutcomeClass, RouteRequest, Router, MAX_INPUT_TOKEN_RATIO,
    MIN_INPUT_TOKEN_RATIO,
};
use serde_json::{json, Value};

/// Priority group "g": "small" (an 8k window) first, then "large" (128k).
fn config(small_extra: Value) -> String {
    let mut small = json!({"id": "small", "region": "eu", "context_window": 8_000,
                           "input_price_per_mtok": 0.0, "output_price_per_mtok": 0.0});
    small
        .as_object_mut()
        .unwrap()
        .extend(small_extra.as_object().unwrap().clone());
    json!({
        "deployments": [
            small,
            {"id": "large", "region": "eu", "context_window": 128_000, "priority": 1,
             "input_price_per_mtok": 0.0, "output_price_per_mtok": 0.0},
        ],
        "model_groups": [{"name": "g", "strategy": "priority", "deployments": ["small", "large"]}],
    })
    .to_string()
}

fn request(input_tokens: u32, max_output_tokens: u32) -> RouteRequest<'static> {
    RouteRequest {
        input_tokens,
        max_output_tokens,
        ..RouteRequest::new("g")
    }
}

fn ratio(router: &Router, deployment: &str) -> f64 {
    router
        .stats()
        .into_iter()
        .find(|s| s.deployment == deployment)
        .unwrap()
        .input_token_ratio
}

fn ok_reporting(input_tokens: u32) -> Outcome {
    Outcome {
        input_tokens,
        output_tokens: 100,
        ..Outcome::ok(200.0)
    }
}

/// Routes `estimate` input tokens `times` times, each served by "small" and
/// reported as `reported` input tokens.
fn serve_on_small(router: &Router, times: usize, estimate: u32, reported: u32) {
    for _ in 0..times {
        let lease = router.route(&request(estimate, 0)).unwrap().lease.unwrap();
        assert_eq!(lease.deployment(), "small");
        router.record(lease, &ok_reporting(reported)).unwrap();
    }
}

fn ids(decision: &Decision) -> Vec<&str> {
    decision.candidates.iter().map(|c| &*c.deployment).collect()
}

#[test]
fn twice_the_estimate_filters_a_window_that_fits_only_the_raw_one() {
    let router = Router::new(&config(json!({}))).unwrap();
    // 5,000 input + 1,000 output fits the 8k window as estimated.
    let decision = router.route(&request(5_000, 1_000)).unwrap();
    assert_eq!(ids(&decision), ["small", "large"]);
    assert_eq!(decision.lease.unwrap().tokens(), 6_000);

    serve_on_small(&router, 40, 2_000, 4_000);
    let small = ratio(&router, "small");
    assert!((1.95..2.0).contains(&small), "{small}");
    assert_eq!(ratio(&router, "large"), 1.0);

    let decision = router.route(&request(5_000, 1_000)).unwrap();
    assert_eq!(ids(&decision), ["large"]);
    let input = (5_000.0 * small).round();
    let detail = format!(
        "needs {} tokens ({input} input, the estimate 5000 scaled by {small:.2} for this \
         deployment, + 1000 max output), context window is 8000",
        input + 1_000.0
    );
    let rejected = &decision.rejected[0];
    assert_eq!(
        (
            &*rejected.deployment,
            rejected.filter.as_str(),
            &rejected.detail
        ),
        ("small", "context_window", &detail)
    );
    // "large" is uncalibrated: it reserves the estimate as it is.
    assert_eq!(decision.lease.unwrap().tokens(), 6_000);
}

#[test]
fn reservations_grow_with_the_ratio() {
    // A budget that the raw estimate fits and the calibrated one does not.
    let limited = config(json!({"tpm": 6_000}));
    let clock = Clock::manual();
    let router = Router::with_clock(&limited, clock.clone()).unwrap();
    let explain = |input| RouteRequest {
        dry_run: true,
        ..request(input, 500)
    };
    assert!(router.route(&explain(3_000)).unwrap().rejected.is_empty());
    let lease = router.reserve("small", "", "", 2_000, 500).unwrap();
    assert_eq!(lease.tokens(), 2_500);
    router.release(lease);
    for _ in 0..40 {
        let lease = router.reserve("small", "", "", 1_000, 0).unwrap();
        router.record(lease, &ok_reporting(2_000)).unwrap();
        clock.advance(Duration::from_secs(60));
    }
    // A reload keeps what the deployment learned.
    router.reload(&limited).unwrap();
    let small = ratio(&router, "small");
    assert!((1.95..2.0).contains(&small), "{small}");

    let lease = router.reserve("small", "", "", 2_000, 500).unwrap();
    assert_eq!(lease.tokens(), (2_000.0 * small).round() as u32 + 500);
    assert_eq!(lease.estimated_input_tokens(), 2_000);
    router.release(lease);
    let decision = router.route(&explain(3_000)).unwrap();
    let needs = (3_000.0 * small).round() as u32 + 500;
    let detail =
        format!("needs {needs} tokens, more than the deployment tokens-per-minute limit of 6000");
    assert_eq!(decision.rejected[0].detail, detail);
}

#[test]
fn the_ratio_never_leaves_its_clamp() {
    let router = Router::new(&config(json!({}))).unwrap();
    // A thousand times the estimate counts as 4x; it only approaches the bound.
    for (reported, bound) in [
        (1_000_000, MAX_INPUT_TOKEN_RATIO),
        (1, MIN_INPUT_TOKEN_RATIO),
    ] {
        for _ in 0..200 {
            serve_on_small(&router, 1, 1_000, reported);
            let small = ratio(&router, "small");
            assert!((MIN_INPUT_TOKEN_RATIO..=MAX_INPUT_TOKEN_RATIO).contains(&small));
        }
        assert!((ratio(&router, "small") - bound).abs() < 1e-3);
    }
}

#[test]
fn only_successes_with_both_counts_calibrate() {
    let router = Router::new(&config(json!({}))).unwrap();
    let lease = router.route(&request(2_000, 0)).unwrap().lease.unwrap();
    let failed = Outcome {
        input_tokens: 4_000,
        ..Outcome::failed(OutcomeClass::ServerError, 10.0)
    };
    router.record(lease, &failed).unwrap();
    serve_on_small(&router, 1, 2_000, 0);
    // A fallback lease taken without an input estimate.
    let lease = router.reserve("small", "", "", 0, 2_500).unwrap();
    router.record(lease, &ok_reporting(4_000)).unwrap();
    assert_eq!(ratio(&router, "small"), 1.0);
}
