"""The router_core extension as Python sees it: errors, decisions, stats, reload and threads."""

from __future__ import annotations

import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import router_core
from router_core import ConfigError, Router, RouterError, UnknownDeploymentError, UnknownModelGroupError


def deployment(id: str, region: str = "eu", context_window: int = 128_000, **extra: Any) -> dict[str, Any]:
    return {
        "id": id,
        "region": region,
        "context_window": context_window,
        "capabilities": ["streaming"],
        "input_price_per_mtok": 1.0,
        "output_price_per_mtok": 2.0,
        **extra,
    }


def config(**overrides: Any) -> dict[str, Any]:
    """Group "chat" (weighted, the default) over a, b, c; group "tiered" (priority) over c, a."""
    base: dict[str, Any] = {
        "default_group": "chat",
        "deployments": [
            deployment("a", context_window=8_000, capabilities=["streaming", "tools"]),
            deployment("b", region="us"),
            deployment("c", weight=3.0, priority=1),
        ],
        "model_groups": [
            {"name": "chat", "strategy": "weighted", "deployments": ["a", "b", "c"]},
            {"name": "tiered", "strategy": "priority", "deployments": ["c", "a"]},
        ],
    }
    return base | overrides


@pytest.fixture
def router() -> Router:
    return Router(json.dumps(config()))


def requests_by_deployment(router: Router) -> dict[str, int]:
    return {s.deployment: s.requests for s in router.stats()}


@pytest.mark.parametrize(
    ("document", "key"),
    [
        ("{", "config: EOF while parsing"),
        (json.dumps(config(extra=1)), "extra: unknown field `extra`"),
        (
            json.dumps(config(deployments=[deployment("a", model_group="chat")])),
            "deployments[0].model_group: unknown field `model_group`",
        ),
        (json.dumps(config(deployments=[deployment("a", weight=0)])), "deployments[0].weight: must be"),
        (json.dumps(config(default_group="nope")), 'default_group: unknown model group "nope"'),
        (
            json.dumps(config(model_groups=[{"name": "chat", "deployments": ["x"]}])),
            'model_groups[0].deployments[0]: unknown deployment "x"',
        ),
    ],
)
def test_invalid_config_raises_config_error_naming_the_key(document: str, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Router(document)
    assert str(caught.value).startswith(key)
    assert isinstance(caught.value, RouterError)
    assert isinstance(caught.value, ValueError)


def test_route_orders_candidates_and_explains_rejections(router: Router) -> None:
    decision = router.route("chat", input_tokens=7_000, max_output_tokens=2_000, regions=["eu"], seed=7)
    assert decision.model_group == "chat"
    assert decision.strategy == "weighted"
    assert [c.deployment for c in decision.candidates] == ["c"]
    assert 0 < decision.candidates[0].score <= 1
    rejected = {r.deployment: (r.filter, r.detail) for r in decision.rejected}
    assert rejected == {
        "a": ("context_window", "needs 9000 tokens (7000 input + 2000 max output), context window is 8000"),
        "b": ("region", 'region "us" is not in allowed regions [eu]'),
    }
    assert "Candidate(deployment=" in repr(decision)


def test_capabilities_filter_and_unknown_names_match_nothing(router: Router) -> None:
    assert [c.deployment for c in router.route("chat", capabilities=("tools",)).candidates] == ["a"]
    decision = router.route("chat", capabilities=["telepathy"])
    assert not decision.candidates and len(decision.candidates) == 0 and tuple(decision.candidates) == ()
    assert {r.filter for r in decision.rejected} == {"capabilities"}


def test_candidates_are_drawn_as_they_are_asked_for(router: Router) -> None:
    decision = router.route("auto", seed=3)
    candidates = decision.candidates
    assert len(candidates.drawn) == 1 and decision.lease is not None
    assert decision.lease.deployment == candidates[0].deployment
    assert len(decision.drawn[0]) == 1, "reading the first drew no more"
    second = candidates[1]
    assert [c.deployment for c in candidates.drawn] == [candidates[0].deployment, second.deployment]
    everything = [c.deployment for c in candidates]
    assert len(candidates) == len(everything) == 3 and len(set(everything)) == 3
    assert [c.deployment for c in candidates[1:]] == everything[1:]
    assert candidates[-1].deployment == everything[-1]
    with pytest.raises(IndexError):
        candidates[3]
    with pytest.raises(IndexError):
        candidates[-4]
    router.release(decision.lease)


def test_rejections_are_complete_once_read(router: Router) -> None:
    decision = router.route("chat", regions=["eu"], seed=11)
    first = decision.candidates[0].deployment
    assert first in {"a", "c"}
    assert len(decision.drawn[0]) == 1
    assert [r.deployment for r in decision.rejected] == ["b"], "every rejection, once read"
    assert {c.deployment for c in decision.candidates} == {"a", "c"}
    assert decision.lease is not None
    router.release(decision.lease)


def test_priority_group_scores_by_tier(router: Router) -> None:
    decision = router.route("tiered")
    assert decision.strategy == "priority"
    assert [(c.deployment, c.score) for c in decision.candidates] == [("a", 1.0), ("c", 0.5)]


def test_seed_makes_routing_deterministic(router: Router) -> None:
    def order(seed: int) -> list[str]:
        return [c.deployment for c in router.route("auto", seed=seed).candidates]

    assert all(order(s) == order(s) for s in range(20))
    firsts = Counter(order(seed)[0] for seed in range(2_000))
    # Weights 1, 1, 3: "c" leads about 60% of the time.
    assert 0.5 < firsts["c"] / 2_000 < 0.7


def test_unknown_model_group_carries_the_known_groups(router: Router) -> None:
    with pytest.raises(UnknownModelGroupError) as caught:
        router.route("gpt-9")
    assert caught.value.name == "gpt-9"
    assert caught.value.known == ["chat", "tiered"]
    assert str(caught.value) == 'unknown model group "gpt-9" (known: chat, tiered)'
    assert isinstance(caught.value, RouterError)


def test_auto_without_default_group_is_an_unknown_group() -> None:
    router = Router(json.dumps(config(default_group=None)))
    assert router.default_group is None
    with pytest.raises(UnknownModelGroupError, match="needs a default_group"):
        router.route("auto")


def record(router: Router, deployment: str, outcome: str = "ok", latency_ms: float = 5.0, **usage: int) -> None:
    router.record(router.reserve(deployment), outcome=outcome, latency_ms=latency_ms, **usage)


def test_record_and_stats(router: Router) -> None:
    assert [s.ewma_latency_ms for s in router.stats()] == [None, None, None]
    record(router, "b", latency_ms=100.0, input_tokens=10, output_tokens=20)
    record(router, "b", "server_error", latency_ms=200.0)
    b = next(s for s in router.stats() if s.deployment == "b")
    assert (b.requests, b.failures, b.consecutive_failures, b.in_flight) == (2, 1, 1, 0)
    assert b.ewma_latency_ms == pytest.approx(100.0), "only successes feed the latency estimate"
    assert (b.input_tokens, b.output_tokens) == (10, 20)
    assert (b.state, b.unavailable_reason, b.headroom) == ("closed", None, 1.0)
    with pytest.raises(UnknownDeploymentError) as caught:
        router.reserve("zz")
    assert caught.value.deployment == "zz"
    with pytest.raises(ValueError, match="latencies must be finite"):
        record(router, "b", latency_ms=float("nan"))
    with pytest.raises(ValueError, match="unknown outcome class"):
        record(router, "b", "meh")


def test_a_lease_settles_once(router: Router) -> None:
    lease = router.reserve("a", tokens=10)
    assert (lease.deployment, lease.tokens, lease.active, lease.is_probe) == ("a", 10, True, False)
    assert next(s.in_flight for s in router.stats() if s.deployment == "a") == 1
    router.record(lease, outcome="ok", latency_ms=1.0)
    assert not lease.active
    with pytest.raises(ValueError, match="already recorded or released"):
        router.record(lease, outcome="ok", latency_ms=1.0)
    router.release(lease)  # a no-op now
    assert next(s.in_flight for s in router.stats() if s.deployment == "a") == 0


def test_a_lease_collected_unsettled_gives_itself_back() -> None:
    limited = config(deployments=[deployment("a", rpm=1), deployment("b"), deployment("c", priority=1)])
    router = Router(json.dumps(limited), manual_clock=True)

    def in_flight() -> int:
        return next(s.in_flight for s in router.stats() if s.deployment == "a")

    for _ in range(3):  # with a 1 rpm budget, only a lease that came back lets the next one in
        decision = router.route("tiered", input_tokens=10)
        assert decision.lease is not None and decision.lease.deployment == "a"
        assert in_flight() == 1
        del decision
        assert in_flight() == 0
    lease = router.reserve("a", tokens=10)
    del lease
    assert in_flight() == 0
    assert router.stats()[0].headroom == 1.0


def test_reported_input_calibrates_the_window_filter_and_the_reservation(router: Router) -> None:
    """After successes reporting twice the estimate, deployment a (an 8k window) counts 2x:
    5,000 estimated input tokens plus 1,000 output no longer fit it, and its leases reserve more."""
    assert {s.deployment: s.input_token_ratio for s in router.stats()} == {"a": 1.0, "b": 1.0, "c": 1.0}
    assert not router.route("tiered", input_tokens=5_000, max_output_tokens=1_000).rejected
    for _ in range(40):
        lease = router.reserve("a", tokens=2_000, input_tokens=2_000)
        router.record(lease, outcome="ok", latency_ms=10.0, input_tokens=4_000, output_tokens=10)
    ratio = {s.deployment: s.input_token_ratio for s in router.stats()}
    assert 1.95 < ratio["a"] < 2.0 and ratio["c"] == 1.0
    assert "input_token_ratio=1.9" in repr(router.stats()[0])

    decision = router.route("tiered", input_tokens=5_000, max_output_tokens=1_000)
    assert [c.deployment for c in decision.candidates] == ["c"]
    [rejection] = decision.rejected
    calibrated = round(5_000 * ratio["a"])
    assert (rejection.deployment, rejection.filter) == ("a", "context_window")
    assert rejection.detail == (
        f"needs {calibrated + 1_000} tokens ({calibrated} input, the estimate 5000 scaled by {ratio['a']:.2f} "
        "for this deployment, + 1000 max output), context window is 8000"
    )
    lease = router.reserve("a", tokens=2_500, input_tokens=2_000)
    assert lease.tokens == round(2_000 * ratio["a"]) + 500
    router.release(lease)
    assert router.reserve("a", tokens=2_500).tokens == 2_500, "without input_tokens nothing is calibrated"


def test_budgets_leases_and_cool_downs_with_a_manual_clock() -> None:
    limited = config(deployments=[deployment("a", rpm=5), deployment("b"), deployment("c", priority=1)])
    router = Router(json.dumps(limited), manual_clock=True)
    first = router.route("tiered")
    assert first.lease is not None and first.lease.deployment == "a"
    router.record(first.lease, outcome="rate_limited", latency_ms=3.0, retry_after_s=20.0)
    second = router.route("tiered")
    assert [(r.deployment, r.filter) for r in second.rejected] == [("a", "health")]
    assert second.lease is not None and second.lease.deployment == "c"
    router.release(second.lease)
    with pytest.raises(router_core.DeploymentUnavailableError) as caught:
        router.reserve("a")
    assert caught.value.retry_after_s == pytest.approx(20.0)
    router.advance_clock(20.0)
    third = router.route("tiered")
    assert third.lease is not None and third.lease.deployment == "a"
    with pytest.raises(ValueError, match="manual_clock=True"):
        Router(json.dumps(config())).advance_clock(1.0)


def test_reload_keeps_stats_of_surviving_deployments(router: Router) -> None:
    record(router, "a")
    record(router, "b")
    new = config(
        default_group=None,
        deployments=[deployment("b"), deployment("d")],
        model_groups=[{"name": "solo", "deployments": ["d", "b"]}],
    )
    router.reload(json.dumps(new))
    assert requests_by_deployment(router) == {"b": 1, "d": 0}
    assert router.model_groups() == {"solo": ["d", "b"]}
    assert router.default_group is None


def test_failed_reload_keeps_the_old_config(router: Router) -> None:
    with pytest.raises(ConfigError):
        router.reload("[]")
    assert router.model_groups() == {"chat": ["a", "b", "c"], "tiered": ["a", "c"]}
    assert router.default_group == "chat"


@pytest.mark.parametrize("attribute", ["model_group", "candidates"])
def test_decisions_are_frozen(router: Router, attribute: str) -> None:
    decision = router.route("chat")
    with pytest.raises(AttributeError):
        setattr(decision, attribute, None)


def test_classes_are_frozen(router: Router) -> None:
    candidate = router.route("chat").candidates[0]
    stats = router.stats()[0]
    for obj, attribute in [(router, "default_group"), (candidate, "score"), (stats, "requests")]:
        with pytest.raises(AttributeError):
            setattr(obj, attribute, None)


def test_route_rejects_a_bare_string_as_a_sequence(router: Router) -> None:
    with pytest.raises(TypeError):
        router.route("chat", capabilities="tools")


def test_errors_can_be_raised_from_python() -> None:
    error = UnknownModelGroupError("x", ["a"])
    assert (error.name, error.known, str(error)) == ("x", ["a"], 'unknown model group "x" (known: a)')
    assert str(RouterError("boom")) == "boom"
    assert router_core.ConfigError.__module__ == "router_core"


def test_concurrent_route_and_record_from_threads(router: Router) -> None:
    per_thread = 500

    def work(thread: int) -> Counter[str]:
        served: Counter[str] = Counter()
        for i in range(per_thread):
            decision = router.route("auto", seed=thread * per_thread + i)
            assert decision.lease is not None
            chosen = decision.lease.deployment
            outcome = "ok" if i % 10 else "server_error"
            router.record(decision.lease, outcome=outcome, latency_ms=float(i % 50), output_tokens=1)
            served[chosen] += 1
        return served

    with ThreadPoolExecutor(max_workers=8) as pool:
        served = sum(pool.map(work, range(8)), Counter[str]())

    stats = {s.deployment: s for s in router.stats()}
    assert sum(s.requests for s in stats.values()) == 8 * per_thread
    assert {d: s.requests for d, s in stats.items() if s.requests} == dict(served)
    assert sum(s.failures for s in stats.values()) == 8 * per_thread // 10
    assert sum(s.output_tokens for s in stats.values()) == 8 * per_thread


POLICY_CONFIG = {
    "default_group": "general",
    "deployments": [
        {"id": d, "region": r, "context_window": 100_000, "capabilities": ["streaming"],
         "input_price_per_mtok": p, "output_price_per_mtok": p}
        for d, r, p in (("g-eu", "eu", 1.0), ("g-us", "us", 0.5), ("coder", "us", 3.0))
    ],
    "model_groups": [
        {"name": "general", "deployments": ["g-eu", "g-us"]},
        {"name": "coder", "deployments": ["coder"]},
    ],
    "policies": [
        {"id": "team-ml", "when": {"field": "metadata.team", "eq": "ml"}, "route_to": {"groups": ["coder"]},
         "fallback": [{"groups": ["general"]}]},
        {"id": "rr", "when": {"field": "tags", "contains": "spread"}, "route_to": {"groups": ["general"]},
         "strategy": "round_robin"},
    ],
}  # fmt: skip


def test_policies_match_metadata_tags_and_explain_themselves() -> None:
    router = router_core.Router(json.dumps(POLICY_CONFIG))
    decision = router.route("auto", metadata={"team": "ml"}, seed=1)
    assert decision.policy == "team-ml"
    assert decision.candidates[0].deployment == "coder"
    assert {c.deployment for c in decision.candidates[1:]} == {"g-eu", "g-us"}
    assert router.route("general", seed=1).policy is None


def test_dry_run_does_not_advance_round_robin() -> None:
    router = router_core.Router(json.dumps(POLICY_CONFIG))
    peek = [router.route("auto", tags=["spread"], dry_run=True).candidates[0].deployment for _ in range(3)]
    assert len(set(peek)) == 1
    turns = [router.route("auto", tags=["spread"]).candidates[0].deployment for _ in range(4)]
    assert turns == ["g-eu", "g-us", "g-eu", "g-us"]


def test_cost_ceiling_rejects_with_the_cost_filter() -> None:
    router = router_core.Router(json.dumps(POLICY_CONFIG))
    decision = router.route("general", input_tokens=100_000, max_cost_usd=0.07, seed=3)
    assert [c.deployment for c in decision.candidates] == ["g-us"]
    assert [(r.deployment, r.filter) for r in decision.rejected] == [("g-eu", "cost")]


HEDGED_CONFIG: dict[str, Any] = POLICY_CONFIG | {
    "policies": [
        {"id": "hedged", "when": {"field": "task", "eq": "chat"}, "route_to": {"groups": ["coder"]},
         "fallback": [{"deployments": ["g-eu"]}, {"deployments": ["g-us"]}],
         "hedge": {"min_delay_ms": 50, "max_hedges": 2}, "content_fallback": "next_tier"},
        {"id": "refusals-move-on", "when": {"field": "task", "eq": "draft"}, "route_to": {"groups": ["general"]},
         "content_fallback": "next"},
    ],
}  # fmt: skip


def test_a_policy_passes_its_hedge_and_content_fallback_to_the_decision() -> None:
    router = Router(json.dumps(HEDGED_CONFIG))
    decision = router.route("general", task="chat", dry_run=True)
    assert decision.policy == "hedged"
    hedge = decision.hedge
    assert isinstance(hedge, router_core.Hedge)
    assert (hedge.min_delay_ms, hedge.max_delay_ms, hedge.max_hedges) == (50.0, 2000.0, 2)
    assert repr(hedge) == "Hedge(min_delay_ms=50.0, max_delay_ms=2000.0, max_hedges=2)"
    assert decision.content_fallback == "next_tier"
    shown = (
        'hedge=Hedge(min_delay_ms=50.0, max_delay_ms=2000.0, max_hedges=2), content_fallback="next_tier", '
        "experiment=None, shadow=None)"
    )
    assert repr(decision).endswith(shown)
    with pytest.raises(AttributeError):
        hedge.max_hedges = 3  # type: ignore[misc]

    drafting = router.route("general", task="draft", dry_run=True)
    assert (drafting.hedge, drafting.content_fallback) == (None, "next")
    unmatched = router.route("general", dry_run=True)
    assert (unmatched.policy, unmatched.hedge, unmatched.content_fallback) == (None, None, "none")


def test_candidates_carry_their_tier() -> None:
    router = Router(json.dumps(HEDGED_CONFIG))
    decision = router.route("general", task="chat", dry_run=True)
    assert [(c.deployment, c.tier) for c in decision.candidates] == [("coder", 0), ("g-eu", 1), ("g-us", 2)]
    assert "tier=2" in repr(decision.candidates[2])
    assert {c.tier for c in router.route("general", dry_run=True).candidates} == {0}


@pytest.mark.parametrize(
    ("hedge", "message"),
    [
        ({"min_delay_ms": -1}, "policies[0].hedge.min_delay_ms: must be a finite number >= 0"),
        ({"max_delay_ms": 0}, "policies[0].hedge.max_delay_ms: must be a finite number > 0"),
        ({"min_delay_ms": 10, "max_delay_ms": 5}, "policies[0].hedge.min_delay_ms: must be <= max_delay_ms"),
        ({"max_hedges": 4}, "policies[0].hedge.max_hedges: must be between 1 and 3"),
        ({"after_ms": 4}, "policies[0].hedge.after_ms: unknown field"),
    ],
)
def test_invalid_hedges_name_their_key(hedge: dict[str, Any], message: str) -> None:
    policies = [HEDGED_CONFIG["policies"][0] | {"hedge": hedge}]
    with pytest.raises(ConfigError) as caught:
        Router(json.dumps(HEDGED_CONFIG | {"policies": policies}))
    assert str(caught.value).startswith(message)


def test_latency_tail_per_deployment(router: Router) -> None:
    assert router.latency_tail_ms("a", first_token=True) is None
    for latency_ms, ttft_ms in [(900.0, 80.0), (1_100.0, 120.0)]:
        router.record(router.reserve("a"), outcome="ok", latency_ms=latency_ms, ttft_ms=ttft_ms)
    record(router, "b", latency_ms=300.0)
    stats = {s.deployment: s for s in router.stats()}
    first_token = router.latency_tail_ms("a", first_token=True)
    assert first_token is not None and stats["a"].ewma_ttft_ms is not None
    assert first_token == stats["a"].tail_ttft_ms and first_token > stats["a"].ewma_ttft_ms
    assert router.latency_tail_ms("a", first_token=False) == stats["a"].tail_latency_ms
    assert router.latency_tail_ms("b", first_token=False) == pytest.approx(300.0)
    assert router.latency_tail_ms("b", first_token=True) is None, "no ttft_ms was reported for b"
    assert (stats["b"].tail_ttft_ms, stats["c"].tail_latency_ms) == (None, None)
    assert f"tail_ttft_ms={first_token!r}" in repr(stats["a"])
    with pytest.raises(UnknownDeploymentError) as caught:
        router.latency_tail_ms("zz", first_token=True)
    assert caught.value.deployment == "zz"
    with pytest.raises(TypeError):
        router.latency_tail_ms("a", True)  # type: ignore[call-arg]


def test_a_policy_passes_its_experiment_variant_and_shadow_copy_to_the_decision() -> None:
    document = POLICY_CONFIG | {"policies": []}
    document["policies"] = [
        {
            "id": "evaluated",
            "experiment": {"id": "ab", "variants": [{"name": "only", "groups": ["general"]}]},
            "shadow": {"deployments": ["g-us"], "sample": 1.0, "max_in_flight": 2},
        }
    ]
    router = router_core.Router(json.dumps(document))
    decision = router.route("general", tenant="acme")
    assert decision.experiment == ("ab", "only")
    shadow = decision.shadow
    assert isinstance(shadow, router_core.ShadowCopy)
    assert (shadow.deployments, shadow.max_in_flight) == (("g-us",), 2)
    assert repr(decision).endswith(
        """experiment=("ab", "only"), shadow=ShadowCopy(deployments=('g-us',), max_in_flight=2))"""
    )
    assert router.route("general", dry_run=True).shadow is None, "a dry run copies nothing"
    lease = router.reserve_shadow("g-us", tokens=10, input_tokens=4)
    assert lease.deployment == "g-us"
    router.release(lease)
