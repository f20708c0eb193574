"""Policies that change the attempt loop, on real loopback sockets: hedging a slow first
attempt, and where a content refusal goes. Each test checks who answered, the exact attempt list,
what each upstream was asked, and that nothing leaked (leases, connections, tasks).

mock-0 is on the `faulty` upstream, mock-1 on the healthy one (replies start "second: ")."""

from __future__ import annotations

import time

import grpc
import pytest
from google.rpc import error_details_pb2

from service.api.switchboard.v1 import gateway_pb2 as pb
from tests import test_faults
from tests.conftest import StartGateway, status_details
from tests.mock_openai import Fault, MockOpenAI
from tests.test_cancellation import eventually, upstream_connections
from tests.test_faults import MODES, PATIENT, TEXT, Limits, Mode, StartHarness, ask, chat_request, fail

start = test_faults.start  # the fixture that starts a gateway in front of two mocks

# The hedge fires after 150 ms whatever the deployment's latency estimate: fixed, so that a loaded
# machine cannot make these tests flaky by moving the estimate.
HEDGED = """
  - id: hedged
    route_to: {groups: [chat]}
    hedge: {min_delay_ms: 150, max_delay_ms: 150}
"""


def slow_first_answer(mode: Mode, seconds: float) -> Fault:
    """mock-0 answers, but only after `seconds`: a slow unary answer, or a slow first token."""
    return Fault(hang_s=seconds) if mode == "unary" else Fault(stall_after=0, stall_s=seconds)


@pytest.mark.parametrize("mode", MODES)
async def test_a_slow_first_attempt_is_hedged_and_the_hedge_wins(start: StartHarness, mode: Mode) -> None:
    harness = await start(policies=HEDGED)
    harness.faulty.fault = slow_first_answer(mode, 5)
    started = time.perf_counter()
    answer = await ask(harness, mode)
    elapsed = time.perf_counter() - started
    assert answer.deployment == "mock-1"
    assert answer.text == f"second: {TEXT}"
    assert answer.attempts == [("mock-0", pb.OUTCOME_CANCELLED), ("mock-1", pb.OUTCOME_OK)]
    assert 0.15 <= elapsed < 2.0, f"took {elapsed:.2f}s with a 150 ms hedge against a 5 s hang"
    assert len(harness.faulty.requests) == 1 and len(harness.healthy.requests) == 1
    # The loser's upstream request is closed, not left to run; it is not counted as its failure.
    assert harness.stats("mock-0").failures == 0
    (calls,) = harness.server.engine.router.call_measures()
    assert (calls.hedges, calls.fallbacks, calls.retries) == (1, 0, 0), "counted as a hedge"
    await harness.check_nothing_leaked(faulty_closed=True)


@pytest.mark.parametrize("mode", MODES)
async def test_a_fast_first_attempt_is_not_hedged(start: StartHarness, mode: Mode) -> None:
    harness = await start(policies=HEDGED)
    answer = await ask(harness, mode)
    assert answer.deployment == "mock-0"
    assert answer.attempts == [("mock-0", pb.OUTCOME_OK)]
    assert not harness.healthy.requests
    await harness.check_nothing_leaked(faulty_closed=False)


@pytest.mark.parametrize("mode", MODES)
async def test_the_first_attempt_wins_when_the_hedge_fails(start: StartHarness, mode: Mode) -> None:
    """The hedge fails fast while the slow first attempt is still running: the request waits for
    the first attempt instead of failing or starting yet another."""
    harness = await start(policies=HEDGED)
    harness.faulty.fault = slow_first_answer(mode, 0.5)
    harness.healthy.fault = Fault(status=500)
    answer = await ask(harness, mode)
    assert answer.deployment == "mock-0"
    assert answer.text == f"mock: {TEXT}"
    assert answer.attempts == [("mock-1", pb.OUTCOME_SERVER_ERROR), ("mock-0", pb.OUTCOME_OK)]
    await harness.check_nothing_leaked(faulty_closed=False)


@pytest.mark.parametrize("mode", MODES)
async def test_a_fast_failure_falls_back_without_waiting_for_the_hedge(start: StartHarness, mode: Mode) -> None:
    harness = await start(policies=HEDGED)
    harness.faulty.fault = Fault(status=503)
    answer = await ask(harness, mode)
    assert answer.deployment == "mock-1"
    assert answer.attempts == [("mock-0", pb.OUTCOME_OVERLOADED), ("mock-1", pb.OUTCOME_OK)]
    await harness.check_nothing_leaked(faulty_closed=False)


@pytest.mark.parametrize("mode", MODES)
async def test_a_race_both_lose_lists_both_attempts(start: StartHarness, mode: Mode) -> None:
    harness = await start(policies=HEDGED)
    harness.faulty.fault = Fault(status=500, hang_s=0.4)
    harness.healthy.fault = Fault(status=502)
    error, received = await fail(harness, mode)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert not received
    info = next(d for d in status_details(error) if isinstance(d, error_details_pb2.ErrorInfo))
    assert dict(info.metadata) == {
        "attempt.0": "mock-1 OUTCOME_SERVER_ERROR",
        "attempt.1": "mock-0 OUTCOME_SERVER_ERROR",
    }
    await harness.check_nothing_leaked(faulty_closed=False)


@pytest.mark.parametrize("mode", MODES)
async def test_a_client_leaving_mid_race_closes_both_upstream_calls(start: StartHarness, mode: Mode) -> None:
    harness = await start(policies=HEDGED)
    harness.faulty.fault = slow_first_answer(mode, 5)
    harness.healthy.fault = slow_first_answer(mode, 5)
    call = harness.stub.Chat(chat_request()) if mode == "unary" else harness.stub.ChatStream(chat_request())
    assert await eventually(
        lambda: upstream_connections(harness.faulty) == 1 and upstream_connections(harness.healthy) == 1
    ), "the hedge never started"
    call.cancel()
    await harness.check_nothing_leaked(faulty_closed=True, healthy_closed=True)


async def test_the_hedge_delay_follows_the_deployments_tail_latency(start: StartHarness) -> None:
    """Without fixed bounds, the delay is the first attempt's tail latency: after answers of about
    50 ms, a 5 s hang is hedged within a fraction of a second, not after the 2 s default ceiling."""
    harness = await start(policies=HEDGED.replace("min_delay_ms: 150, max_delay_ms: 150", "max_delay_ms: 2000"))
    harness.faulty.fault = Fault(hang_s=0.05)
    for _ in range(5):
        assert (await ask(harness, "unary")).deployment == "mock-0"
    tail_ms = harness.server.engine.router.latency_tail_ms("mock-0", first_token=False)
    assert tail_ms is not None and 40 < tail_ms < 1000
    harness.faulty.fault = Fault(hang_s=5)
    started = time.perf_counter()
    answer = await ask(harness, "unary")
    assert answer.deployment == "mock-1"
    assert time.perf_counter() - started < 1.5
    await harness.check_nothing_leaked(faulty_closed=True)


async def test_a_stream_hedge_waits_for_the_first_token_not_the_whole_answer(start: StartHarness) -> None:
    """A stream whose first token is quick is not hedged however long its content takes."""
    harness = await start(policies=HEDGED)
    harness.faulty.fault = Fault(stall_after=2, stall_s=0.4)
    answer = await ask(harness, "stream")
    assert answer.deployment == "mock-0"
    assert answer.attempts == [("mock-0", pb.OUTCOME_OK)]
    assert not harness.healthy.requests
    await harness.check_nothing_leaked(faulty_closed=False)


def tiered(content_fallback: str) -> str:
    """mock-0 and mock-2 (both on the refusing upstream) in the first tier, mock-1 in the fallback tier."""
    return f"""
  - id: tiered
    route_to: {{deployments: [mock-0, mock-2]}}
    strategy: priority
    fallback: [{{deployments: [mock-1]}}]
    content_fallback: {content_fallback}
"""


REFUSAL = Fault(status=400, code="content_filter", message="The response was filtered.")


@pytest.mark.parametrize("mode", MODES)
async def test_a_content_refusal_fails_at_once_by_default(start: StartHarness, mode: Mode) -> None:
    harness = await start(twin=True, policies=tiered("none"))
    harness.faulty.fault = REFUSAL
    error, received = await fail(harness, mode)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert not received
    assert len(harness.faulty.requests) == 1 and not harness.healthy.requests
    await harness.check_nothing_leaked(faulty_closed=False)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("content_fallback", "refusing_calls"),
    [("next_tier", 1), ("next", 2)],
    ids=["next_tier-skips-the-refusing-tier", "next-tries-every-candidate-in-order"],
)
async def test_content_fallback_goes_on_after_a_refusal(
    start: StartHarness, mode: Mode, content_fallback: str, refusing_calls: int
) -> None:
    """Both move on to mock-1 in the fallback tier; `next_tier` passes mock-2 over (listed, not
    called), `next` calls it too."""
    harness = await start(twin=True, policies=tiered(content_fallback))
    harness.faulty.fault = REFUSAL
    answer = await ask(harness, mode)
    assert answer.deployment == "mock-1"
    assert answer.attempts == [
        ("mock-0", pb.OUTCOME_CONTENT_FILTERED),
        ("mock-2", pb.OUTCOME_CONTENT_FILTERED),
        ("mock-1", pb.OUTCOME_OK),
    ]
    assert len(harness.faulty.requests) == refusing_calls
    await harness.check_nothing_leaked(faulty_closed=False)


async def test_no_deployment_in_rotation_is_unavailable_not_a_precondition(start: StartHarness) -> None:
    """Open circuits are transient: the client may retry, so the status is UNAVAILABLE with reason
    NO_HEALTHY_DEPLOYMENT, not FAILED_PRECONDITION (which says the request itself cannot be served)."""
    harness = await start(healthy=PATIENT)
    harness.faulty.fault = Fault(status=500)
    harness.healthy.fault = Fault(status=500)
    for _ in range(5):  # five consecutive failures open each circuit
        await fail(harness, "unary")
    error, _ = await fail(harness, "unary")
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    info = next(d for d in status_details(error) if isinstance(d, error_details_pb2.ErrorInfo))
    assert info.reason == "NO_HEALTHY_DEPLOYMENT"
    assert set(info.metadata) == {"model_group", "rejected.mock-0", "rejected.mock-1"}
    assert "circuit open" in info.metadata["rejected.mock-0"]
    await harness.check_nothing_leaked(faulty_closed=False)


async def test_an_upstream_timeout_is_unavailable_and_the_client_deadline_is_deadline_exceeded(
    start: StartHarness,
) -> None:
    """Clients must be able to tell their own deadline from the gateway's per-deployment limits."""
    harness = await start(faulty=Limits(timeout_s=0.2), healthy=Limits(timeout_s=0.2))
    harness.faulty.fault = Fault(hang_s=5)
    harness.healthy.fault = Fault(hang_s=5)
    own, _ = await fail(harness, "unary")
    assert own.code() == grpc.StatusCode.UNAVAILABLE
    client, _ = await fail(harness, "unary", deadline_s=0.1)
    assert client.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await harness.check_nothing_leaked(faulty_closed=True, healthy_closed=True)


@pytest.mark.parametrize("max_hedges", [1, 2])
async def test_no_more_hedges_start_than_the_policy_allows(start: StartHarness, max_hedges: int) -> None:
    """Three candidates (mock-0, mock-1, mock-2) that all hang: one hedge at a time, each after the
    newest attempt's delay, until `max_hedges` extra attempts run; then the client's deadline ends it."""
    policy = HEDGED.replace("max_delay_ms: 150", f"max_delay_ms: 150, max_hedges: {max_hedges}")
    harness = await start(twin=True, policies=policy)
    harness.faulty.fault = Fault(hang_s=5)
    harness.healthy.fault = Fault(hang_s=5)
    error, _ = await fail(harness, "unary", deadline_s=0.8)
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert len(harness.healthy.requests) == 1  # mock-1, the first hedge
    assert len(harness.faulty.requests) == max_hedges  # mock-0, and mock-2 as the second hedge
    await harness.check_nothing_leaked(faulty_closed=True, healthy_closed=True)


async def test_a_request_no_budget_can_ever_fit_is_a_precondition_not_unavailable(
    start_gateway: StartGateway, upstream: MockOpenAI
) -> None:
    """A rate_limit rejection with no wait (the request is larger than the deployment's whole
    tokens-per-minute budget) is permanent: retrying cannot help, so it is not UNAVAILABLE."""
    stub = await start_gateway(
        f"""
default_group: chat
model_groups:
  - name: chat
    deployments:
      - id: small
        type: openai_compatible
        model: m
        base_url: {upstream.base_url}
        context_window: 100000
        tpm: 1000
"""
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Chat(pb.ChatRequest(model="chat", messages=chat_request().messages, params={"max_tokens": 5000}))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = next(d for d in status_details(caught.value) if isinstance(d, error_details_pb2.ErrorInfo))
    assert info.reason == "NO_ELIGIBLE_DEPLOYMENT"
    assert "tokens-per-minute" in info.metadata["rejected.small"]
    assert not upstream.requests
