"""Deadlines for waits that nearly always end long before them: a write the client's flow-control
window takes at once, an upstream's next chunk. `asyncio.timeout` arms a timer and cancels it for
every such wait, a few microseconds each, several times per streamed event; here a wait only notes
its deadline, and one timer per event loop, ticking while any wait is noted, cancels the tasks
whose deadline has passed. A deadline fires up to one tick late.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")

# How often deadlines are checked, and so how late one may fire.
TICK_S = 0.02


class _Watchdog:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._deadlines: dict[asyncio.Task[object], float] = {}
        self._fired: set[asyncio.Task[object]] = set()
        self._ticking = False

    async def within(self, awaitable: Awaitable[T], seconds: float) -> T:
        task = asyncio.current_task()
        if task is None or task in self._deadlines:  # no task to cancel, or a wait within a wait
            async with asyncio.timeout(seconds):
                return await awaitable
        self._deadlines[task] = self._loop.time() + seconds
        if not self._ticking:
            self._ticking = True
            self._loop.call_later(TICK_S, self._tick)
        try:
            return await awaitable
        except asyncio.CancelledError:
            if task in self._fired:
                self._fired.discard(task)
                # Ours, unless someone else cancelled the task too: then theirs goes on.
                if task.uncancel() == 0:
                    raise TimeoutError from None
            raise
        finally:
            del self._deadlines[task]
            if task in self._fired:  # fired as the wait ended: the cancel is ours to take back
                self._fired.discard(task)
                task.uncancel()

    def _tick(self) -> None:
        now = self._loop.time()
        for task, deadline in self._deadlines.items():
            if deadline <= now and task not in self._fired:
                self._fired.add(task)
                task.cancel()
        if self._deadlines:
            self._loop.call_later(TICK_S, self._tick)
        else:
            self._ticking = False


_watchdogs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Watchdog] = weakref.WeakKeyDictionary()


async def within(awaitable: Awaitable[T], seconds: float) -> T:
    """`await awaitable`, raising TimeoutError if it has not ended `seconds` from now (or up to
    one tick later)."""
    loop = asyncio.get_running_loop()
    watchdog = _watchdogs.get(loop)
    if watchdog is None:
        watchdog = _watchdogs[loop] = _Watchdog(loop)
    return await watchdog.within(awaitable, seconds)
