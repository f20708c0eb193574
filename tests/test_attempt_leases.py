"""Every way a call can go, and every moment a client can leave it, ends with no lease held.

The engine runs against scripted providers on virtual time (tests/virtual_time.py), with the
router's manual clock following the loop's, so each path is exact and takes no wall time. Each
path runs to its end once, then again with the client leaving at every 5 ms of its course
(unary: the call is cancelled; streams: the reader stops) — which lands in every await of the
attempt loop: a pending attempt, a retry's backoff, a hedge's delay, a wait for capacity, a
stream being read. After each run no deployment has an attempt in flight and every token
budget is whole again (the scripted answers report no usage, so a settled lease gives back all
it reserved).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

import pytest

from service.api.switchboard.v1 import gateway_pb2 as pb
from service.errors import GatewayError
from tests.scripted import Action, Answer, Fail, Gateway, Hang, Withheld, gateway

pytestmark = pytest.mark.virtual_time

STEP_S = 0.005

CONFIG = """
default_group: chat
retries: {same_deployment: 1, backoff_initial_s: 0.02, backoff_max_s: 0.05, wait_for_capacity_s: 0.3}
model_groups:
  - name: chat
    strategy: priority
    deployments:
      - {id: a, type: echo, model: m, context_window: 8192, priority: 0, tpm: 10000, timeout_s: 0.3,
         stall_timeout_s: 0.1}
      - {id: b, type: echo, model: m, context_window: 16384, priority: 1, tpm: 10000, timeout_s: 0.3}
      - {id: c, type: echo, model: m, context_window: 32768, priority: 2, tpm: 10000, timeout_s: 0.3}
policies:
  - id: hedged
    when: {field: metadata.path, eq: hedged}
    route_to: {deployments: [a, b]}
    strategy: priority
    fallback: [{deployments: [c]}]
    hedge: {min_delay_ms: 50, max_delay_ms: 50, max_hedges: 1}
    content_fallback: next_tier
  - id: tiers
    when: {field: metadata.path, eq: tiers}
    route_to: {deployments: [a]}
    fallback: [{deployments: [b]}, {deployments: [c]}]
    content_fallback: next
"""

# Who answers after a fails once: the classes retried in place go back to a (a 429 cools a down
# instead), the rest fall over to b; a refusal ends the request unless the policy goes on.
AFTER_A_FAILS = {
    pb.OUTCOME_RATE_LIMITED: "ok from b",
    pb.OUTCOME_OVERLOADED: "ok from a",
    pb.OUTCOME_SERVER_ERROR: "ok from a",
    pb.OUTCOME_TIMEOUT: "ok from b",
    pb.OUTCOME_CONNECTION_ERROR: "ok from a",
    pb.OUTCOME_CONTEXT_WINDOW_EXCEEDED: "ok from b",
    pb.OUTCOME_CONTENT_FILTERED: "UpstreamFailed",
    pb.OUTCOME_AUTH_ERROR: "ok from b",
    pb.OUTCOME_BAD_REQUEST: "UpstreamFailed",
    pb.OUTCOME_PROTOCOL_ERROR: "ok from b",
}


@dataclass(frozen=True)
class Path:
    name: str
    policy: str  # metadata.path, which selects the policy
    script: dict[str, list[Action]]
    unary: str  # how the unary call ends
    stream: str = ""  # how the stream ends, when not the same


PATHS = [
    Path("ok", "", {}, "ok from a"),
    *[Path(f"a fails: {pb.Outcome.Name(o)}", "", {"a": [Fail(o)]}, AFTER_A_FAILS[o]) for o in AFTER_A_FAILS],
    *[
        Path(f"tiers: a fails: {pb.Outcome.Name(o)}", "tiers", {"a": [Fail(o)]}, AFTER_A_FAILS[o])
        for o in AFTER_A_FAILS
        if o != pb.OUTCOME_CONTENT_FILTERED
    ],
    Path("tiers: a refuses, b answers", "tiers", {"a": [Fail(pb.OUTCOME_CONTENT_FILTERED)]}, "ok from b"),
    # A whole answer withheld by a content filter is the same refusal, in a stream too.
    Path("a's answer withheld", "", {"a": [Withheld()]}, "UpstreamFailed"),
    Path("tiers: a's answer withheld, b answers", "tiers", {"a": [Withheld()]}, "ok from b"),
    Path("a times out, b answers", "", {"a": [Hang()]}, "ok from b"),
    Path("every candidate fails", "", {d: [Fail(pb.OUTCOME_SERVER_ERROR)] * 2 for d in "abc"}, "UpstreamFailed"),
    Path(
        "rate limited everywhere, waits for capacity",
        "",
        {d: [Fail(pb.OUTCOME_RATE_LIMITED, retry_after_s=0.06)] * 2 for d in "abc"},
        "ok from a",
    ),
    Path("hedge wins", "hedged", {"a": [Answer(delay=0.2)]}, "ok from b"),
    Path("hedge loses", "hedged", {"a": [Answer(delay=0.08)], "b": [Answer(delay=0.2)]}, "ok from a"),
    Path(
        "hedge fails, a answers",
        "hedged",
        {"a": [Answer(delay=0.1)], "b": [Fail(pb.OUTCOME_SERVER_ERROR)]},
        "ok from a",
    ),
    Path(
        "hedged: a refuses, the next tier answers",
        "hedged",
        {"a": [Fail(pb.OUTCOME_CONTENT_FILTERED, delay=0.03)]},
        "ok from c",
    ),
    Path(
        "hedged: both fail, c answers",
        "hedged",
        {d: [Fail(pb.OUTCOME_SERVER_ERROR, delay=0.07)] * 2 for d in "ab"},
        "ok from c",
    ),
    Path("stream breaks after content", "", {"a": [Answer(break_after=2)]}, "ok from a", "StreamInterrupted after 2"),
    Path("stream stalls after content", "", {"a": [Answer(gap=0.2)]}, "ok from a", "StreamInterrupted after 1"),
]


def chat_request(path: str) -> pb.ChatRequest:
    request = pb.ChatRequest(
        model="chat",
        messages=[pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text="hello")])],
        metadata={"path": path} if path else {},
    )
    request.params.max_tokens = 2_000
    return request


async def run_unary(gw: Gateway, path: str) -> str:
    try:
        response = await gw.engine.chat(chat_request(path), lambda: None)
    except GatewayError as error:
        return type(error).__name__
    return f"ok from {response.served.deployment}"


async def run_stream(gw: Gateway, path: str) -> str:
    events: AsyncIterator[pb.ChatStreamResponse] = gw.engine.chat_stream(chat_request(path), lambda: None)
    served, deltas = "", 0
    try:
        async for event in events:
            served = served or event.start.served.deployment
            deltas += event.HasField("delta")
    except GatewayError as error:
        return f"{type(error).__name__} after {deltas}" if served else type(error).__name__
    return f"ok from {served}"


RUNS = {"unary": run_unary, "stream": run_stream}


@pytest.mark.parametrize("kind", RUNS)
@pytest.mark.parametrize("path", PATHS, ids=[path.name for path in PATHS])
async def test_every_path_and_every_moment_of_leaving_gives_every_lease_back(kind: str, path: Path) -> None:
    loop = asyncio.get_running_loop()
    gw = gateway(CONFIG, path.script)
    began = loop.time()
    ended = await RUNS[kind](gw, path.policy)
    course = loop.time() - began
    assert ended == (path.stream if kind == "stream" and path.stream else path.unary)
    assert gw.leaks() == {}

    for step in range(round(course / STEP_S) + 1):
        gw = gateway(CONFIG, path.script)
        call = asyncio.ensure_future(RUNS[kind](gw, path.policy))
        await asyncio.sleep(step * STEP_S)
        call.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await call
        await asyncio.sleep(1)  # cancelled attempts finish closing in the background
        assert gw.leaks() == {}, f"the client left at {step * STEP_S:.3f} s of {course:.3f} s"


async def test_a_reader_that_stops_mid_stream_gives_the_lease_back() -> None:
    gw = gateway(CONFIG, {"a": [Answer(deltas=10)]})
    stream = gw.engine.chat_stream(chat_request(""), lambda: None)
    assert isinstance(stream, AsyncGenerator)
    first = await anext(stream)
    assert first.WhichOneof("event") == "start"
    await anext(stream)
    [(held, (in_flight, headroom))] = gw.leaks().items()
    assert (held, in_flight, round(headroom, 2)) == ("a", 1, 0.8)
    await stream.aclose()
    assert gw.leaks() == {}
