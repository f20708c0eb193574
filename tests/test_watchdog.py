"""Deadlines kept by one ticking watchdog per loop instead of a timer per wait."""

from __future__ import annotations

import asyncio
import time

import pytest

from service.watchdog import TICK_S, within


async def test_a_wait_that_ends_in_time_returns_its_result() -> None:
    assert await within(asyncio.sleep(0.01, result="done"), 1.0) == "done"


async def test_a_wait_past_its_deadline_times_out_about_then() -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await within(asyncio.sleep(10), 0.1)
    waited = time.monotonic() - started
    # Not before the deadline (give or take the loop clock's granularity), not long after it: a
    # tick or so late, and a loaded machine's scheduling.
    assert 0.09 <= waited < 1.0, waited
    # The task's cancellation was taken back: it goes on awaiting as usual.
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    await asyncio.sleep(0.01)


async def test_a_cancel_from_outside_stays_a_cancel() -> None:
    task = asyncio.create_task(within(asyncio.sleep(10), 5.0))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_cancel_from_outside_at_the_deadline_is_not_swallowed() -> None:
    async def wait() -> None:
        await within(asyncio.sleep(10), 0.05)

    task = asyncio.create_task(wait())
    await asyncio.sleep(0.05 + 2 * TICK_S)  # the watchdog has fired, or is about to
    task.cancel()
    with pytest.raises((asyncio.CancelledError, TimeoutError)):
        await task
    assert task.done()


async def test_many_waits_each_keep_their_own_deadline() -> None:
    async def wait(index: int) -> str:
        try:
            return await within(asyncio.sleep(0.02 if index % 2 else 10, result="ok"), 0.2)
        except TimeoutError:
            return "timeout"

    results = await asyncio.gather(*(wait(i) for i in range(200)))
    assert results == ["timeout" if i % 2 == 0 else "ok" for i in range(200)]


async def test_a_wait_within_a_wait_keeps_both_deadlines() -> None:
    async def inner() -> None:
        await within(asyncio.sleep(10), 0.05)

    with pytest.raises(TimeoutError):
        await within(inner(), 5.0)
