"""Retrying the same deployment before falling back: backoff, Retry-After, limits, over real
sockets. How long each wait is, exactly, is tested on virtual time in test_attempt_timing.py."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import grpc
import pytest
from aiohttp import web
from google.rpc import error_details_pb2

from service.api.switchboard.v1 import gateway_pb2 as pb
from tests.conftest import StartGateway, status_details
from tests.mock_openai import Fault, MockOpenAI


class FlakyOpenAI(MockOpenAI):
    """Meets its next requests with `faults` in turn (None: answers), then answers."""

    def __init__(self, *, reply_prefix: str = "mock: ") -> None:
        super().__init__(reply_prefix=reply_prefix)
        self.faults: list[Fault | None] = []

    async def _chat(self, request: web.Request, *, model: str | None = None) -> web.StreamResponse:
        self.fault = self.faults.pop(0) if self.faults else None
        return await super()._chat(request, model=model)


@pytest.fixture
async def flaky() -> AsyncIterator[FlakyOpenAI]:
    mock = FlakyOpenAI()
    await mock.start()
    yield mock
    await mock.stop()


@pytest.fixture
async def second_flaky() -> AsyncIterator[FlakyOpenAI]:
    mock = FlakyOpenAI(reply_prefix="second: ")
    await mock.start()
    yield mock
    await mock.stop()


OVERLOADED = Fault(status=503)


def config(first: MockOpenAI, second: MockOpenAI, retries: str) -> str:
    return f"""
retries: {retries}
default_group: chat
model_groups:
  - name: chat
    strategy: priority
    deployments:
      - id: mock-0
        type: openai_compatible
        model: m
        base_url: {first.base_url}
        context_window: 8192
        priority: 0
      - id: mock-1
        type: openai_compatible
        model: m
        base_url: {second.base_url}
        context_window: 8192
        priority: 1
"""


def chat() -> pb.ChatRequest:
    return pb.ChatRequest(model="chat", messages=[pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text="hi")])])


FAST = "{same_deployment: 1, backoff_initial_s: 0.01, backoff_max_s: 1}"


async def test_a_transient_failure_is_retried_on_the_same_deployment(
    start_gateway: StartGateway, flaky: FlakyOpenAI, second_upstream: MockOpenAI
) -> None:
    flaky.faults = [OVERLOADED]
    stub = await start_gateway(config(flaky, second_upstream, FAST))
    response = await stub.Chat(chat())
    assert response.served.deployment == "mock-0"
    assert [(a.deployment, a.outcome) for a in response.attempts] == [
        ("mock-0", pb.OUTCOME_OVERLOADED),
        ("mock-0", pb.OUTCOME_OK),
    ]
    assert not second_upstream.requests


async def test_retries_run_out_then_the_call_falls_back(
    start_gateway: StartGateway, flaky: FlakyOpenAI, second_upstream: MockOpenAI
) -> None:
    flaky.faults = [OVERLOADED] * 2
    stub = await start_gateway(config(flaky, second_upstream, FAST))
    response = await stub.Chat(chat())
    assert [(a.deployment, a.outcome) for a in response.attempts] == [
        ("mock-0", pb.OUTCOME_OVERLOADED),
        ("mock-0", pb.OUTCOME_OVERLOADED),
        ("mock-1", pb.OUTCOME_OK),
    ]


async def test_no_retry_in_place_by_default(
    start_gateway: StartGateway, flaky: FlakyOpenAI, second_upstream: MockOpenAI
) -> None:
    flaky.faults = [OVERLOADED]
    stub = await start_gateway(config(flaky, second_upstream, "{}"))
    response = await stub.Chat(chat())
    assert [a.deployment for a in response.attempts] == ["mock-0", "mock-1"]


async def test_retry_after_is_waited_for_when_it_is_short(
    start_gateway: StartGateway, flaky: FlakyOpenAI, second_upstream: MockOpenAI
) -> None:
    flaky.faults = [rate_limited(300)]
    stub = await start_gateway(config(flaky, second_upstream, FAST))
    started = time.perf_counter()
    response = await stub.Chat(chat())
    assert time.perf_counter() - started >= 0.3
    assert [(a.deployment, a.outcome) for a in response.attempts] == [
        ("mock-0", pb.OUTCOME_RATE_LIMITED),
        ("mock-0", pb.OUTCOME_OK),
    ]


async def test_a_long_retry_after_falls_back_at_once(
    start_gateway: StartGateway, flaky: FlakyOpenAI, second_upstream: MockOpenAI
) -> None:
    flaky.faults = [Fault(status=429, headers={"Retry-After": "30"})]
    stub = await start_gateway(config(flaky, second_upstream, FAST))
    response = await stub.Chat(chat())
    assert [a.deployment for a in response.attempts] == ["mock-0", "mock-1"]


async def test_classes_not_named_are_not_retried_in_place(
    start_gateway: StartGateway, flaky: FlakyOpenAI, second_upstream: MockOpenAI
) -> None:
    flaky.faults = [OVERLOADED]
    retries = "{same_deployment: 1, backoff_initial_s: 0.01, retry_on: [connection_error]}"
    stub = await start_gateway(config(flaky, second_upstream, retries))
    response = await stub.Chat(chat())
    assert [a.deployment for a in response.attempts] == ["mock-0", "mock-1"]


async def test_a_stream_is_retried_in_place_before_its_first_content(
    start_gateway: StartGateway, flaky: FlakyOpenAI, second_upstream: MockOpenAI
) -> None:
    flaky.faults = [OVERLOADED]
    stub = await start_gateway(config(flaky, second_upstream, FAST))
    events = [event async for event in stub.ChatStream(chat())]
    assert events[0].start.served.deployment == "mock-0"
    assert [(a.deployment, a.outcome) for a in events[0].start.failed_attempts] == [("mock-0", pb.OUTCOME_OVERLOADED)]
    assert "".join(e.delta.text for e in events if e.HasField("delta")) == "mock: hi"
    assert not second_upstream.requests


async def test_the_total_budget_stops_further_attempts(
    start_gateway: StartGateway, flaky: FlakyOpenAI, second_upstream: MockOpenAI
) -> None:
    flaky.faults = [Fault(status=503, hang_s=0.2)] * 10
    second_upstream.fault = Fault(status=503)
    retries = "{same_deployment: 5, backoff_initial_s: 0.01, total_budget_s: 0.3}"
    stub = await start_gateway(config(flaky, second_upstream, retries))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Chat(chat())
    # The gateway's own budget ran out, not the client's deadline.
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "mock-0" in (caught.value.details() or "")
    assert "retry budget" in (caught.value.details() or "")
    assert len(flaky.requests) <= 2 and not second_upstream.requests


@pytest.mark.parametrize("streaming", [False, True], ids=["unary", "stream"])
async def test_a_context_overflow_skips_to_a_larger_window(
    start_gateway: StartGateway, upstream: MockOpenAI, second_upstream: MockOpenAI, streaming: bool
) -> None:
    upstream.fault = Fault(status=400, code="context_length_exceeded", message="maximum context length exceeded")
    large = await MockOpenAI(reply_prefix="large: ").start()
    try:
        deployments = "".join(
            f"""
      - {{id: {name}, type: openai_compatible, model: m, base_url: "{mock.base_url}",
          context_window: {window}, priority: {i}}}"""
            for i, (name, mock, window) in enumerate(
                [("small-a", upstream, 8192), ("small-b", second_upstream, 8192), ("large", large, 128000)]
            )
        )
        config = f"""
default_group: chat
model_groups:
  - name: chat
    strategy: priority
    deployments:{deployments}
"""
        stub = await start_gateway(config)
        if streaming:
            events = [event async for event in stub.ChatStream(chat())]
            served, attempts = events[0].start.served, list(events[-1].end.attempts)
        else:
            response = await stub.Chat(chat())
            served, attempts = response.served, list(response.attempts)
    finally:
        await large.stop()
    assert served.deployment == "large"
    assert [(a.deployment, a.outcome) for a in attempts] == [
        ("small-a", pb.OUTCOME_CONTEXT_WINDOW_EXCEEDED),
        ("small-b", pb.OUTCOME_CONTEXT_WINDOW_EXCEEDED),
        ("large", pb.OUTCOME_OK),
    ]
    assert "not tried" in attempts[1].error_message
    assert not second_upstream.requests


@pytest.mark.parametrize("streaming", [False, True], ids=["unary", "stream"])
async def test_a_request_waits_for_capacity_when_every_candidate_is_rate_limited(
    start_gateway: StartGateway, flaky: FlakyOpenAI, second_upstream: MockOpenAI, streaming: bool
) -> None:
    """Both deployments answer 429 (Retry-After 200 and 300 ms): with wait_for_capacity_s the
    gateway waits the shorter one and routes again, and the answer lists all three attempts."""
    flaky.faults = [rate_limited(200)]
    second_upstream.fault = Fault(status=429, headers={"retry-after-ms": "300"})
    stub = await start_gateway(config(flaky, second_upstream, "{wait_for_capacity_s: 1}"))
    started = time.perf_counter()
    if streaming:
        events = [event async for event in stub.ChatStream(chat())]
        served, attempts = events[0].start.served.deployment, events[-1].end.attempts
    else:
        response = await stub.Chat(chat())
        served, attempts = response.served.deployment, response.attempts
    assert time.perf_counter() - started >= 0.2
    assert served == "mock-0"
    assert [(a.deployment, a.outcome) for a in attempts] == [
        ("mock-0", pb.OUTCOME_RATE_LIMITED),
        ("mock-1", pb.OUTCOME_RATE_LIMITED),
        ("mock-0", pb.OUTCOME_OK),
    ]
    assert len(second_upstream.requests) == 1


@pytest.mark.parametrize(
    ("retries", "deadline_s"),
    [("{}", None), ("{wait_for_capacity_s: 0.1}", None), ("{wait_for_capacity_s: 5}", 0.15)],
    ids=["off-by-default", "wait-longer-than-allowed", "deadline-too-close"],
)
async def test_a_wait_for_capacity_it_cannot_afford_fails_at_once(
    start_gateway: StartGateway,
    flaky: FlakyOpenAI,
    second_upstream: MockOpenAI,
    retries: str,
    deadline_s: float | None,
) -> None:
    flaky.faults = [rate_limited(200)]
    second_upstream.fault = Fault(status=429, headers={"retry-after-ms": "300"})
    stub = await start_gateway(config(flaky, second_upstream, retries))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Chat(chat(), timeout=deadline_s)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    (retry,) = [d for d in status_details(caught.value) if isinstance(d, error_details_pb2.RetryInfo)]
    assert retry.retry_delay.ToMilliseconds() == 200
    assert len(flaky.requests) == 1 and len(second_upstream.requests) == 1


def rate_limited(ms: int) -> Fault:
    return Fault(status=429, headers={"retry-after-ms": str(ms)})


@pytest.mark.parametrize("retries", ["{}", "{wait_for_capacity_s: 0.3}"], ids=["default", "waiting"])
async def test_a_zero_retry_after_never_turns_into_a_busy_loop(
    start_gateway: StartGateway, upstream: MockOpenAI, second_upstream: MockOpenAI, retries: str
) -> None:
    """Retry-After 0 adds no cool-down: without waiting the call fails at once; waiting, each
    round still waits at least 50 ms, and the rounds stop when the allowance is spent."""
    upstream.fault = second_upstream.fault = Fault(status=429, headers={"Retry-After": "0"})
    stub = await start_gateway(config(upstream, second_upstream, retries))
    started = time.perf_counter()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Chat(chat(), timeout=5)
    elapsed = time.perf_counter() - started
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    rounds = len(upstream.requests)
    assert len(second_upstream.requests) == rounds
    # Exact round counts and waits: test_attempt_timing.py, on virtual time.
    if retries == "{}":
        assert rounds == 1
    else:
        assert 2 <= rounds <= 6 and elapsed >= 0.05 * (rounds - 1), (rounds, elapsed)


async def test_capacity_is_waited_for_only_when_every_attempt_was_rate_limited(
    start_gateway: StartGateway, upstream: MockOpenAI, second_upstream: MockOpenAI
) -> None:
    """mock-0 failed with a 500: waiting for mock-1's 429 would not bring mock-0 back."""
    upstream.fault = Fault(status=500)
    second_upstream.fault = rate_limited(200)
    stub = await start_gateway(config(upstream, second_upstream, "{wait_for_capacity_s: 1}"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Chat(chat())
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert len(upstream.requests) == 1 and len(second_upstream.requests) == 1


async def test_a_later_round_reports_its_own_wait_and_every_rounds_attempts(
    start_gateway: StartGateway, flaky: FlakyOpenAI, second_flaky: FlakyOpenAI
) -> None:
    """Round 1: both say 50 ms; round 2: both say 5 s. The error's RetryInfo is round 2's (not
    the 50 ms already waited), and the attempt log holds both rounds."""
    flaky.faults = [rate_limited(50), rate_limited(5000)]
    second_flaky.faults = [rate_limited(50), rate_limited(5000)]
    stub = await start_gateway(config(flaky, second_flaky, "{wait_for_capacity_s: 1}"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Chat(chat())
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = status_details(caught.value)
    (retry,) = [d for d in details if isinstance(d, error_details_pb2.RetryInfo)]
    assert retry.retry_delay.ToMilliseconds() == 5000
    (log,) = [d for d in details if isinstance(d, pb.AttemptLog)]
    assert [(a.deployment, a.outcome) for a in log.attempts] == [
        ("mock-0", pb.OUTCOME_RATE_LIMITED),
        ("mock-1", pb.OUTCOME_RATE_LIMITED),
        ("mock-0", pb.OUTCOME_RATE_LIMITED),
        ("mock-1", pb.OUTCOME_RATE_LIMITED),
    ]


async def test_a_deployment_out_of_rotation_is_not_reported_as_rate_limited(
    start_gateway: StartGateway, upstream: MockOpenAI, second_upstream: MockOpenAI
) -> None:
    """One failure opens a circuit here, so each retry in place finds its deployment out of
    rotation: listed as such, and the call is UNAVAILABLE with no RetryInfo (no rate limit to
    wait out), not RESOURCE_EXHAUSTED."""
    upstream.fault = second_upstream.fault = Fault(status=500)
    text = config(upstream, second_upstream, FAST) + "health: {consecutive_failures: 1}\n"
    stub = await start_gateway(text)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Chat(chat())
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    details = status_details(caught.value)
    assert not [d for d in details if isinstance(d, error_details_pb2.RetryInfo)]
    (log,) = [d for d in details if isinstance(d, pb.AttemptLog)]
    assert [(a.deployment, a.outcome) for a in log.attempts] == [
        ("mock-0", pb.OUTCOME_SERVER_ERROR),
        ("mock-0", pb.OUTCOME_OUT_OF_ROTATION),
        ("mock-1", pb.OUTCOME_SERVER_ERROR),
        ("mock-1", pb.OUTCOME_OUT_OF_ROTATION),
    ]
    assert "circuit open" in log.attempts[1].error_message
