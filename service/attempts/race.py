"""Runs one request's attempts to the first answer: one at a time, or hedged.

`first_answer` returns the winning attempt with its answer, still open: the caller takes it
with `async with won:` and records its outcome there. Every other attempt is settled here.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from types import TracebackType
from typing import Generic, TypeVar

import router_core
from service.attempts.attempt import Attempt
from service.attempts.openings import Opening
from service.attempts.schedule import Schedule
from service.outcomes import UpstreamError

log = logging.getLogger(__name__)
# Closings of late answers still running, kept so that they are not garbage collected midway.
_closing: set[asyncio.Future[None]] = set()
R = TypeVar("R")


@dataclass(slots=True)
class Won(Generic[R]):
    """The attempt that got to its first answer, and that answer. `async with won:` owns both:
    leaving it settles the attempt if its outcome was not recorded and closes the answer."""

    attempt: Attempt
    answer: R
    opening: Opening[R]

    async def __aenter__(self) -> Won[R]:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        try:
            self.attempt.settle_on(error)
        finally:
            await self.opening.discard(self.answer)


async def first_answer(schedule: Schedule, opening: Opening[R]) -> Won[R]:
    """The first attempt to answer, its outcome still to record. Raises UpstreamFailed (every
    attempt listed) when none does."""
    try:
        hedge = schedule.decision.hedge
        if hedge is None:
            return await _one_at_a_time(schedule, opening)
        return await _Race(schedule, opening, hedge).run()
    finally:
        schedule.close()


async def _one_at_a_time(schedule: Schedule, opening: Opening[R]) -> Won[R]:
    attempt = schedule.next_candidate()
    while attempt is not None:
        try:
            with attempt.until_answer():
                answer = await opening.start(attempt)
        except UpstreamError as error:
            if not schedule.accepts(attempt, error):
                break
            attempt = await schedule.after(attempt, error)
        else:
            return Won(attempt, answer, opening)
    raise schedule.log.failure(schedule.deadline, budget_spent=schedule.out_of_time)


def hedge_delay_s(router: router_core.Router, attempt: Attempt, hedge: router_core.Hedge, *, streaming: bool) -> float:
    """How long `attempt` may go without its first answer before a hedge starts: its deployment's
    tail latency (to the first token, for streams) within the policy's bounds."""
    try:
        tail_ms = router.latency_tail_ms(attempt.deployment.id, first_token=streaming)
    except router_core.UnknownDeploymentError:  # removed by a reload since the call began
        tail_ms = None
    if tail_ms is None:
        tail_ms = hedge.max_delay_ms
    return min(max(tail_ms, hedge.min_delay_ms), hedge.max_delay_ms) / 1000


class _Race(Generic[R]):
    """Attempts that may overlap: when the newest one running has not answered by its hedge
    delay, the next candidate starts alongside (up to the policy's `max_hedges`). The first
    answer wins and the others are cancelled. A failure while another attempt runs waits for
    that one (or, when `max_hedges` allows, is replaced by the next candidate at once, the first
    attempt being late already); when none is left running, the schedule picks the next attempt
    as usual.

    Each attempt settles itself when it fails; one the race stops is given back before anything
    is awaited, whatever ends the race (a winner, a failure, the client going away at any
    await), and answers that lost are closed afterwards."""

    def __init__(self, schedule: Schedule, opening: Opening[R], hedge: router_core.Hedge) -> None:
        self._schedule = schedule
        self._opening = opening
        self._hedge = hedge
        self._running: dict[asyncio.Task[R], Attempt] = {}
        self._hedges_left = hedge.max_hedges
        self._ended = False  # a failure ended the request: no attempt starts any more
        # Answers that lost (or were left when the race ended), still to close.
        self._lost: list[R] = []

    async def run(self) -> Won[R]:
        won: Won[R] | None = None
        schedule = self._schedule
        try:
            attempt = schedule.next_candidate()
            while True:
                if attempt is not None:
                    self._launch(attempt)
                    attempt = None
                if not self._running:
                    raise schedule.log.failure(schedule.deadline, budget_spent=schedule.out_of_time)
                done, _ = await asyncio.wait(
                    self._running, timeout=self._until_hedge(), return_when=asyncio.FIRST_COMPLETED
                )
                if not done:
                    self._start_hedge()
                    continue
                won, failed, fatal = self._settle(done)
                if won is not None:
                    await self._stop_running("cancelled: another attempt answered first")
                    handed_over, won = won, None
                    return handed_over
                if fatal:
                    # Nothing new starts; an attempt already running may still answer (a hedge's
                    # provider may refuse what the first attempt's accepts).
                    self._ended = True
                    self._hedges_left = 0
                if failed is not None and not self._running and not self._ended:
                    attempt = await schedule.after(*failed)
        finally:
            if won is not None:
                # The race ended (cancelled, or a crash) before the winner was handed over.
                won.attempt.cancel("cancelled: the request ended")
                self._lost.append(won.answer)
            await self._stop_running("cancelled: the request ended")

    def _launch(self, attempt: Attempt) -> None:
        self._running[asyncio.ensure_future(self._answer(attempt))] = attempt

    async def _answer(self, attempt: Attempt) -> R:
        with attempt.until_answer():
            return await self._opening.start(attempt)

    def _until_hedge(self) -> float | None:
        """Seconds until the newest running attempt is due a hedge; None when no hedge is left."""
        if self._hedges_left <= 0:
            return None
        newest = next(reversed(self._running.values()))
        delay = hedge_delay_s(self._schedule.router, newest, self._hedge, streaming=self._opening.streaming)
        return max(0.0, delay - newest.elapsed())

    def _start_hedge(self) -> None:
        hedge = self._schedule.next_candidate()
        if hedge is None:
            self._hedges_left = 0  # no candidate left to hedge with
            return
        self._hedges_left -= 1
        self._schedule.log.hedges += 1
        self._launch(hedge)

    def _settle(self, done: set[asyncio.Task[R]]) -> tuple[Won[R] | None, tuple[Attempt, UpstreamError] | None, bool]:
        """Takes stock of the attempts that just ended, earliest started first: the winner, if
        any (still open); else the last failure, and whether a failure ends the request. An
        unexpected exception is raised once every one of them is settled."""
        won: Won[R] | None = None
        failed: tuple[Attempt, UpstreamError] | None = None
        fatal = False
        crash: BaseException | None = None
        for task in sorted(done, key=lambda task: self._running[task].started):
            attempt = self._running.pop(task)
            if task.cancelled():
                continue  # settled when it was cancelled
            error = task.exception()
            if isinstance(error, UpstreamError):
                fatal = fatal or not self._schedule.accepts(attempt, error)
                failed = (attempt, error)
            elif error is not None:
                crash = crash or error
            elif won is None:
                won = Won(attempt, task.result(), self._opening)
            else:
                self._abandon(attempt, task.result(), "cancelled: another attempt answered first")
        if crash is not None:
            if won is not None:
                self._abandon(won.attempt, won.answer, "cancelled: another attempt crashed")
            raise crash
        return won, failed, fatal

    def _abandon(self, attempt: Attempt, answer: R, why: str) -> None:
        attempt.cancel(why)
        self._lost.append(answer)

    async def _stop_running(self, why: str) -> None:
        """Cancels the attempts still running and gives their leases back at once, then waits for
        them to end (each closes its own upstream call) and closes the answers that lost."""
        running = list(self._running.items())
        self._running.clear()
        pending: list[asyncio.Task[R]] = []
        for task, attempt in running:
            if task.done():
                if not task.cancelled() and task.exception() is None:
                    self._abandon(attempt, task.result(), why)
                continue
            task.cancel()
            # Should this wait be cancelled too, the task still ends by itself: what it ends
            # with is then looked at (and a late answer closed) by the callback.
            task.add_done_callback(self._after_cancel)
            attempt.cancel(why)
            pending.append(task)
        if pending:
            # Not gather: cancelling this wait must not cancel the attempts' own cleanup.
            await asyncio.wait(pending)
        while self._lost:
            # One at a time off the list: if this is cancelled, the rest stay to be closed.
            answer = self._lost.pop()
            try:
                await self._opening.discard(answer)
            except Exception:  # closing a lost answer must not fail the request, nor skip the rest
                log.exception("closing an attempt that lost a hedged race failed")

    def _after_cancel(self, task: asyncio.Task[R]) -> None:
        """A cancelled attempt ended: retrieve its exception (so none goes unseen), and close an
        answer that came before the cancellation reached it."""
        if task.cancelled():
            return
        error = task.exception()
        if error is None:
            closing = asyncio.ensure_future(self._opening.discard(task.result()))
            _closing.add(closing)
            closing.add_done_callback(_closing.discard)
        elif not isinstance(error, UpstreamError):
            log.error("a cancelled attempt crashed", exc_info=error)
