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

# Time kept back from the client's deadline so that a timed-out attempt can
# still be reported in the error the client receives.
DEADLINE_MARGIN_S = 0.005
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
    the retry settings' total budget, counted from the request's start."""

    client: TimeRemaining
    remaining: TimeRemaining

    @classmethod
    def starting_now(cls, client: TimeRemaining, total_budget_s: float | None, clock: Clock) -> Deadline:
        if total_budget_s is None:
            return cls(client, client)
        ends = clock() + total_budget_s

        def remaining() -> float:
            left = client()
            own = ends - clock()
            return own if left is None else min(left, own)

        return cls(client, remaining)


NO_DEADLINE = Deadline(client=lambda: None, remaining=lambda: None)


def room_for_attempt(left: float | None, *, after_s: float = 0.0) -> bool:
    """Whether `left` seconds (None: no deadline) leave time for an attempt starting `after_s` from now."""
    return left is None or left - after_s - DEADLINE_MARGIN_S >= MIN_ATTEMPT_S


def attempt_budget(timeout_s: float, time_remaining: TimeRemaining) -> float | None:
    """Seconds the next attempt may take, or None if the deadline leaves no room for one."""
    remaining = time_remaining()
    if remaining is None:
        return timeout_s
    if not room_for_attempt(remaining):
        return None
    return min(timeout_s, remaining - DEADLINE_MARGIN_S)


def retry_delay(
    retries: RetrySettings, retried: int, error: UpstreamError, time_remaining: TimeRemaining
) -> float | None:
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
    return delay if room_for_attempt(time_remaining(), after_s=delay) else None
