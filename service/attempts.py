"""The attempt loop Chat and ChatStream share: which deployment to try next, retries in place,
fallbacks, hedges, deadlines and leases, and the record of every attempt.

An attempt runs up to its *first answer*: the whole completion of a unary call, the first event
of a stream. Until then a failure can still fall over to another candidate without the client
seeing it, so this is where the two RPCs are the same; `first_answer` returns the first attempt
to get there, and the caller settles its lease (a stream may still fail after it).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import router_core
from service import responses
from service.api.switchboard.v1 import gateway_pb2 as pb
from service.config import RetrySettings
from service.errors import UpstreamFailed
from service.outcomes import UpstreamError, Usage
from service.responses import DeploymentConfig

# Time kept back from the client's deadline so that a timed-out attempt can
# still be reported in the error the client receives.
DEADLINE_MARGIN_S = 0.005
# An attempt with less time than this left is not started.
MIN_ATTEMPT_S = 0.01

R = TypeVar("R")
TimeRemaining = Callable[[], float | None]
# The router's outcome classes are the proto's names without the prefix: OUTCOME_RATE_LIMITED → rate_limited.
OUTCOME_CLASSES = {
    value: name.removeprefix("OUTCOME_").lower()
    for name, value in pb.Outcome.items()
    # Listed in answers, never recorded: an attempt abandoned, or one never made.
    if value not in (pb.OUTCOME_UNSPECIFIED, pb.OUTCOME_CANCELLED, pb.OUTCOME_OUT_OF_ROTATION)
}


@dataclass(frozen=True, slots=True)
class Deadline:
    """How long a request has left: by the client's own deadline, and by the sooner of that and
    the retry settings' total budget, counted from the request's start."""

    client: TimeRemaining
    remaining: TimeRemaining

    @classmethod
    def starting_now(cls, client: TimeRemaining, total_budget_s: float | None) -> Deadline:
        return cls(client, within(client, total_budget_s))


@dataclass(frozen=True, slots=True)
class Estimate:
    """The tokens a request's leases reserve: its estimated input and its max output."""

    input: int
    max_output: int

    @property
    def total(self) -> int:
        return self.input + self.max_output


@dataclass(slots=True)
class Slot:
    """One attempt: the deployment, its tier in the decision, its lease and its time budget."""

    deployment: DeploymentConfig
    tier: int
    lease: router_core.Lease
    budget: float
    started: float = 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


@dataclass(slots=True)
class Won(Generic[R]):
    """The attempt that got to its first answer, and that answer. Its lease is the caller's to settle."""

    slot: Slot
    answer: R


@dataclass
class Attempts:
    """The attempts of one request so far, and the shortest Retry-After any of them got."""

    items: list[pb.Attempt] = field(default_factory=list)
    retry_after_s: float | None = None
    # The failure that ended the request at once (a bad request, a refusal), when one did: it,
    # not whatever was listed after it, decides the status.
    decisive: UpstreamError | None = None

    def add_skipped(self, deployment: str, why: UpstreamError) -> None:
        """A candidate passed over without a call (it could not do better than one that failed)."""
        self.add_failure(pb.Attempt(deployment=deployment, outcome=why.outcome, error_message=str(why)), why)

    def add_failure(self, attempt: pb.Attempt, error: UpstreamError) -> None:
        self.items.append(attempt)
        if error.retry_after_s is not None and (self.retry_after_s is None or error.retry_after_s < self.retry_after_s):
            self.retry_after_s = error.retry_after_s

    def add_cancelled(self, slot: Slot, why: str) -> None:
        self.items.append(
            pb.Attempt(
                deployment=slot.deployment.id,
                outcome=pb.OUTCOME_CANCELLED,
                latency=responses.duration(slot.elapsed()),
                error_message=why,
            )
        )

    def failure(self, deadline: Deadline, *, budget_spent: bool = False) -> UpstreamFailed:
        """The error for a request no attempt answered. DEADLINE_EXCEEDED only when the client's own
        deadline left no time; the gateway's retry budget running out is reported by the last outcome."""
        out_of_time = not room_for_attempt(deadline.client())
        if out_of_time:
            why = "the deadline left no time for another attempt"
        elif budget_spent:
            why = "the retry budget (total_budget_s) left no time for another attempt"
        else:
            why = "no candidate deployment answered"
        return UpstreamFailed(
            self.items,
            retry_after_s=self.retry_after_s,
            why=why,
            deadline_exceeded=out_of_time,
            outcome=None if self.decisive is None else self.decisive.outcome,
        )


class Recorder:
    """Settles attempts with the router, which learns health, latency and usage from them."""

    def __init__(self, router: router_core.Router) -> None:
        self.router = router

    def success(self, slot: Slot, first_token_s: float | None, usage: Usage) -> pb.Attempt:
        latency_s = slot.elapsed()
        self.router.record(
            slot.lease,
            outcome="ok",
            latency_ms=latency_s * 1000,
            ttft_ms=None if first_token_s is None else first_token_s * 1000,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
        )
        return pb.Attempt(deployment=slot.deployment.id, outcome=pb.OUTCOME_OK, latency=responses.duration(latency_s))

    def failure(self, slot: Slot, error: UpstreamError) -> pb.Attempt:
        latency_s = slot.elapsed()
        self.router.record(
            slot.lease,
            outcome=OUTCOME_CLASSES[error.outcome],
            latency_ms=latency_s * 1000,
            retry_after_s=error.retry_after_s,
        )
        return pb.Attempt(
            deployment=slot.deployment.id,
            outcome=error.outcome,
            latency=responses.duration(latency_s),
            upstream_status=error.status,
            error_message=str(error),
        )


class Schedule:
    """The order of one request's attempts: the decision's candidates, a failed one retried in
    place when the retry settings name its class, passing over candidates that cannot do better
    than a failure already seen (a window no larger than one the prompt overflowed; a tier the
    policy's content fallback rules out after a refusal) and those the router will not lease."""

    def __init__(
        self,
        router: router_core.Router,
        deployments: dict[str, DeploymentConfig],
        retries: RetrySettings,
        decision: router_core.Decision,
        tokens: Estimate,
        attempts: Attempts,
        deadline: Deadline,
    ) -> None:
        self._router = router
        self._deployments = deployments
        self._retries = retries
        self._decision = decision
        self._tokens = tokens
        self._attempts = attempts
        self.time_remaining = deadline.remaining
        self._next = 0
        self._retried: dict[str, int] = {}  # retries in place so far, by deployment
        self._overflowed = 0  # the largest context window the prompt has overflowed so far
        self._lowest_tier = 0  # candidates of earlier tiers are passed over (content fallback)
        self.out_of_time = False  # the deadline or the retry budget left no time for another attempt
        self._unused_lease = decision.lease  # the decision's lease, until the first candidate's attempt takes it

    def accepts(self, slot: Slot, error: UpstreamError) -> bool:
        """Whether the request may go on after `slot` failed with `error`; notes what the failure
        rules out for the candidates still to come, and the failure that ends the request."""
        if self._goes_on(slot, error):
            return True
        if self._attempts.decisive is None:
            self._attempts.decisive = error
        return False

    def _goes_on(self, slot: Slot, error: UpstreamError) -> bool:
        if error.outcome == pb.OUTCOME_CONTEXT_WINDOW_EXCEEDED:
            # Only a larger window can help.
            self._overflowed = max(self._overflowed, slot.deployment.context_window)
        elif error.outcome == pb.OUTCOME_CONTENT_FILTERED:
            if self._decision.content_fallback == "none":
                return False
            if self._decision.content_fallback == "next_tier":
                self._lowest_tier = max(self._lowest_tier, slot.tier + 1)
            return True
        return error.retriable

    async def after(self, slot: Slot, error: UpstreamError) -> Slot | None:
        """The attempt to make after `slot` failed with `error` (which `accepts`): the same
        deployment again after a backoff, or the next candidate; None when there is none."""
        retried = self._retried.get(slot.deployment.id, 0)
        delay = retry_delay(self._retries, retried, error, self.time_remaining)
        if delay is not None:
            await asyncio.sleep(delay)
            again = self._slot(slot.deployment, slot.tier)
            if again is not None:
                self._retried[slot.deployment.id] = retried + 1
                return again
        return self.next_candidate()

    def next_candidate(self) -> Slot | None:
        """The next candidate worth a call and able to take a lease, or None when none is left
        (or the deadline leaves no time for another attempt)."""
        candidates = self._decision.candidates
        while self._next < len(candidates) and not self.out_of_time:
            candidate = candidates[self._next]
            self._next += 1
            deployment = self._deployments[candidate.deployment]
            passed_over = self._passed_over(deployment, candidate.tier)
            if passed_over is not None:
                self._attempts.add_skipped(deployment.id, passed_over)
                continue
            slot = self._slot(deployment, candidate.tier, first=self._next == 1)
            if slot is not None:
                return slot
        return None

    def close(self) -> None:
        """Gives back the decision's lease if the first candidate's attempt never took it."""
        if self._unused_lease is not None:
            self._router.release(self._unused_lease)

    def _passed_over(self, deployment: DeploymentConfig, tier: int) -> UpstreamError | None:
        if tier < self._lowest_tier:
            return UpstreamError(
                pb.OUTCOME_CONTENT_FILTERED,
                "not tried: the policy's content fallback goes on to a later tier after a refusal",
            )
        if deployment.context_window <= self._overflowed:
            return UpstreamError(
                pb.OUTCOME_CONTEXT_WINDOW_EXCEEDED,
                f"not tried: its context window ({deployment.context_window}) is no larger than "
                f"one the prompt overflowed ({self._overflowed})",
            )
        return None

    def _slot(self, deployment: DeploymentConfig, tier: int, *, first: bool = False) -> Slot | None:
        # Time first, lease second: a lease taken for an attempt that never starts would hold
        # the deployment's budget.
        budget = attempt_budget(deployment.timeout_s, self.time_remaining)
        if budget is None:
            self.out_of_time = True
            return None
        if first:
            lease, self._unused_lease = self._unused_lease, None
        else:
            lease = self._reserve(deployment.id)
        if lease is None:
            return None
        return Slot(deployment, tier, lease, budget)

    def _reserve(self, deployment: str) -> router_core.Lease | None:
        """A lease for a retry or a fallback, or None (noted in the attempts) when it cannot take one now."""
        try:
            # The input part is scaled by, and calibrates, the deployment's own count of it.
            return self._router.reserve(deployment, tokens=self._tokens.total, input_tokens=self._tokens.input)
        except router_core.DeploymentUnavailableError as error:
            if error.rate_limited:
                skipped = UpstreamError(
                    pb.OUTCOME_RATE_LIMITED, f"not tried: {error.detail}", retry_after_s=error.retry_after_s
                )
            else:
                skipped = UpstreamError(pb.OUTCOME_OUT_OF_ROTATION, f"not tried: {error.detail}")
            self._attempts.add_skipped(deployment, skipped)
            return None


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
        delay = max(delay, error.retry_after_s)
    return delay if room_for_attempt(time_remaining(), after_s=delay) else None


def within(time_remaining: TimeRemaining, total_budget_s: float | None) -> TimeRemaining:
    """The client's deadline, tightened by the retry settings' total budget from now."""
    if total_budget_s is None:
        return time_remaining
    ends = time.monotonic() + total_budget_s

    def remaining() -> float:
        client = time_remaining()
        own = ends - time.monotonic()
        return own if client is None else min(client, own)

    return remaining


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


def as_upstream_error(raised: TimeoutError | StopAsyncIteration, budget: float) -> UpstreamError:
    """A timeout or an empty stream, as the failure class the engine acts on."""
    if isinstance(raised, StopAsyncIteration):
        return UpstreamError(pb.OUTCOME_PROTOCOL_ERROR, "stream ended without any event")
    return UpstreamError(pb.OUTCOME_TIMEOUT, f"no answer within {budget:.3f}s")
