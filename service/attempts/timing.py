"""Time for one call's attempts: the deadline, the room it leaves for an attempt, the wait
before a retry in place.

Time is read from an injected clock (`Clock`, `time.perf_counter` in production) and waited on
with asyncio's own sleeps and timeouts. A test that runs on an event loop whose time is virtual
and injects that loop's `time` as the clock controls both, so the timing tests never sleep on
the wall clock.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from service.config import RetrySettings
from service.outcomes import OUTCOME_CLASSES, UpstreamError

# An attempt with less time than this left is not started.
MIN_ATTEMPT_S = 0.01
# Added to a wait for a deployment's cool-down to end: asyncio's timers may fire a millisecond
# early against the router's monotonic clock (uvloop reads a clock cached at the start of each
# loop iteration), and a wait that ends just before the cool-down finds the deployment still out.
COOL_DOWN_SLACK_S = 0.002

Clock = Callable[[], float]
"""Seconds on a monotonic scale; only differences between two readings mean anything."""
SYSTEM_CLOCK: Clock = time.perf_counter
TimeRemaining = Callable[[], float | None]
"""Seconds left before a deadline; None when there is none."""


@dataclass(frozen=True, slots=True)
class Deadline:
    """How long a request has left: by the client's own deadline, and by the sooner of that and
    the retry settings' total budget, counted from the request's start. `margin_s` is kept back
    from both, so that the answer (or the error listing every attempt) reaches the client before
    its own timer fires (retries.deadline_margin_s)."""

    client: TimeRemaining
    remaining: TimeRemaining
    margin_s: float = 0.0

    @classmethod
    def starting_now(
        cls, client: TimeRemaining, total_budget_s: float | None, clock: Clock, margin_s: float = 0.0
    ) -> Deadline:
        if total_budget_s is None:
            return cls(client, client, margin_s)
        ends = clock() + total_budget_s

        def remaining() -> float:
            left = client()
            own = ends - clock()
            return own if left is None else min(left, own)

        return cls(client, remaining, margin_s)

    def room(self, *, after_s: float = 0.0) -> bool:
        """Whether there is time for an attempt starting `after_s` from now."""
        return self._room(self.remaining(), after_s)

    def client_room(self) -> bool:
        """Whether the client's own deadline leaves time for another attempt."""
        return self._room(self.client(), 0.0)

    def budget(self, timeout_s: float) -> float | None:
        """Seconds the next attempt may take, or None if there is no room for one."""
        remaining = self.remaining()
        if remaining is None:
            return timeout_s
        if not self._room(remaining, 0.0):
            return None
        return min(timeout_s, remaining - self.margin_s)

    def _room(self, left: float | None, after_s: float) -> bool:
        return left is None or left - after_s - self.margin_s >= MIN_ATTEMPT_S


NO_DEADLINE = Deadline(client=lambda: None, remaining=lambda: None)


def retry_delay(retries: RetrySettings, retried: int, error: UpstreamError, deadline: Deadline) -> float | None:
    """How long to wait before trying the same deployment again, or None to move on."""
    if retried >= retries.same_deployment or not error.retriable:
        return None
    if OUTCOME_CLASSES.get(error.outcome) not in retries.retry_on:
        return None
    delay = random.uniform(0.0, min(retries.backoff_max_s, retries.backoff_initial_s * 2**retried))
    if error.retry_after_s is not None:
        if error.retry_after_s > retries.backoff_max_s:
            return None
        delay = max(delay, error.retry_after_s + COOL_DOWN_SLACK_S)
    return delay if deadline.room(after_s=delay) else None
