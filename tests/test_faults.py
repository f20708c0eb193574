"""Fault injection on real loopback sockets: for each way an upstream fails, unary and
streaming, the exact outcome (who answered, or which status and attempts came back) and that
nothing leaked: no lease held, no connection left open to the faulty upstream, no task left over.

Two OpenAI-compatible deployments in one priority group: `mock-0` on the faulty upstream (or a
closed port), then `mock-1` on a healthy one."""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import aiohttp
import grpc
import pytest
from aiohttp import web_protocol
from google.rpc import error_details_pb2

import router_core
from service.api.switchboard.v1 import gateway_pb2 as pb
from service.api.switchboard.v1 import gateway_pb2_grpc as pb_grpc
from service.config import parse_config
from service.providers.openai_compat import OpenAICompatibleProvider
from service.server import Gateway
from tests.conftest import status_details
from tests.mock_openai import Fault, MockOpenAI
from tests.test_cancellation import eventually, in_flight, upstream_connections

Mode = Literal["unary", "stream"]
MODES: tuple[Mode, ...] = ("unary", "stream")
TEXT = "one two three four"
STALL_S = 0.3


@dataclass(frozen=True)
class Limits:
    """A deployment's time limits."""

    timeout_s: float
    first_token_s: float | None = None
    stall_s: float | None = None

    def yaml(self) -> str:
        lines = f"\n        timeout_s: {self.timeout_s}"
        if self.first_token_s is not None:
            lines += f"\n        first_token_timeout_s: {self.first_token_s}"
        if self.stall_s is not None:
            lines += f"\n        stall_timeout_s: {self.stall_s}"
        return lines


# For a deployment whose time limits are under test: small, so that hangs cost the suite little time.
FAST = Limits(timeout_s=0.5, first_token_s=0.3, stall_s=STALL_S)
# For the others: a loaded machine must not turn a fast fault, or a healthy answer, into a timeout.
PATIENT = Limits(timeout_s=5)


def config(faulty_url: str, healthy_url: str, faulty: Limits, healthy: Limits, *, twin: bool = False) -> str:
    """mock-0 on the faulty upstream, mock-1 on the healthy one and, with `twin`, mock-2 on the
    faulty upstream too (priority 2)."""
    upstreams = [(faulty_url, faulty), (healthy_url, healthy)] + ([(faulty_url, faulty)] if twin else [])
    deployments = "".join(
        f"""
      - id: mock-{i}
        type: openai_compatible
        model: mock-model-{i}
        base_url: {url}
        context_window: 8192
        priority: {i}{limits.yaml()}"""
        for i, (url, limits) in enumerate(upstreams)
    )
    return f"""
default_group: chat
model_groups:
  - name: chat
    strategy: priority
    deployments:{deployments}
"""


def closed_port() -> int:
    """A loopback port nothing listens on: connecting to it is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def chat_request(text: str = TEXT) -> pb.ChatRequest:
    return pb.ChatRequest(model="chat", messages=[pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text=text)])])


def gateway_tasks() -> Counter[str]:
    """The tasks running in the loop, by coroutine name, apart from the caller's own and the mock
    upstreams' server side (aiohttp's request handlers, which a hanging fault keeps busy)."""
    current = asyncio.current_task()
    names: Counter[str] = Counter()
    for task in asyncio.all_tasks():
        coro: Any = task.get_coro()
        if task is current or getattr(getattr(coro, "cr_code", None), "co_filename", "") == web_protocol.__file__:
            continue
        names[getattr(coro, "__qualname__", repr(coro))] += 1
    return names


def held_connections(server: Gateway) -> int:
    """Connections the gateway's HTTP clients handed to a request and never got back (a response
    that was not released): they would never be reused nor closed."""
    held = 0
    for provider in server.engine.providers.values():
        assert isinstance(provider, OpenAICompatibleProvider)
        session = provider._client._session
        if session is not None and session.connector is not None:
            held += len(session.connector._acquired)
    return held


@dataclass
class Harness:
    server: Gateway
    stub: pb_grpc.GatewayStub
    faulty: MockOpenAI
    healthy: MockOpenAI
    tasks_before: Counter[str] = field(default_factory=Counter)
    # Deployments on the faulty mock, each with its own connection pool (2 with a twin).
    faulty_pools: int = 1

    def stats(self, deployment: str) -> router_core.DeploymentStats:
        return next(s for s in self.server.engine.router.stats() if s.deployment == deployment)

    async def check_nothing_leaked(self, *, faulty_closed: bool, healthy_closed: bool = False) -> None:
        """No connection held by a response, no task left over, no connection left ESTABLISHED to a
        mock whose exchange broke off (`*_closed`), and every lease given back (checked last, as
        `LeakedLease`). A mock whose HTTP exchange completed (an error status, a complete but wrong
        body) may keep one idle keep-alive connection in each of the gateway's pools for it: reuse,
        not a leak."""
        for mock, closed, pools in ((self.faulty, faulty_closed, self.faulty_pools), (self.healthy, healthy_closed, 1)):
            limit = 0 if closed else pools
            assert await eventually(lambda mock=mock, limit=limit: upstream_connections(mock) <= limit), (
                f"{upstream_connections(mock)} connections to the mock on port {mock.port} left open"
            )
        assert held_connections(self.server) == 0, "a response was never released"
        assert await eventually(lambda: gateway_tasks() == self.tasks_before), (
            f"tasks left over: {gateway_tasks() - self.tasks_before}"
        )
        if not await eventually(lambda: in_flight(self.server) == 0, timeout_s=0.5):
            leases = {s.deployment: s.in_flight for s in self.server.engine.router.stats() if s.in_flight}
            raise LeakedLease(f"leases never given back: {leases}")


class LeakedLease(AssertionError):
    """A deployment's lease was neither recorded nor released: its in_flight count (and the tokens
    it reserved) stay taken for good."""


class StartHarness(Protocol):
    async def __call__(
        self,
        *,
        refused: bool = False,
        faulty: Limits = PATIENT,
        healthy: Limits = PATIENT,
        twin: bool = False,
        policies: str = "",
    ) -> Harness: ...


@pytest.fixture
async def start(upstream: MockOpenAI, second_upstream: MockOpenAI) -> AsyncIterator[StartHarness]:
    """Start a gateway in front of `upstream` (mock-0, `faulty` limits; a closed port when `refused`)
    and `second_upstream` (mock-1, `healthy` limits), with mock-2 on `upstream` too when `twin`,
    and the `policies:` section of the config given."""
    started: list[tuple[Gateway, grpc.aio.Channel]] = []

    async def start_harness(
        *,
        refused: bool = False,
        faulty: Limits = PATIENT,
        healthy: Limits = PATIENT,
        twin: bool = False,
        policies: str = "",
    ) -> Harness:
        faulty_url = f"http://127.0.0.1:{closed_port()}/v1" if refused else upstream.base_url
        text = config(faulty_url, second_upstream.base_url, faulty, healthy, twin=twin)
        server = Gateway(parse_config(text + (f"policies:\n{policies}" if policies else "")), "127.0.0.1:0")
        await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        started.append((server, channel))
        stub = pb_grpc.GatewayStub(channel)
        return Harness(server, stub, upstream, second_upstream, gateway_tasks(), faulty_pools=2 if twin else 1)

    yield start_harness
    for server, channel in started:
        await channel.close()
        await server.stop(0)


@dataclass
class Answer:
    deployment: str
    text: str
    attempts: list[tuple[str, int]]
    upstream_statuses: list[int]


def outcomes(attempts: Sequence[pb.Attempt]) -> list[tuple[str, int]]:
    return [(a.deployment, a.outcome) for a in attempts]


async def ask(harness: Harness, mode: Mode) -> Answer:
    """One successful call; a stream's first failed attempts must be the start of its last list."""
    if mode == "unary":
        response = await harness.stub.Chat(chat_request())
        return Answer(
            response.served.deployment,
            response.message.content[0].text,
            outcomes(response.attempts),
            [a.upstream_status for a in response.attempts],
        )
    events = [event async for event in harness.stub.ChatStream(chat_request())]
    kinds = [event.WhichOneof("event") for event in events]
    assert kinds[0] == "start" and kinds[-1] == "end" and set(kinds[1:-1]) == {"delta"}, kinds
    start, end = events[0].start, events[-1].end
    assert outcomes(start.failed_attempts) == outcomes(end.attempts)[:-1]
    assert end.finish_reason == pb.FINISH_REASON_STOP
    return Answer(
        start.served.deployment,
        "".join(event.delta.text for event in events[1:-1]),
        outcomes(end.attempts),
        [a.upstream_status for a in end.attempts],
    )


async def fail(
    harness: Harness, mode: Mode, *, deadline_s: float | None = None
) -> tuple[grpc.aio.AioRpcError, list[pb.ChatStreamResponse]]:
    """One failing call: its error and, for a stream, the events received before it."""
    received: list[pb.ChatStreamResponse] = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        if mode == "unary":
            await harness.stub.Chat(chat_request(), timeout=deadline_s)
        else:
            async for event in harness.stub.ChatStream(chat_request(), timeout=deadline_s):
                received.append(event)
    return caught.value, received


@dataclass(frozen=True)
class Case:
    """A fault of mock-0's that mock-1 makes up for."""

    fault: Fault | None  # None: mock-0's port refuses connections
    outcome: pb.Outcome
    upstream_status: int = 0
    # The HTTP exchange broke off, so the gateway must close the connection (it cannot reuse it).
    broken: bool = False
    modes: tuple[Mode, ...] = MODES


FALLBACKS = {
    "connection-refused": Case(None, pb.OUTCOME_CONNECTION_ERROR, broken=True),
    "500": Case(Fault(status=500), pb.OUTCOME_SERVER_ERROR, 500),
    "502": Case(Fault(status=502), pb.OUTCOME_SERVER_ERROR, 502),
    "503": Case(Fault(status=503), pb.OUTCOME_OVERLOADED, 503),
    "529": Case(Fault(status=529), pb.OUTCOME_OVERLOADED, 529),
    "429-retry-after": Case(Fault(status=429, headers={"Retry-After": "7"}), pb.OUTCOME_RATE_LIMITED, 429),
    "429-no-retry-after": Case(Fault(status=429), pb.OUTCOME_RATE_LIMITED, 429),
    "hang-before-headers": Case(Fault(hang_s=5), pb.OUTCOME_TIMEOUT, broken=True),
    "slow-first-token": Case(Fault(stall_after=0, stall_s=5), pb.OUTCOME_TIMEOUT, broken=True, modes=("stream",)),
    "reset-after-headers": Case(Fault(reset_after_bytes=0), pb.OUTCOME_CONNECTION_ERROR, 200, broken=True),
    # Unary: inside the JSON body; stream: inside the role chunk, before any content.
    "reset-mid-body": Case(Fault(reset_after_bytes=40), pb.OUTCOME_CONNECTION_ERROR, 200, broken=True),
    "invalid-json": Case(Fault(invalid_json=True), pb.OUTCOME_PROTOCOL_ERROR, modes=("unary",)),
    # Inside a 200 answer: the status reported is the 200 the upstream sent.
    "malformed-chunk-before-content": Case(Fault(malformed_after=0), pb.OUTCOME_PROTOCOL_ERROR, 200, modes=("stream",)),
    "cut-before-content": Case(Fault(cut_after=0), pb.OUTCOME_PROTOCOL_ERROR, 200, modes=("stream",)),
    "error-event-before-content": Case(Fault(error_event_after=0), pb.OUTCOME_SERVER_ERROR, 200, modes=("stream",)),
}


@pytest.mark.parametrize(
    ("case", "mode"),
    [pytest.param(case, mode, id=f"{name}-{mode}") for name, case in FALLBACKS.items() for mode in case.modes],
)
async def test_a_fault_before_content_falls_back_to_the_next_deployment(
    start: StartHarness, case: Case, mode: Mode
) -> None:
    harness = await start(refused=case.fault is None, faulty=FAST if case.outcome == pb.OUTCOME_TIMEOUT else PATIENT)
    harness.faulty.fault = case.fault
    answer = await ask(harness, mode)
    assert answer.deployment == "mock-1"
    assert answer.text == f"second: {TEXT}"
    assert answer.attempts == [("mock-0", case.outcome), ("mock-1", pb.OUTCOME_OK)]
    assert answer.upstream_statuses == [case.upstream_status, 0]
    # Asked once each: no retry on the same deployment (off by default).
    assert len(harness.faulty.requests) == (0 if case.fault is None else 1)
    assert len(harness.healthy.requests) == 1
    assert harness.stats("mock-0").failures == 1
    await harness.check_nothing_leaked(faulty_closed=case.broken)


@pytest.mark.parametrize(("retry_after", "cooling_s"), [("7", 7.0), (None, 1.0)], ids=["retry-after-7", "none"])
async def test_a_rate_limit_cools_the_deployment_for_its_retry_after(
    start: StartHarness, retry_after: str | None, cooling_s: float
) -> None:
    """The two 429s look alike to the client; the router keeps mock-0 out of rotation for the
    Retry-After, or for its default of 1 s without one."""
    harness = await start()
    harness.faulty.fault = Fault(status=429, headers={"Retry-After": retry_after} if retry_after else {})
    assert (await ask(harness, "unary")).deployment == "mock-1"
    stats = harness.stats("mock-0")
    assert stats.unavailable_reason is not None
    assert stats.unavailable_for_s == pytest.approx(cooling_s, abs=0.5)
    await harness.check_nothing_leaked(faulty_closed=False)


@pytest.mark.parametrize("mode", MODES)
async def test_rejected_credentials_fall_back_and_take_the_deployment_out_of_rotation(
    start: StartHarness, mode: Mode
) -> None:
    """A 401 falls back at once, and mock-0 stays out for the auth cool-down (5 minutes by
    default): the next call goes straight to mock-1, without asking mock-0 again."""
    harness = await start()
    harness.faulty.fault = Fault(status=401, message="Incorrect API key provided")
    answer = await ask(harness, mode)
    assert answer.deployment == "mock-1"
    assert answer.attempts == [("mock-0", pb.OUTCOME_AUTH_ERROR), ("mock-1", pb.OUTCOME_OK)]
    stats = harness.stats("mock-0")
    assert stats.unavailable_reason == "auth_failed"
    assert stats.unavailable_for_s == pytest.approx(300, abs=5)
    assert (await ask(harness, mode)).attempts == [("mock-1", pb.OUTCOME_OK)]
    assert len(harness.faulty.requests) == 1
    await harness.check_nothing_leaked(faulty_closed=False)


@pytest.mark.parametrize("mode", MODES)
async def test_a_connection_kept_after_an_http_error_is_reused(start: StartHarness, mode: Mode) -> None:
    """After a complete error answer the connection to mock-0 stays in the pool, idle, and the next
    call takes it again: one connection for three calls, not three."""
    harness = await start()
    harness.faulty.fault = Fault(status=500)
    for _ in range(3):
        assert (await ask(harness, mode)).deployment == "mock-1"
        assert upstream_connections(harness.faulty) == 1
    assert len(harness.faulty.requests) == 3
    await harness.check_nothing_leaked(faulty_closed=False)


async def event_stream(text: str) -> list[bytes]:
    """The events, as bytes on the wire, that a healthy mock streams for what the gateway sends
    mock-0 when asked `text` (so that a test can reset the stream at a chosen byte)."""
    mock = await MockOpenAI().start()
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{mock.base_url}/chat/completions", json=stream_body(text)) as response,
        ):
            raw = await response.read()
    finally:
        await mock.stop()
    return [event + b"\n\n" for event in raw.split(b"\n\n") if event]


def stream_body(text: str) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": text}],
        "model": "mock-model-0",
        "stream": True,
        "stream_options": {"include_usage": True},
    }


SENT_BEFORE_FAULT = 2  # content chunks: "mock:", " one"
MID_STREAM = {
    "cut": (Fault(cut_after=SENT_BEFORE_FAULT), "protocol_error (HTTP 200): stream ended before its finish reason"),
    "malformed-chunk": (Fault(malformed_after=SENT_BEFORE_FAULT), "protocol_error (HTTP 200): malformed stream chunk"),
    "error-event": (Fault(error_event_after=SENT_BEFORE_FAULT), "server_error (HTTP 200): The server had an error"),
    "stall": (Fault(stall_after=SENT_BEFORE_FAULT, stall_s=5), f"timeout: stalled: no chunk for {STALL_S:g}s"),
    "reset": (None, "connection_error (HTTP 200): ClientPayloadError"),  # the fault depends on the bytes: see the test
}


@pytest.mark.parametrize("name", MID_STREAM)
async def test_a_fault_after_content_ends_the_stream_with_an_error(start: StartHarness, name: str) -> None:
    fault, cause = MID_STREAM[name]
    if fault is None:
        # Reset in the middle of the first chunk not to arrive: after the role chunk and two of content.
        events = await event_stream(TEXT)
        before = sum(len(event) for event in events[: 1 + SENT_BEFORE_FAULT])
        fault = Fault(reset_after_bytes=before + len(events[1 + SENT_BEFORE_FAULT]) // 2)
    # A stall limit for the stall; no first-token limit, which a loaded machine could trip first.
    harness = await start(faulty=Limits(timeout_s=5, stall_s=STALL_S) if name == "stall" else PATIENT)
    harness.faulty.fault = fault
    # Chunks a little apart, as from a model: what came before the fault has reached the gateway.
    harness.faulty.chunk_delay_s = 0.02
    error, received = await fail(harness, "stream")
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    deltas = [event.delta.text for event in received if event.HasField("delta")]
    assert received[0].start.served.deployment == "mock-0" and len(received) == 1 + len(deltas)
    assert not received[0].start.failed_attempts
    assert "".join(deltas) == "mock: one", "the deltas must be exactly the content sent before the fault"
    details = error.details() or ""
    assert details.startswith(f"stream from mock-0 failed after {len(deltas)} content deltas: {cause}"), details
    info, log = status_details(error)
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert info.reason == "STREAM_INTERRUPTED"
    assert dict(info.metadata) == {"deployment": "mock-0", "deltas_sent": str(len(deltas))}
    assert isinstance(log, pb.AttemptLog)
    (attempt,) = log.attempts
    assert attempt.deployment == "mock-0" and attempt.error_message == cause + details.split(cause, 1)[1]
    assert attempt.latency.ToTimedelta().total_seconds() > 0
    assert not harness.healthy.requests, "a stream must not fall back once content was sent"
    assert harness.faulty.requests == [stream_body(TEXT)]
    assert harness.stats("mock-0").failures == 1, "the interrupted attempt was not recorded as a failure"
    await harness.check_nothing_leaked(faulty_closed=name in ("stall", "reset"))


@pytest.mark.parametrize("mode", MODES)
async def test_a_bad_request_fails_at_once_without_fallback(start: StartHarness, mode: Mode) -> None:
    harness = await start()
    harness.faulty.fault = Fault(status=400, message="Invalid 'seed'")
    error, received = await fail(harness, mode)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Invalid 'seed'" in (error.details() or "")
    assert not received
    info, log = status_details(error)
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert info.reason == "UPSTREAM_FAILED"
    assert dict(info.metadata) == {"attempt.0": "mock-0 OUTCOME_BAD_REQUEST"}
    assert isinstance(log, pb.AttemptLog)
    assert [(a.deployment, a.upstream_status) for a in log.attempts] == [("mock-0", 400)]
    assert not harness.healthy.requests
    await harness.check_nothing_leaked(faulty_closed=False)


@dataclass(frozen=True)
class BothFail:
    first: Fault | None  # None: refused
    second: Fault
    code: grpc.StatusCode
    outcomes: tuple[pb.Outcome, pb.Outcome]
    retry_after_ms: int | None = None
    broken: tuple[bool, bool] = (False, False)


BOTH_FAIL = {
    "500-503": BothFail(
        Fault(status=500),
        Fault(status=503),
        grpc.StatusCode.UNAVAILABLE,
        (pb.OUTCOME_SERVER_ERROR, pb.OUTCOME_OVERLOADED),
    ),
    # The plain 429 cools mock-1 down for the default 1 s: the client is told that wait, the
    # shorter of the two.
    "429-429": BothFail(
        Fault(status=429, headers={"Retry-After": "7"}),
        Fault(status=429),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        (pb.OUTCOME_RATE_LIMITED, pb.OUTCOME_RATE_LIMITED),
        retry_after_ms=1000,
    ),
    "refused-reset": BothFail(
        None,
        Fault(reset_after_bytes=0),
        grpc.StatusCode.UNAVAILABLE,
        (pb.OUTCOME_CONNECTION_ERROR, pb.OUTCOME_CONNECTION_ERROR),
        broken=(True, True),
    ),
    "hang-hang": BothFail(
        Fault(hang_s=5),
        Fault(hang_s=5),
        # The deployments' own limits ran out, not the client's deadline.
        grpc.StatusCode.UNAVAILABLE,
        (pb.OUTCOME_TIMEOUT, pb.OUTCOME_TIMEOUT),
        broken=(True, True),
    ),
}


@pytest.mark.parametrize(
    ("case", "mode"),
    [pytest.param(case, mode, id=f"{name}-{mode}") for name, case in BOTH_FAIL.items() for mode in MODES],
)
async def test_both_deployments_failing_names_both_attempts(start: StartHarness, case: BothFail, mode: Mode) -> None:
    timed = FAST if case.second.hang_s else PATIENT
    harness = await start(refused=case.first is None, faulty=timed, healthy=timed)
    harness.faulty.fault = case.first
    harness.healthy.fault = case.second
    error, received = await fail(harness, mode)
    assert error.code() == case.code
    assert not received
    details = status_details(error)
    info = next(d for d in details if isinstance(d, error_details_pb2.ErrorInfo))
    assert info.reason == "UPSTREAM_FAILED"
    assert dict(info.metadata) == {
        "attempt.0": f"mock-0 {pb.Outcome.Name(case.outcomes[0])}",
        "attempt.1": f"mock-1 {pb.Outcome.Name(case.outcomes[1])}",
    }
    message = error.details() or ""
    assert "mock-0: " in message and "mock-1: " in message
    # The same attempts, typed, with what the metadata cannot carry: latency, HTTP status, error.
    (log,) = [d for d in details if isinstance(d, pb.AttemptLog)]
    assert [(a.deployment, a.outcome) for a in log.attempts] == [
        ("mock-0", case.outcomes[0]),
        ("mock-1", case.outcomes[1]),
    ]
    assert all(a.error_message and a.latency.ToTimedelta().total_seconds() >= 0 for a in log.attempts)
    retry = [d for d in details if isinstance(d, error_details_pb2.RetryInfo)]
    if case.retry_after_ms is None:
        assert not retry
    else:
        (told,) = [r.retry_delay.ToMilliseconds() for r in retry]
        assert case.retry_after_ms - 50 <= told <= case.retry_after_ms
    await harness.check_nothing_leaked(faulty_closed=case.broken[0], healthy_closed=case.broken[1])


@pytest.mark.parametrize("mode", MODES)
async def test_a_client_deadline_shorter_than_the_hang_ends_the_call_on_time(start: StartHarness, mode: Mode) -> None:
    """The deployments' own limit is 5 s; the client's 0.3 s deadline is what ends the call, and
    the upstream request goes with it."""
    harness = await start()
    harness.faulty.fault = Fault(hang_s=5)
    started = time.monotonic()
    error, received = await fail(harness, mode, deadline_s=0.3)
    elapsed = time.monotonic() - started
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert 0.25 < elapsed < 0.8, f"the call took {elapsed:.2f}s for a 0.3s deadline"
    assert not received
    assert len(harness.faulty.requests) == 1 and not harness.healthy.requests
    await harness.check_nothing_leaked(faulty_closed=True)
