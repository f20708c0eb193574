"""Runs one request's attempts to the first answer: one at a time, or hedged.

Both RPCs go through `Attempter.first_answer`; they differ only in what an attempt is (a whole
completion, or a stream up to its first event) and what they do with the answer. Every attempt
is recorded with the router and listed in the request's attempts, and every lease is settled:
by the outcome, given back when the attempt is abandoned, or handed to the caller with the winner.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import router_core
from service.attempts import Attempts, Deadline, Estimate, Recorder, Schedule, Slot, Won
from service.config import RetrySettings
from service.outcomes import UpstreamError
from service.responses import DeploymentConfig

log = logging.getLogger(__name__)
# Closings of late answers still running, kept so that they are not garbage collected midway.
_closing: set[asyncio.Future[None]] = set()
R = TypeVar("R")
Start = Callable[[Slot], Awaitable[R]]
Discard = Callable[[R], Awaitable[None]]


class Attempter:
    """The request-independent half of the attempt loop: the router, the deployments, the retry settings."""

    def __init__(
        self, router: router_core.Router, deployments: dict[str, DeploymentConfig], retries: RetrySettings
    ) -> None:
        self.router = router
        self.deployments = deployments
        self.retries = retries
        self.record = Recorder(router)

    async def first_answer(
        self,
        decision: router_core.Decision,
        tokens: Estimate,
        attempts: Attempts,
        deadline: Deadline,
        start: Start[R],
        discard: Discard[R],
        *,
        streaming: bool,
    ) -> Won[R]:
        """The first attempt to answer. `start` runs an attempt up to its first answer, raising
        UpstreamError when it fails; `discard` closes an answer that lost a hedged race."""
        schedule = Schedule(self.router, self.deployments, self.retries, decision, tokens, attempts, deadline)
        try:
            if decision.hedge is None:
                return await self._one_at_a_time(schedule, attempts, start, deadline)
            race = _Race(self, schedule, attempts, start, discard, decision.hedge, streaming=streaming)
            return await race.run(deadline)
        finally:
            schedule.close()

    async def _one_at_a_time(
        self, schedule: Schedule, attempts: Attempts, start: Start[R], deadline: Deadline
    ) -> Won[R]:
        slot = schedule.next_candidate()
        while slot is not None:
            slot.started = time.perf_counter()
            try:
                answer = await start(slot)
            except UpstreamError as error:
                attempts.add_failure(self.record.failure(slot, error), error)
                if not schedule.accepts(slot, error):
                    break
                slot = await schedule.after(slot, error)
            except BaseException:
                self.router.release(slot.lease)
                raise
            else:
                return Won(slot, answer)
        raise attempts.failure(deadline, budget_spent=schedule.out_of_time)

    def hedge_delay_s(self, slot: Slot, hedge: router_core.Hedge, *, streaming: bool) -> float:
        """How long `slot` may go without its first answer before a hedge starts: its deployment's
        tail latency (to the first token, for streams) within the policy's bounds."""
        tail_ms = self.router.latency_tail_ms(slot.deployment.id, first_token=streaming)
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

    Leases are never held across an await without a way back: whatever ends the race (a winner,
    a failure, the client going away at any await), every lease but the winner's is recorded or
    released before anything is awaited, and answers that lost are closed afterwards."""

    def __init__(
        self,
        attempter: Attempter,
        schedule: Schedule,
        attempts: Attempts,
        start: Start[R],
        discard: Discard[R],
        hedge: router_core.Hedge,
        *,
        streaming: bool,
    ) -> None:
        self._attempter = attempter
        self._schedule = schedule
        self._attempts = attempts
        self._start = start
        self._discard = discard
        self._hedge = hedge
        self._streaming = streaming
        self._running: dict[asyncio.Task[R], Slot] = {}
        self._hedges_left = hedge.max_hedges
        self._ended = False  # a failure ended the request: no attempt starts any more
        # Answers that lost (or were left when the race ended), still to close.
        self._lost: list[R] = []

    async def run(self, deadline: Deadline) -> Won[R]:
        won: Won[R] | None = None
        try:
            slot = self._schedule.next_candidate()
            while True:
                if slot is not None:
                    self._launch(slot)
                    slot = None
                if not self._running:
                    raise self._attempts.failure(deadline, budget_spent=self._schedule.out_of_time)
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
                    slot = await self._schedule.after(*failed)
        finally:
            if won is not None:
                # The race ended (cancelled, or a crash) before the winner was handed over.
                self._attempter.router.release(won.slot.lease)
                self._lost.append(won.answer)
            await self._stop_running("cancelled: the request ended")

    def _launch(self, slot: Slot) -> None:
        slot.started = time.perf_counter()
        self._running[asyncio.ensure_future(self._start(slot))] = slot

    def _until_hedge(self) -> float | None:
        """Seconds until the newest running attempt is due a hedge; None when no hedge is left."""
        if self._hedges_left <= 0:
            return None
        newest = next(reversed(self._running.values()))
        delay = self._attempter.hedge_delay_s(newest, self._hedge, streaming=self._streaming)
        return max(0.0, newest.started + delay - time.perf_counter())

    def _start_hedge(self) -> None:
        hedge = self._schedule.next_candidate()
        if hedge is None:
            self._hedges_left = 0  # no candidate left to hedge with
            return
        self._hedges_left -= 1
        self._launch(hedge)

    def _settle(self, done: set[asyncio.Task[R]]) -> tuple[Won[R] | None, tuple[Slot, UpstreamError] | None, bool]:
        """Settles the attempts that just ended, earliest started first: the winner, if any (its
        lease still held); else the last failure, and whether a failure ends the request. An
        unexpected exception is raised once every one of them is settled."""
        won: Won[R] | None = None
        failed: tuple[Slot, UpstreamError] | None = None
        fatal = False
        crash: BaseException | None = None
        for task in sorted(done, key=lambda task: self._running[task].started):
            slot = self._running.pop(task)
            outcome = self._outcome(task, slot, "cancelled: another attempt answered first")
            if isinstance(outcome, UpstreamError):
                fatal = fatal or not self._schedule.accepts(slot, outcome)
                failed = (slot, outcome)
            elif isinstance(outcome, BaseException):
                crash = crash or outcome
            elif outcome is not None:
                if won is None:
                    won = Won(slot, outcome[0])
                else:
                    self._abandon(slot, outcome[0], "cancelled: another attempt answered first")
        if crash is not None:
            if won is not None:
                self._abandon(won.slot, won.answer, "cancelled: another attempt crashed")
            raise crash
        return won, failed, fatal

    def _outcome(self, task: asyncio.Task[R], slot: Slot, why: str) -> tuple[R] | UpstreamError | BaseException | None:
        """An ended attempt's answer (its lease still held), or its failure (recorded), or the
        exception it crashed with (lease released); None when it was cancelled (released, listed)."""
        if task.cancelled():
            self._attempter.router.release(slot.lease)
            self._attempts.add_cancelled(slot, why)
            return None
        error = task.exception()
        if error is None:
            return (task.result(),)
        if isinstance(error, UpstreamError):
            self._attempts.add_failure(self._attempter.record.failure(slot, error), error)
            return error
        self._attempter.router.release(slot.lease)
        return error

    def _abandon(self, slot: Slot, answer: R, why: str) -> None:
        self._attempter.router.release(slot.lease)
        self._attempts.add_cancelled(slot, why)
        self._lost.append(answer)

    async def _stop_running(self, why: str) -> None:
        """Cancels the attempts still running and settles their leases at once, then waits for them
        to end (each closes its own upstream call) and closes the answers that lost."""
        running = list(self._running.items())
        self._running.clear()
        pending: list[asyncio.Task[R]] = []
        for task, slot in running:
            if task.done():
                outcome = self._outcome(task, slot, why)
                if isinstance(outcome, tuple):
                    self._abandon(slot, outcome[0], why)
            else:
                task.cancel()
                # Should this wait be cancelled too, the task still ends by itself: what it
                # ends with is then looked at (and a late answer closed) by the callback.
                task.add_done_callback(self._after_cancel)
                self._attempter.router.release(slot.lease)
                self._attempts.add_cancelled(slot, why)
                pending.append(task)
        if pending:
            # Not gather: cancelling this wait must not cancel the attempts' own cleanup.
            await asyncio.wait(pending)
        while self._lost:
            # One at a time off the list: if this is cancelled, the rest stay to be closed.
            answer = self._lost.pop()
            try:
                await self._discard(answer)
            except Exception:  # closing a lost answer must not fail the request, nor skip the rest
                log.exception("closing an attempt that lost a hedged race failed")

    def _after_cancel(self, task: asyncio.Task[R]) -> None:
        """A cancelled attempt ended: retrieve its exception (so none goes unseen), and close an
        answer that came before the cancellation reached it."""
        if task.cancelled():
            return
        error = task.exception()
        if error is None:
            closing = asyncio.ensure_future(self._discard(task.result()))
            _closing.add(closing)
            closing.add_done_callback(_closing.discard)
        elif not isinstance(error, UpstreamError):
            log.error("a cancelled attempt crashed", exc_info=error)
