"""One attempt: a call to one deployment that owns its lease, and the log of a request's attempts.

An attempt owns the lease the router gave it from the moment it exists. `ok` and `failed`
record its outcome with the router (health, latency, budgets settle); leaving its scope
unsettled — `until_answer` while it gets to its first answer, then the winner's `async with
won:` — because the client went away, another attempt won or something crashed, gives the
lease back. Either way it settles once, and the router's own lease gives itself back if this
object is ever dropped unsettled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import TracebackType

import router_core
from service import telemetry
from service.api.switchboard.v1 import gateway_pb2 as pb
from service.attempts.timing import Clock, Deadline
from service.config import Deployment
from service.errors import UpstreamFailed
from service.outcomes import OUTCOME_CLASSES, AttemptRecord, UpstreamError, Usage


@dataclass
class AttemptLog:
    """The attempts of one request so far, and the shortest Retry-After any of them got."""

    records: list[AttemptRecord] = field(default_factory=list)
    retry_after_s: float | None = None
    # Attempts after a failure on the same deployment, on the next candidate; and alongside one
    # that had not answered in time.
    retries: int = 0
    fallbacks: int = 0
    hedges: int = 0
    # The failure that ended the request at once (a bad request, a refusal), when one did: it,
    # not whatever was listed after it, decides the status.
    decisive: UpstreamError | None = None

    def add_skipped(self, deployment: str, why: UpstreamError) -> None:
        """A candidate passed over without a call."""
        self.add_failure(AttemptRecord(deployment, why.outcome, error=str(why)), why.retry_after_s)

    def add_failure(self, record: AttemptRecord, retry_after_s: float | None) -> None:
        """A failed attempt, and the wait it says brings its deployment back, if any."""
        self.records.append(record)
        if retry_after_s is not None and (self.retry_after_s is None or retry_after_s < self.retry_after_s):
            self.retry_after_s = retry_after_s

    def failure(self, deadline: Deadline, *, budget_spent: bool = False) -> UpstreamFailed:
        """The error for a request no attempt answered. DEADLINE_EXCEEDED only when the client's own
        deadline left no time; the gateway's retry budget running out is reported by the last outcome."""
        out_of_time = not deadline.client_room()
        if out_of_time:
            why = "the deadline left no time for another attempt"
        elif budget_spent:
            why = "the retry budget (total_budget_s) left no time for another attempt"
        else:
            why = "no candidate deployment answered"
        return UpstreamFailed(
            self.records,
            retry_after_s=self.retry_after_s,
            why=why,
            deadline_exceeded=out_of_time,
            outcome=None if self.decisive is None else self.decisive.outcome,
        )


class Attempt:
    """One call to one deployment, holding its lease until its outcome is recorded (`ok`,
    `failed`) or it is given back (`cancel`, `release`, or `settle_on` as its scope ends)."""

    __slots__ = ("_clock", "_lease", "_log", "_router", "budget", "deployment", "span", "started", "tier")

    def __init__(
        self,
        router: router_core.Router,
        deployment: Deployment,
        tier: int,
        lease: router_core.Lease,
        budget: float,
        log: AttemptLog,
        clock: Clock,
    ) -> None:
        self._router = router
        self._lease: router_core.Lease | None = lease
        self._log = log
        self._clock = clock
        self.deployment = deployment
        self.tier = tier
        self.budget = budget  # seconds this attempt may take
        self.started = clock()
        self.span = telemetry.attempt_span(self)

    @property
    def settled(self) -> bool:
        return self._lease is None

    def elapsed(self) -> float:
        return self._clock() - self.started

    def ok(self, usage: Usage, *, first_token_s: float | None = None) -> float:
        """Records a success (the answer is complete) and returns what it cost, in USD."""
        lease = self._settle()
        latency_s = self.elapsed()
        cost_usd = self._router.record(
            lease,
            outcome="ok",
            latency_ms=latency_s * 1000,
            ttft_ms=None if first_token_s is None else first_token_s * 1000,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
        )
        self._log.records.append(AttemptRecord(self.deployment.id, pb.OUTCOME_OK, latency_s))
        telemetry.end_attempt(self.span, "ok", usage.input_tokens, usage.output_tokens)
        return cost_usd

    def failed(self, error: UpstreamError) -> None:
        """Records a failure, which the router learns the deployment's health from; one of the
        gateway's own (`error.local`) gives the lease back instead, teaching it nothing."""
        lease = self._settle()
        latency_s = self.elapsed()
        if error.local:
            self._router.release(lease)
        else:
            self._router.record(
                lease,
                outcome=OUTCOME_CLASSES[error.outcome],
                latency_ms=latency_s * 1000,
                retry_after_s=error.retry_after_s,
            )
        record = AttemptRecord(self.deployment.id, error.outcome, latency_s, error.status, str(error))
        outcome = OUTCOME_CLASSES.get(error.outcome, "error")
        telemetry.end_attempt(self.span, outcome)
        wait = error.retry_after_s
        if error.outcome == pb.OUTCOME_RATE_LIMITED and wait is None:
            # No Retry-After: the client is told the cool-down the gateway applied instead.
            wait = self._router.cooling_down_for_s(self.deployment.id)
        self._log.add_failure(record, wait)

    def cancel(self, why: str) -> None:
        """Gives the lease back with no outcome (the budget returns in full) and lists the
        attempt as cancelled; a no-op once settled."""
        if self._lease is None:
            return
        self._router.release(self._settle())
        self._log.records.append(AttemptRecord(self.deployment.id, pb.OUTCOME_CANCELLED, self.elapsed(), error=why))
        telemetry.end_attempt(self.span, "cancelled")

    def release(self) -> None:
        """Gives the lease back without listing the attempt (it crashed: the request fails as a
        whole); a no-op once settled."""
        if self._lease is not None:
            self._router.release(self._settle())
            telemetry.end_attempt(self.span, "crashed")

    def _settle(self) -> router_core.Lease:
        lease, self._lease = self._lease, None
        if lease is None:
            raise RuntimeError(f"the attempt on {self.deployment.id} is already settled")
        return lease

    def until_answer(self) -> _UntilAnswer:
        """The scope in which the attempt gets to its first answer: a failure raised out of it
        settles the attempt; an answer leaves it open for whoever takes the answer."""
        return _UntilAnswer(self)

    def settle_on(self, error: BaseException | None) -> None:
        """Settles the attempt, if nothing did, as leaving its scope with `error` ends it: an
        UpstreamError is the attempt's outcome; a crash gives the lease back; the request ending
        (cancelled, or the block left without an outcome) lists the attempt as cancelled."""
        if self.settled:
            return
        if isinstance(error, UpstreamError):
            self.failed(error)
        elif isinstance(error, Exception):
            self.release()
        else:
            self.cancel("cancelled: the request ended")


class _UntilAnswer:
    """`Attempt.until_answer` (a class, not a generator: it runs on every attempt)."""

    __slots__ = ("_attempt",)

    def __init__(self, attempt: Attempt) -> None:
        self._attempt = attempt

    def __enter__(self) -> Attempt:
        return self._attempt

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, _: TracebackType | None) -> None:
        if error is not None:
            self._attempt.settle_on(error)
