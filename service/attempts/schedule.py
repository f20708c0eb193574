"""Which attempt comes next: the decision's candidates in order, a failed one retried in place,
and candidates that cannot do better than a failure already seen passed over."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import router_core
from service.api.switchboard.v1 import gateway_pb2 as pb
from service.attempts.attempt import Attempt, AttemptLog
from service.attempts.timing import Clock, Deadline, retry_delay
from service.config import Deployment, RetrySettings
from service.identity import ANONYMOUS, Caller
from service.outcomes import UpstreamError

_RELOADED = UpstreamError(pb.OUTCOME_OUT_OF_ROTATION, "not tried: a config reload changed it while this call ran")


@dataclass(frozen=True, slots=True)
class Estimate:
    """The tokens a request's leases reserve: its estimated input and its max output."""

    input: int
    max_output: int

    @property
    def total(self) -> int:
        return self.input + self.max_output


class Schedule:
    """The order of one request's attempts: the decision's candidates, a failed one retried in
    place when the retry settings name its class, passing over candidates that cannot do better
    than a failure already seen (a window no larger than one the prompt overflowed; a tier the
    policy's content fallback rules out after a refusal) and those the router will not lease.

    Every attempt it hands out owns its lease; the decision's own lease goes to the first
    candidate's attempt, or back to the router when the schedule closes without one."""

    def __init__(
        self,
        router: router_core.Router,
        deployments: dict[str, Deployment],
        retries: RetrySettings,
        decision: router_core.Decision,
        tokens: Estimate,
        log: AttemptLog,
        deadline: Deadline,
        clock: Clock,
        caller: Caller = ANONYMOUS,
    ) -> None:
        self.router = router
        self.caller = caller
        self._deployments = deployments
        self._retries = retries
        self.decision = decision
        self._tokens = tokens
        self.log = log
        self.deadline = deadline
        self.clock = clock
        self._candidates = iter(decision.candidates)
        self._next = 0
        self._retried: dict[str, int] = {}  # retries in place so far, by deployment
        self._overflowed = 0  # the largest context window the prompt has overflowed so far
        self._lowest_tier = 0  # candidates of earlier tiers are passed over (content fallback)
        self.out_of_time = False  # the deadline or the retry budget left no time for another attempt
        self._unused_lease = decision.lease  # the decision's lease, until the first candidate's attempt takes it

    def accepts(self, attempt: Attempt, error: UpstreamError) -> bool:
        """Whether the request may go on after `attempt` failed with `error`; notes what the failure
        rules out for the candidates still to come, and the failure that ends the request."""
        if self._goes_on(attempt, error):
            return True
        if self.log.decisive is None:
            self.log.decisive = error
        return False

    def _goes_on(self, attempt: Attempt, error: UpstreamError) -> bool:
        if error.outcome == pb.OUTCOME_CONTEXT_WINDOW_EXCEEDED:
            # Only a larger window can help.
            self._overflowed = max(self._overflowed, attempt.deployment.context_window)
        elif error.outcome == pb.OUTCOME_CONTENT_FILTERED:
            if self.decision.content_fallback == "none":
                return False
            if self.decision.content_fallback == "next_tier":
                self._lowest_tier = max(self._lowest_tier, attempt.tier + 1)
            return True
        return error.retriable

    async def after(self, attempt: Attempt, error: UpstreamError) -> Attempt | None:
        """The attempt to make after `attempt` failed with `error` (which `accepts`): the same
        deployment again after a backoff, or the next candidate; None when there is none."""
        deployment = attempt.deployment
        retried = self._retried.get(deployment.id, 0)
        delay = retry_delay(self._retries, retried, error, self.deadline)
        if delay is not None:
            await asyncio.sleep(delay)
            again = self._attempt(deployment, attempt.tier)
            if again is not None:
                self._retried[deployment.id] = retried + 1
                self.log.retries += 1
                return again
        fallback = self.next_candidate()
        if fallback is not None:
            self.log.fallbacks += 1
        return fallback

    def next_candidate(self) -> Attempt | None:
        """The next candidate worth a call and able to take a lease, or None when none is left
        (or the deadline leaves no time for another attempt)."""
        while not self.out_of_time:
            # Drawn one at a time: a call served by its first candidate never orders the rest.
            candidate = next(self._candidates, None)
            if candidate is None:
                break
            self._next += 1
            if not self.caller.allows(candidate.deployment):
                continue  # not the caller's to use (a policy's target beyond its groups); not listed either
            deployment = self._deployments.get(candidate.deployment)
            if deployment is None:
                # A reload added it after this call began, on a config the call does not run on.
                self.log.add_skipped(candidate.deployment, _RELOADED)
                continue
            passed_over = self._passed_over(deployment, candidate.tier)
            if passed_over is not None:
                self.log.add_skipped(deployment.id, passed_over)
                continue
            attempt = self._attempt(deployment, candidate.tier, first=self._next == 1)
            if attempt is not None:
                return attempt
        return None

    def close(self) -> None:
        """Gives back the decision's lease if the first candidate's attempt never took it."""
        unused, self._unused_lease = self._unused_lease, None
        if unused is not None:
            self.router.release(unused)

    def _passed_over(self, deployment: Deployment, tier: int) -> UpstreamError | None:
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

    def _attempt(self, deployment: Deployment, tier: int, *, first: bool = False) -> Attempt | None:
        # Time first, lease second: a lease taken for an attempt that never starts would hold
        # the deployment's budget.
        budget = self.deadline.budget(deployment.timeout_s)
        if budget is None:
            self.out_of_time = True
            return None
        if first:
            lease, self._unused_lease = self._unused_lease, None
        else:
            lease = self._reserve(deployment.id)
        if lease is None:
            return None
        return Attempt(self.router, deployment, tier, lease, budget, self.log, self.clock)

    def _reserve(self, deployment: str) -> router_core.Lease | None:
        """A lease for a retry or a fallback, or None (noted in the log) when it cannot take one now."""
        try:
            # The input part is scaled by, and calibrates, the deployment's own count of it.
            return self.router.reserve(
                deployment,
                tokens=self._tokens.total,
                input_tokens=self._tokens.input,
                tenant=self.caller.tenant,
                api_key=self.caller.key_id,
            )
        except router_core.UnknownDeploymentError:
            self.log.add_skipped(deployment, _RELOADED)  # removed by a reload since the call began
            return None
        except router_core.DeploymentUnavailableError as error:
            if error.rate_limited:
                skipped = UpstreamError(
                    pb.OUTCOME_RATE_LIMITED, f"not tried: {error.detail}", retry_after_s=error.retry_after_s
                )
            else:
                skipped = UpstreamError(pb.OUTCOME_OUT_OF_ROTATION, f"not tried: {error.detail}")
            self.log.add_skipped(deployment, skipped)
            return None
