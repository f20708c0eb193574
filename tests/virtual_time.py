"""An event loop whose time is virtual: it moves only when every task is waiting on a timer,
and then jumps straight to the next one. Sleeps, timeouts and hedge delays take no wall time and
happen in exactly the order their times say, so tests of the attempt loop neither sleep nor
race the machine's load. Inject `loop.time` as the engine's clock to measure latencies on it too.

For code without real I/O: a socket read that is pending while no task is ready would let
time jump past it."""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable
from typing import Any


class _JumpingSelector(selectors.DefaultSelector):
    """Polls instead of blocking; when nothing is ready, moves the loop's time to the next timer."""

    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualTimeLoop | None = None

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if ready or timeout is None or timeout <= 0:
            # Nothing scheduled at all: wait for real I/O (a wake-up from another thread).
            return ready if ready or timeout is not None else super().select(None)
        assert self.loop is not None
        self.loop.advance(timeout)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        selector = _JumpingSelector()
        super().__init__(selector)
        selector.loop = self
        self._virtual_now = 0.0
        self._followers: list[Callable[[float], None]] = []

    def time(self) -> float:
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        self._virtual_now += seconds
        for follow in self._followers:
            follow(seconds)

    def follow(self, advance: Callable[[float], None]) -> None:
        """Moves another clock with this one, e.g. a router's manual clock (`Router.advance_clock`)."""
        self._followers.append(advance)

    def __repr__(self) -> str:
        return f"<VirtualTimeLoop now={self._virtual_now:.6f}>"


def new_virtual_time_loop(*_: Any) -> VirtualTimeLoop:
    return VirtualTimeLoop()
