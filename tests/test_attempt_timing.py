"""When the attempt loop waits, and for how long: backoffs, Retry-After, the total budget, waits
for capacity, hedge delays. The engine runs against scripted deployments on virtual time
(tests/scripted.py), so every duration is asserted exactly; each scripted call takes 10 ms.
The same behaviours over real sockets, without timings, are in test_retries.py and
test_hedging.py."""

from __future__ import annotations

import asyncio

import pytest

from service.api.switchboard.v1 import gateway_pb2 as pb
from service.attempts import COOL_DOWN_SLACK_S
from service.errors import BudgetExhausted, UpstreamFailed
from tests.scripted import Answer, Fail, Gateway, Hang, gateway

pytestmark = pytest.mark.virtual_time

CALL_S = 0.01


def config(retries: str, policy: str = "") -> str:
    return f"""
default_group: chat
retries: {retries}
model_groups:
  - name: chat
    strategy: priority
    deployments:
      - {{id: a, type: echo, model: m, context_window: 8192, priority: 0}}
      - {{id: b, type: echo, model: m, context_window: 8192, priority: 1}}
{policy}
"""


def request() -> pb.ChatRequest:
    return pb.ChatRequest(model="chat", messages=[pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text="hi")])])


async def timed_chat(gw: Gateway, deadline_s: float | None = None) -> tuple[float, pb.ChatResponse]:
    """The answer and how long it took in virtual time; `deadline_s` is the client's deadline."""
    loop = asyncio.get_running_loop()
    began = loop.time()

    def time_remaining() -> float | None:
        return None if deadline_s is None else began + deadline_s - loop.time()

    response = await gw.engine.chat(request(), time_remaining)
    return round(loop.time() - began, 6), response


async def timed_failure(gw: Gateway, deadline_s: float | None = None) -> tuple[float, Exception]:
    loop = asyncio.get_running_loop()
    began = loop.time()
    try:
        await timed_chat(gw, deadline_s)
    except (UpstreamFailed, BudgetExhausted) as error:
        return round(loop.time() - began, 6), error
    raise AssertionError("the call succeeded")


def listed(response: pb.ChatResponse) -> list[tuple[str, str]]:
    return [(a.deployment, pb.Outcome.Name(a.outcome).removeprefix("OUTCOME_")) for a in response.attempts]


FAST = "{same_deployment: 1, backoff_initial_s: 0.001, backoff_max_s: 1}"


async def test_a_short_retry_after_is_waited_for_exactly() -> None:
    gw = gateway(config(FAST), {"a": [Fail(pb.OUTCOME_RATE_LIMITED, retry_after_s=0.3)]})
    took, response = await timed_chat(gw)
    assert took == pytest.approx(CALL_S + 0.3 + COOL_DOWN_SLACK_S + CALL_S)
    assert listed(response) == [("a", "RATE_LIMITED"), ("a", "OK")]


async def test_a_long_retry_after_falls_back_at_once() -> None:
    gw = gateway(config(FAST), {"a": [Fail(pb.OUTCOME_RATE_LIMITED, retry_after_s=30)]})
    took, response = await timed_chat(gw)
    assert took == 2 * CALL_S
    assert listed(response) == [("a", "RATE_LIMITED"), ("b", "OK")]


async def test_the_backoff_grows_exponentially_within_its_cap() -> None:
    """Full jitter: each wait is drawn below initial * 2^n, capped at backoff_max_s."""
    retries = "{same_deployment: 3, backoff_initial_s: 0.1, backoff_max_s: 0.25}"
    for _ in range(20):
        gw = gateway(config(retries), {"a": [Fail(pb.OUTCOME_SERVER_ERROR)] * 3})
        took, response = await timed_chat(gw)
        assert listed(response) == [("a", "SERVER_ERROR")] * 3 + [("a", "OK")]
        waited = took - 4 * CALL_S
        assert 0 <= waited <= 0.1 + 0.2 + 0.25


async def test_the_total_budget_stops_further_attempts() -> None:
    """Each attempt on a fails after 200 ms; the 300 ms budget leaves the retry 90 ms, which
    runs out as a timeout, and nothing starts after that."""
    retries = "{same_deployment: 5, backoff_initial_s: 0.000001, backoff_max_s: 0.000001, total_budget_s: 0.3}"
    gw = gateway(config(retries), {"a": [Fail(pb.OUTCOME_OVERLOADED, delay=0.2)] * 10})
    took, error = await timed_failure(gw)
    assert took <= 0.3
    assert isinstance(error, UpstreamFailed) and "retry budget" in str(error)
    assert [(a.deployment, a.outcome) for a in error.attempts] == [
        ("a", pb.OUTCOME_OVERLOADED),
        ("a", pb.OUTCOME_TIMEOUT),
    ]
    assert gw.calls("b") == 0


async def test_a_request_waits_for_the_first_deployment_to_come_back() -> None:
    """Both are rate limited (200 and 300 ms): the call waits the shorter and routes again."""
    script = {
        "a": [Fail(pb.OUTCOME_RATE_LIMITED, retry_after_s=0.2)],
        "b": [Fail(pb.OUTCOME_RATE_LIMITED, retry_after_s=0.3)],
    }
    took, response = await timed_chat(gateway(config("{wait_for_capacity_s: 1}"), script))
    assert took == pytest.approx(2 * CALL_S + 0.2 + COOL_DOWN_SLACK_S + CALL_S)
    assert listed(response) == [("a", "RATE_LIMITED"), ("b", "RATE_LIMITED"), ("a", "OK")]


@pytest.mark.parametrize(
    ("retries", "deadline_s"),
    [("{}", None), ("{wait_for_capacity_s: 0.1}", None), ("{wait_for_capacity_s: 5}", 0.15)],
    ids=["off-by-default", "wait-longer-than-allowed", "deadline-too-close"],
)
async def test_a_wait_for_capacity_it_cannot_afford_fails_at_once(retries: str, deadline_s: float | None) -> None:
    script = {
        "a": [Fail(pb.OUTCOME_RATE_LIMITED, retry_after_s=0.2)],
        "b": [Fail(pb.OUTCOME_RATE_LIMITED, retry_after_s=0.3)],
    }
    took, error = await timed_failure(gateway(config(retries), script), deadline_s)
    assert took == 2 * CALL_S
    assert isinstance(error, UpstreamFailed) and error.retry_after_s == 0.2


async def test_a_zero_retry_after_waits_at_least_50_ms_a_round() -> None:
    """Rounds of two 10 ms attempts, 50 ms apart (and the slack), until the next wait would pass
    the 300 ms allowance."""
    script = {d: [Fail(pb.OUTCOME_RATE_LIMITED, retry_after_s=0)] * 10 for d in "ab"}
    gw = gateway(config("{wait_for_capacity_s: 0.3}"), script)
    took, _ = await timed_failure(gw)
    rounds = gw.calls("a")
    assert (rounds, gw.calls("b")) == (5, 5)
    assert took == pytest.approx(rounds * 2 * CALL_S + (rounds - 1) * (0.05 + COOL_DOWN_SLACK_S))


async def test_capacity_is_waited_for_only_when_every_attempt_was_rate_limited() -> None:
    script = {"a": [Fail(pb.OUTCOME_SERVER_ERROR)], "b": [Fail(pb.OUTCOME_RATE_LIMITED, retry_after_s=0.2)]}
    took, _ = await timed_failure(gateway(config("{wait_for_capacity_s: 1}"), script))
    assert took == 2 * CALL_S


HEDGED = """
policies:
  - id: hedged
    route_to: {groups: [chat]}
    hedge: {min_delay_ms: 150, max_delay_ms: 150, max_hedges: 1}
"""


async def test_a_hedge_starts_exactly_at_its_delay_and_wins() -> None:
    gw = gateway(config("{}", HEDGED), {"a": [Hang()]})
    took, response = await timed_chat(gw)
    assert took == 0.15 + CALL_S
    assert response.served.deployment == "b"
    assert listed(response) == [("a", "CANCELLED"), ("b", "OK")]


async def test_an_answer_before_the_hedge_delay_starts_no_hedge() -> None:
    gw = gateway(config("{}", HEDGED), {"a": [Answer(delay=0.149)]})
    took, response = await timed_chat(gw)
    assert took == 0.149
    assert listed(response) == [("a", "OK")]
    assert gw.calls("b") == 0


@pytest.mark.parametrize("margin_s", [0.005, 0.05, 0.2])
async def test_the_deadline_margin_is_kept_back_from_the_clients_deadline(margin_s: float) -> None:
    """A hanging attempt ends `margin_s` before the client's 500 ms deadline, leaving that long
    for the error that lists it to reach the client."""
    gw = gateway(config(f"{{deadline_margin_s: {margin_s}}}"), {"a": [Hang()], "b": [Hang()]})
    took, error = await timed_failure(gw, deadline_s=0.5)
    assert took == pytest.approx(0.5 - margin_s)
    assert isinstance(error, UpstreamFailed) and error.deadline_exceeded
