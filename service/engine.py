"""One request's life: route → call → record → fall back → answer.

The router (Rust) orders the candidates; this module walks that order, calling
each deployment's provider until one answers, recording every outcome back to
the router. A stream falls back only before its first content is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import router_core
from service import responses
from service.api.switchboard.v1 import gateway_pb2 as pb
from service.config import Config, RetrySettings
from service.errors import BudgetExhausted, InvalidRequest, NoEligibleDeployment, StreamInterrupted, UpstreamFailed
from service.outcomes import Delta, StreamFinished, UpstreamError, Usage
from service.providers import Provider
from service.responses import DeploymentConfig
from service.tokens import estimate_input_tokens

# Time kept back from the client's deadline so that a timed-out attempt can
# still be reported in the error the client receives.
DEADLINE_MARGIN_S = 0.005
# An attempt with less time than this left is not started.
MIN_ATTEMPT_S = 0.01

T = TypeVar("T")
TimeRemaining = Callable[[], float | None]
# The router's outcome classes are the proto's names without the prefix: OUTCOME_RATE_LIMITED → rate_limited.
_OUTCOME_CLASSES = {
    value: name.removeprefix("OUTCOME_").lower()
    for name, value in pb.Outcome.items()
    if value != pb.OUTCOME_UNSPECIFIED
}


class Engine:
    def __init__(self, config: Config, router: router_core.Router, providers: dict[str, Provider]) -> None:
        self.config = config
        self.router = router
        self.providers = providers
        self.deployments: dict[str, DeploymentConfig] = {dep.id: dep for dep in config.deployments()}
        # What Route says of each deployment never changes; copying it beats building it (3x).
        self._route_candidates = {
            dep.id: pb.RouteCandidate(
                deployment=dep.id, provider=responses.provider_type(dep), provider_model=dep.model, region=dep.region
            )
            for dep in config.deployments()
        }

    async def aclose(self) -> None:
        await asyncio.gather(*(provider.aclose() for provider in self.providers.values()))

    def route(self, request: pb.RouteRequest) -> pb.RouteResponse:
        input_tokens = (
            estimate_input_tokens(request.messages, request.tools) if request.messages else request.input_tokens
        )
        decision = self._decide(
            request.model,
            request.routing,
            request.metadata,
            request.messages,
            input_tokens,
            request.max_output_tokens,
            needs=_needed_capabilities(request, streaming=False),
            dry_run=True,
        )
        response = pb.RouteResponse(
            model_group=decision.model_group,
            policy=decision.policy or "",
            strategy=decision.strategy,
            input_tokens=input_tokens,
        )
        for candidate in decision.candidates:
            entry = response.candidates.add()
            entry.CopyFrom(self._route_candidates[candidate.deployment])
            entry.score = candidate.score
        for rejection in decision.rejected:
            response.rejected.add(deployment=rejection.deployment, filter=rejection.filter, detail=rejection.detail)
        return response

    async def chat(self, request: pb.ChatRequest, time_remaining: TimeRemaining) -> pb.ChatResponse:
        request_id = uuid.uuid4().hex
        decision, tokens = self._decide_chat(request, streaming=False)
        attempts = _Attempts()
        async with contextlib.aclosing(self._candidates(decision, tokens, attempts, time_remaining)) as candidates:
            async for deployment, budget, lease in candidates:
                started = time.perf_counter()
                try:
                    async with asyncio.timeout(budget):
                        completion = await self.providers[deployment.id].complete(request)
                except (UpstreamError, TimeoutError) as raised:
                    error = _as_upstream_error(raised, budget)
                    attempts.add_failure(self._record_failure(lease, error, started), error)
                    if error.retriable:
                        continue
                    break
                attempts.items.append(self._record_success(lease, started, None, completion.usage))
                return responses.chat_response(request_id, decision.model_group, deployment, completion, attempts.items)
        raise attempts.failure(time_remaining)

    async def chat_stream(
        self, request: pb.ChatRequest, time_remaining: TimeRemaining
    ) -> AsyncIterator[pb.ChatStreamResponse]:
        request_id = uuid.uuid4().hex
        decision, tokens = self._decide_chat(request, streaming=True)
        attempts = _Attempts()
        async with contextlib.aclosing(self._candidates(decision, tokens, attempts, time_remaining)) as candidates:
            async for deployment, budget, lease in candidates:
                started = time.perf_counter()
                events = self.providers[deployment.id].stream(request)
                first_budget = min(budget, deployment.first_token_timeout_s or budget)
                try:
                    # Nothing reaches the client until the first event, so a failure
                    # up to here can still fall through to the next candidate.
                    async with asyncio.timeout(first_budget):
                        first = await anext(events)
                except (UpstreamError, TimeoutError, StopAsyncIteration) as raised:
                    await events.aclose()
                    error = _as_upstream_error(raised, first_budget)
                    attempts.add_failure(self._record_failure(lease, error, started), error)
                    if error.retriable:
                        continue
                    break
                first_token_s = time.perf_counter() - started
                served = responses.served(decision.model_group, deployment)
                yield pb.ChatStreamResponse(
                    start=pb.StreamStart(id=request_id, served=served, failed_attempts=attempts.items)
                )
                finished: StreamFinished | None = None
                deltas_sent = 0
                try:
                    async for event in _stalling(first, events, deployment.stall_timeout_s):
                        if isinstance(event, Delta):
                            yield pb.ChatStreamResponse(
                                delta=pb.StreamDelta(text=event.text, tool_calls=event.tool_calls)
                            )
                            deltas_sent += 1
                        else:
                            finished = event
                except UpstreamError as error:
                    self._record_failure(lease, error, started)
                    raise StreamInterrupted(deployment.id, deltas_sent, error) from error
                finally:
                    await events.aclose()
                if finished is None:
                    raise StreamInterrupted(
                        deployment.id, deltas_sent, RuntimeError("provider stream ended unfinished")
                    )
                attempts.items.append(self._record_success(lease, started, first_token_s, finished.usage))
                yield pb.ChatStreamResponse(
                    end=pb.StreamEnd(
                        finish_reason=finished.finish_reason,
                        usage=responses.usage(finished.usage),
                        cost_usd=responses.cost(deployment, finished.usage),
                        attempts=attempts.items,
                        provider_request_id=finished.provider_request_id,
                    )
                )
                return
        raise attempts.failure(time_remaining)

    async def _candidates(
        self,
        decision: router_core.Decision,
        tokens: _Estimate,
        attempts: _Attempts,
        time_remaining: TimeRemaining,
    ) -> AsyncGenerator[tuple[DeploymentConfig, float, router_core.Lease], None]:
        """The decision's deployments in order, each with its time budget and a lease on its
        rate-limit budget, while the deadline allows; a deployment whose attempt failed in a
        class the retry settings name is tried again first, after a backoff. A lease the
        caller did not settle (cancelled, or it stopped early) is released here."""
        retries = self.config.retries
        time_remaining = _within(time_remaining, retries.total_budget_s)
        try:
            overflowed = 0  # the largest context window a prompt has overflowed so far
            for index, candidate in enumerate(decision.candidates):
                deployment = self.deployments[candidate.deployment]
                if deployment.context_window <= overflowed:
                    attempts.add_skipped(
                        deployment.id,
                        UpstreamError(
                            pb.OUTCOME_CONTEXT_WINDOW_EXCEEDED,
                            f"not tried: its context window ({deployment.context_window}) is no larger than "
                            f"one the prompt overflowed ({overflowed})",
                        ),
                    )
                    continue
                retried = 0
                while True:
                    # Time first, lease second: a lease taken for an attempt that never starts
                    # would hold the deployment's budget.
                    budget = _attempt_budget(deployment.timeout_s, time_remaining)
                    if budget is None:
                        return
                    first = index == 0 and retried == 0
                    lease = decision.lease if first else self._reserve(deployment.id, tokens, attempts)
                    if lease is None:
                        break
                    try:
                        yield deployment, budget, lease
                    finally:
                        self.router.release(lease)
                    if attempts.last_error and attempts.last_error.outcome == pb.OUTCOME_CONTEXT_WINDOW_EXCEEDED:
                        # Only a larger window can help: the candidates that follow are skipped unless larger.
                        overflowed = max(overflowed, deployment.context_window)
                        break
                    delay = _retry_delay(retries, retried, attempts.last_error, time_remaining)
                    if delay is None:
                        break
                    retried += 1
                    await asyncio.sleep(delay)
        finally:
            if decision.lease is not None:
                self.router.release(decision.lease)

    def _reserve(self, deployment: str, tokens: _Estimate, attempts: _Attempts) -> router_core.Lease | None:
        """A fallback's lease, or None (noted in the attempts) when it cannot take one now."""
        try:
            # The input part is scaled by, and calibrates, the deployment's own count of it.
            return self.router.reserve(deployment, tokens=tokens.total, input_tokens=tokens.input)
        except router_core.DeploymentUnavailableError as error:
            skipped = UpstreamError(
                pb.OUTCOME_RATE_LIMITED, f"not tried: {error.detail}", retry_after_s=error.retry_after_s
            )
            attempts.add_skipped(deployment, skipped)
            return None

    def _decide_chat(self, request: pb.ChatRequest, *, streaming: bool) -> tuple[router_core.Decision, _Estimate]:
        """The decision, and the tokens its leases reserve (input estimate plus max output)."""
        max_output = request.params.max_tokens if request.params.HasField("max_tokens") else 0
        input_tokens = estimate_input_tokens(request.messages, request.tools)
        decision = self._decide(
            request.model,
            request.routing,
            request.metadata,
            request.messages,
            input_tokens,
            max_output,
            needs=_needed_capabilities(request, streaming=streaming),
            dry_run=False,
        )
        if not decision.candidates:
            rejections = [(r.deployment, r.filter, r.detail) for r in decision.rejected]
            if decision.retry_after_s is not None:
                raise BudgetExhausted(decision.model_group, rejections, decision.retry_after_s)
            raise NoEligibleDeployment(decision.model_group, rejections)
        return decision, _Estimate(input_tokens, max_output)

    def _decide(
        self,
        model: str,
        routing: pb.RoutingHints,
        metadata: Mapping[str, str],
        messages: Sequence[pb.Message],
        input_tokens: int,
        max_output_tokens: int,
        *,
        needs: list[str],
        dry_run: bool,
    ) -> router_core.Decision:
        capabilities = [*routing.required_capabilities, *needs]
        try:
            return self.router.route(
                model,
                input_tokens=input_tokens,
                max_output_tokens=max_output_tokens,
                capabilities=capabilities,
                regions=list(routing.allowed_regions),
                task=routing.task,
                tags=list(routing.tags),
                metadata=dict(metadata),
                max_cost_usd=routing.max_cost_usd if routing.HasField("max_cost_usd") else None,
                latency_target_ms=routing.latency_target_ms if routing.HasField("latency_target_ms") else None,
                affinity_key=routing.affinity_key,
                dry_run=dry_run,
            )
        except router_core.UnknownModelGroupError as error:
            known = ", ".join(error.known) or "none"
            raise InvalidRequest([("model", f"unknown model group {model!r}; known groups: {known}")]) from error

    def _record_success(
        self, lease: router_core.Lease, started: float, first_token_s: float | None, usage: Usage
    ) -> pb.Attempt:
        latency_s = time.perf_counter() - started
        self.router.record(
            lease,
            outcome="ok",
            latency_ms=latency_s * 1000,
            ttft_ms=None if first_token_s is None else first_token_s * 1000,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
        )
        return pb.Attempt(deployment=lease.deployment, outcome=pb.OUTCOME_OK, latency=responses.duration(latency_s))

    def _record_failure(self, lease: router_core.Lease, error: UpstreamError, started: float) -> pb.Attempt:
        latency_s = time.perf_counter() - started
        self.router.record(
            lease,
            outcome=_OUTCOME_CLASSES[error.outcome],
            latency_ms=latency_s * 1000,
            retry_after_s=error.retry_after_s,
        )
        return pb.Attempt(
            deployment=lease.deployment,
            outcome=error.outcome,
            latency=responses.duration(latency_s),
            upstream_status=error.status,
            error_message=str(error),
        )


@dataclass
class _Attempts:
    """The attempts of one request so far, and the shortest Retry-After any of them got."""

    items: list[pb.Attempt] = field(default_factory=list)
    retry_after_s: float | None = None
    last_error: UpstreamError | None = None

    def add_skipped(self, deployment: str, why: UpstreamError) -> None:
        """A candidate passed over without a call (it could not do better than one that failed)."""
        self.add_failure(pb.Attempt(deployment=deployment, outcome=why.outcome, error_message=str(why)), why)

    def add_failure(self, attempt: pb.Attempt, error: UpstreamError) -> None:
        self.items.append(attempt)
        self.last_error = error
        if error.retry_after_s is not None and (self.retry_after_s is None or error.retry_after_s < self.retry_after_s):
            self.retry_after_s = error.retry_after_s

    def failure(self, time_remaining: TimeRemaining) -> UpstreamFailed:
        out_of_time = _attempt_budget(0.0, time_remaining) is None
        why = "the deadline left no time for another attempt" if out_of_time else "no candidate deployment answered"
        return UpstreamFailed(self.items, retry_after_s=self.retry_after_s, why=why, deadline_exceeded=out_of_time)


async def _stalling(first: T, rest: AsyncIterator[T], stall_s: float | None) -> AsyncIterator[T]:
    """`first`, then `rest`, failing as a timeout when `rest` is silent for `stall_s`. Only the
    wait for the upstream counts: time spent handing an item to the client does not."""
    yield first
    if stall_s is None:
        # The HTTP client's read timeout (timeout_s) still ends a silent upstream.
        async for item in rest:
            yield item
        return
    while True:
        try:
            async with asyncio.timeout(stall_s):
                item = await anext(rest)
        except StopAsyncIteration:
            return
        except TimeoutError as error:
            raise UpstreamError(pb.OUTCOME_TIMEOUT, f"stalled: no chunk for {stall_s:g}s") from error
        yield item


@dataclass(frozen=True, slots=True)
class _Estimate:
    """The tokens a request's leases reserve: its estimated input and its max output."""

    input: int
    max_output: int

    @property
    def total(self) -> int:
        return self.input + self.max_output


def _retry_delay(
    retries: RetrySettings, retried: int, error: UpstreamError | None, time_remaining: TimeRemaining
) -> float | None:
    """How long to wait before trying the same deployment again, or None to move on."""
    if error is None or retried >= retries.same_deployment or not error.retriable:
        return None
    if _OUTCOME_CLASSES.get(error.outcome) not in retries.retry_on:
        return None
    delay = random.uniform(0.0, min(retries.backoff_max_s, retries.backoff_initial_s * 2**retried))
    if error.retry_after_s is not None:
        if error.retry_after_s > retries.backoff_max_s:
            return None
        delay = max(delay, error.retry_after_s)
    left = time_remaining()
    if left is not None and left - delay < DEADLINE_MARGIN_S + MIN_ATTEMPT_S:
        return None
    return delay


def _within(time_remaining: TimeRemaining, total_budget_s: float | None) -> TimeRemaining:
    """The client's deadline, tightened by the retry settings' total budget from now."""
    if total_budget_s is None:
        return time_remaining
    ends = time.monotonic() + total_budget_s

    def remaining() -> float:
        client = time_remaining()
        own = ends - time.monotonic()
        return own if client is None else min(client, own)

    return remaining


def _needed_capabilities(request: pb.ChatRequest | pb.RouteRequest, *, streaming: bool) -> list[str]:
    """What the request itself requires of a deployment, beyond the client's explicit hints."""
    needs = ["streaming"] if streaming else []
    if any(part.WhichOneof("part") == "image" for m in request.messages for part in m.content):
        needs.append("vision")
    if request.tools or any(m.tool_calls for m in request.messages):
        needs.append("tools")
    if request.response_format.type == pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT:
        needs.append("json_mode")
    elif request.response_format.type == pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA:
        needs.append("json_schema")
    return needs


def _attempt_budget(timeout_s: float, time_remaining: TimeRemaining) -> float | None:
    """Seconds the next attempt may take, or None if the deadline leaves no room for one."""
    remaining = time_remaining()
    if remaining is None:
        return timeout_s
    remaining -= DEADLINE_MARGIN_S
    if remaining < MIN_ATTEMPT_S:
        return None
    return min(timeout_s, remaining)


def _as_upstream_error(raised: BaseException, budget: float) -> UpstreamError:
    if isinstance(raised, UpstreamError):
        return raised
    if isinstance(raised, StopAsyncIteration):
        return UpstreamError(pb.OUTCOME_PROTOCOL_ERROR, "stream ended without any event")
    return UpstreamError(pb.OUTCOME_TIMEOUT, f"no answer within {budget:.3f}s")
