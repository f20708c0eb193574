"""Runs one request's attempts to the first answer: one at a time, or hedged.

Both RPCs go through `Attempter.first_answer`; they differ only in what an attempt is (a whole
completion, or a stream up to its first event) and what they do with the answer. Every attempt
is recorded with the router and listed in the request's attempts, and every lease is settled:
by the outcome, given back when the attempt is abandoned, or handed to the caller with the winner.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import router_core
from service.attempts import Attempts, Estimate, Recorder, Schedule, Slot, TimeRemaining, Won
from service.config import RetrySettings
from service.outcomes import UpstreamError
from service.responses import DeploymentConfig

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
        time_remaining: TimeRemaining,
        start: Start[R],
        discard: Discard[R],
        *,
        streaming: bool,
    ) -> Won[R]:
        """The first attempt to answer. `start` runs an attempt up to its first answer, raising
        UpstreamError when it fails; `discard` closes an answer that lost a hedged race."""
        schedule = Schedule(self.router, self.deployments, self.retries, decision, tokens, attempts, time_remaining)
        try:
            if decision.hedge is None:
                return await self._one_at_a_time(schedule, attempts, start, time_remaining)
            race = _Race(self, schedule, attempts, start, discard, decision.hedge, streaming=streaming)
            return await race.run(time_remaining)
        finally:
            schedule.close()

    async def _one_at_a_time(
        self, schedule: Schedule, attempts: Attempts, start: Start[R], time_remaining: TimeRemaining
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
        raise attempts.failure(time_remaining, budget_spent=schedule.out_of_time)

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
    that one; when none is left running, the schedule picks the next attempt as usual."""

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

    async def run(self, time_remaining: TimeRemaining) -> Won[R]:
        try:
            slot = self._schedule.next_candidate()
            while True:
                if not self._running:
                    if slot is None:
                        raise self._attempts.failure(time_remaining, budget_spent=self._schedule.out_of_time)
                    self._launch(slot)
                done, _ = await asyncio.wait(
                    self._running, timeout=self._until_hedge(), return_when=asyncio.FIRST_COMPLETED
                )
                if not done:
                    self._start_hedge()
                    continue
                won, failed, fatal = await self._settle(done)
                if won is not None:
                    await self._cancel_running("cancelled: another attempt answered first")
                    return won
                if fatal:
                    raise self._attempts.failure(time_remaining, budget_spent=self._schedule.out_of_time)
                if not self._running and failed is not None:
                    slot = await self._schedule.after(*failed)
        finally:
            await self._cancel_running("cancelled: the request ended")

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

    async def _settle(
        self, done: set[asyncio.Task[R]]
    ) -> tuple[Won[R] | None, tuple[Slot, UpstreamError] | None, bool]:
        """The winner among attempts that just ended, if any; else the last failure, and whether
        a failure ends the request."""
        won: Won[R] | None = None
        failed: tuple[Slot, UpstreamError] | None = None
        fatal = False
        for task in done:
            slot = self._running.pop(task)
            error = task.exception()
            if error is None:
                if won is None:
                    won = Won(slot, task.result())
                else:
                    await self._abandon(slot, task.result(), "cancelled: another attempt answered first")
            elif isinstance(error, UpstreamError):
                self._attempts.add_failure(self._attempter.record.failure(slot, error), error)
                fatal = fatal or not self._schedule.accepts(slot, error)
                failed = (slot, error)
            else:
                self._attempter.router.release(slot.lease)
                raise error
        return won, failed, fatal

    async def _abandon(self, slot: Slot, answer: R, why: str) -> None:
        await self._discard(answer)
        self._attempter.router.release(slot.lease)
        self._attempts.add_cancelled(slot, why)

    async def _cancel_running(self, why: str) -> None:
        """Cancels the attempts still running, closing their upstream calls, and gives their leases back."""
        if not self._running:
            return
        running = list(self._running.items())
        self._running.clear()
        for task, _ in running:
            task.cancel()
        ended = await asyncio.gather(*(task for task, _ in running), return_exceptions=True)
        for (_, slot), result in zip(running, ended, strict=True):
            if isinstance(result, UpstreamError):
                # It failed before the cancellation reached it.
                self._attempts.add_failure(self._attempter.record.failure(slot, result), result)
            elif isinstance(result, BaseException):
                self._attempter.router.release(slot.lease)
                self._attempts.add_cancelled(slot, why)
            else:
                await self._abandon(slot, result, why)
