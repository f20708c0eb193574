"""The attempt loop (service/attempts) against a real router and scripted attempts: leases are
settled exactly once on every path of a hedged race (a winner, a crash, a fatal failure, the
client leaving mid-cleanup), answers that lost are closed, and retries in place are counted per
deployment however attempts overlap. Time is virtual (tests/virtual_time.py): a hedge fires after
exactly 20 ms and the slow attempts take ten times longer, with no wall-clock sleep."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc
import pytest

import router_core
from service.api.switchboard.v1 import gateway_pb2 as pb
from service.attempts import NO_DEADLINE, Attempt, AttemptLog, Estimate, Schedule, Won, first_answer
from service.config import parse_config
from service.errors import UpstreamFailed
from service.outcomes import UpstreamError, Usage

pytestmark = pytest.mark.virtual_time

HEDGE_MS = 20
SLOW_S = 0.2


def config_yaml(names: str, retries: str = "") -> str:
    deployments = "".join(
        f"""
      - id: {name}
        type: echo
        model: echo
        context_window: 8192
        priority: {i}"""
        for i, name in enumerate(names)
    )
    return f"""
default_group: chat
{retries}
model_groups:
  - name: chat
    strategy: priority
    deployments:{deployments}
policies:
  - id: hedged
    route_to: {{groups: [chat]}}
    hedge: {{min_delay_ms: {HEDGE_MS}, max_delay_ms: {HEDGE_MS}, max_hedges: 1}}
"""


@dataclass
class Stream:
    """An answer holding something open, as a stream's does."""

    deployment: str
    closed: bool = False

    async def aclose(self) -> None:
        self.closed = True


@dataclass
class Scripted:
    """An opening whose attempts do what the test says."""

    run: Callable[[Attempt], Awaitable[Stream]]
    streaming: bool = True

    async def start(self, attempt: Attempt) -> Stream:
        return await self.run(attempt)

    async def discard(self, answer: Stream) -> None:
        await answer.aclose()


@dataclass
class Setup:
    router: router_core.Router
    config_text: str
    log: AttemptLog = field(default_factory=AttemptLog)

    def in_flight(self) -> dict[str, int]:
        return {stats.deployment: stats.in_flight for stats in self.router.stats() if stats.in_flight}

    def listed(self) -> list[tuple[str, str]]:
        return [(a.deployment, pb.Outcome.Name(a.outcome).removeprefix("OUTCOME_")) for a in self.log.records]

    async def first_answer(self, start: Callable[[Attempt], Awaitable[Stream]]) -> Won[Stream]:
        config = parse_config(self.config_text)
        schedule = Schedule(
            self.router,
            {dep.id: dep for dep in config.deployments()},
            config.retries,
            self.router.route("chat"),
            Estimate(10, 10),
            self.log,
            NO_DEADLINE,
            asyncio.get_running_loop().time,
        )
        return await first_answer(schedule, Scripted(start))


def setup(names: str = "ab", retries: str = "") -> Setup:
    text = config_yaml(names, retries)
    return Setup(parse_config(text).new_router(), text)


async def test_the_client_leaving_while_the_loser_closes_settles_every_lease_and_closes_the_winner() -> None:
    """a is slow and slow to cancel; b answers at the hedge. The client leaves while a's
    cancellation is still under way: the winner was never handed over, so it is closed too."""
    race = setup()
    answers: list[Stream] = []

    async def start(attempt: Attempt) -> Stream:
        if attempt.deployment.id == "a":
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                await asyncio.sleep(SLOW_S)  # closing the upstream call takes a while
                raise
        answers.append(Stream(attempt.deployment.id))
        return answers[-1]

    task = asyncio.ensure_future(race.first_answer(start))
    await asyncio.sleep(HEDGE_MS / 1000 * 3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [answer.closed for answer in answers] == [True]
    assert race.in_flight() == {}
    await asyncio.sleep(SLOW_S * 1.5)  # a's own cleanup ends by itself
    assert race.in_flight() == {}


async def test_a_hedge_wins_and_the_loser_is_listed_cancelled_with_its_lease_back() -> None:
    race = setup()

    async def start(attempt: Attempt) -> Stream:
        if attempt.deployment.id == "a":
            await asyncio.sleep(10)
        return Stream(attempt.deployment.id)

    won = await race.first_answer(start)
    assert won.attempt.deployment.id == "b"
    assert race.listed() == [("a", "CANCELLED")]
    assert race.in_flight() == {"b": 1}  # the winner's lease is the caller's to settle
    won.attempt.ok(Usage())
    assert race.in_flight() == {}


async def test_answers_at_the_same_moment_keep_the_earlier_started_and_close_the_other() -> None:
    """b's start lets a answer too: both are done when the race next looks."""
    race = setup()
    answers: list[Stream] = []
    release = asyncio.Event()

    async def start(attempt: Attempt) -> Stream:
        if attempt.deployment.id == "b":
            release.set()
        await release.wait()
        answers.append(Stream(attempt.deployment.id))
        return answers[-1]

    won = await race.first_answer(start)
    assert won.attempt.deployment.id == "a"
    assert {answer.deployment: answer.closed for answer in answers} == {"a": False, "b": True}
    assert race.listed() == [("b", "CANCELLED")]
    won.attempt.ok(Usage())
    assert race.in_flight() == {}


@pytest.mark.parametrize("trial", range(10))
async def test_a_crash_next_to_an_answer_releases_both_leases_and_closes_the_answer(trial: int) -> None:
    race = setup()
    answers: list[Stream] = []
    b_started = asyncio.Event()

    async def start(attempt: Attempt) -> Stream:
        if attempt.deployment.id == "b":
            b_started.set()
            await asyncio.sleep(0)
            raise RuntimeError("a provider bug")
        await b_started.wait()
        await asyncio.sleep(0)
        answers.append(Stream(attempt.deployment.id))
        return answers[-1]

    with pytest.raises(RuntimeError, match="a provider bug"):
        await race.first_answer(start)
    assert all(answer.closed for answer in answers)
    assert race.in_flight() == {}


async def test_a_failure_that_ends_the_request_lets_the_running_attempt_answer() -> None:
    """The hedge b is refused as a bad request (say, a parameter its provider lacks) while a is
    still running: nothing new starts, but a may still answer, and does."""
    race = setup()

    async def start(attempt: Attempt) -> Stream:
        if attempt.deployment.id == "b":
            raise UpstreamError(pb.OUTCOME_BAD_REQUEST, "unsupported parameter", status=400)
        await asyncio.sleep(SLOW_S)
        return Stream("a")

    won = await race.first_answer(start)
    assert won.attempt.deployment.id == "a"
    assert race.listed() == [("b", "BAD_REQUEST")]
    won.attempt.ok(Usage())
    assert race.in_flight() == {}


async def test_the_failure_that_ended_the_request_decides_its_status() -> None:
    """b's bad request ends the request (c is never tried); a then fails too, retriably. The
    status is b's (INVALID_ARGUMENT: do not retry), not a's (UNAVAILABLE), and both are listed."""
    race = setup("abc")
    calls: list[str] = []

    async def start(attempt: Attempt) -> Stream:
        calls.append(attempt.deployment.id)
        if attempt.deployment.id == "b":
            raise UpstreamError(pb.OUTCOME_BAD_REQUEST, "bad request", status=400)
        await asyncio.sleep(SLOW_S)
        raise UpstreamError(pb.OUTCOME_SERVER_ERROR, "boom", status=500)

    with pytest.raises(UpstreamFailed) as caught:
        await race.first_answer(start)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [(a.deployment, pb.Outcome.Name(a.outcome)) for a in caught.value.attempts] == [
        ("b", "OUTCOME_BAD_REQUEST"),
        ("a", "OUTCOME_SERVER_ERROR"),
    ]
    assert calls == ["a", "b"]
    assert race.in_flight() == {}


async def test_a_client_leaving_while_losers_close_leaves_no_error_unseen(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The winner b is handed over while a's cancellation is slow; the client leaves during that
    wait. a's cleanup then fails: its error is still retrieved (no 'never retrieved' warning)."""
    race = setup()
    loop_errors: list[dict[str, object]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, context: loop_errors.append(context))

    async def start(attempt: Attempt) -> Stream:
        if attempt.deployment.id == "a":
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                await asyncio.sleep(SLOW_S / 4)
                raise ConnectionResetError("close failed") from None
        return Stream("b")

    task = asyncio.ensure_future(race.first_answer(start))
    await asyncio.sleep(HEDGE_MS / 1000 * 3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(SLOW_S / 2)  # a's cleanup ends by itself
    gc.collect()
    await asyncio.sleep(0)
    assert not [c for c in loop_errors if "never retrieved" in str(c.get("message"))]
    assert "a cancelled attempt crashed" in caplog.text
    assert race.in_flight() == {}


async def test_retries_in_place_are_counted_per_deployment_across_a_race() -> None:
    """same_deployment: 1 allows a twice, even when a hedge of b starts between a's retry and
    its failure (a shared counter reset by the hedge allowed a third call)."""
    race = setup("abc", "retries: {same_deployment: 1, backoff_initial_s: 0.001, backoff_max_s: 0.001}")
    calls: list[str] = []

    async def start(attempt: Attempt) -> Stream:
        calls.append(attempt.deployment.id)
        if calls == ["a", "a"]:
            await asyncio.sleep(SLOW_S)  # the retry is slow: b hedges it
        if attempt.deployment.id == "c":
            return Stream("c")
        raise UpstreamError(pb.OUTCOME_SERVER_ERROR, "boom", status=500)

    won = await race.first_answer(start)
    assert won.attempt.deployment.id == "c"
    assert calls.count("a") == 2
    # b failed while a's retry ran: the race waited for a, then moved on from a.
    assert calls == ["a", "a", "b", "c"]
    log = race.log
    assert (log.retries, log.hedges, log.fallbacks) == (1, 1, 1), "a again, b alongside, then c"
    won.attempt.ok(Usage())
    assert race.in_flight() == {}
