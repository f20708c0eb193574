"""One request's life: route → call → record → fall back → answer.

The router (Rust) orders the candidates; this module walks that order, calling
each deployment's provider until one answers, recording every outcome back to
the router. A stream falls back only before its first content is sent.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import grpc

import router_core
from service import responses
from service.api.switchboard.v1 import gateway_pb2 as pb
from service.attempts import (
    Attempts,
    Deadline,
    Estimate,
    Slot,
    TimeRemaining,
    Won,
    as_upstream_error,
    room_for_attempt,
)
from service.config import Config
from service.errors import (
    BudgetExhausted,
    InvalidRequest,
    NoEligibleDeployment,
    NoHealthyDeployment,
    StreamInterrupted,
    UpstreamFailed,
)
from service.outcomes import Completion, Delta, StreamEvent, StreamFinished, UpstreamError
from service.providers import Provider
from service.responses import DeploymentConfig
from service.runner import Attempter, Discard, Start
from service.tokens import estimate_input_tokens

R = TypeVar("R")
T = TypeVar("T")
# The shortest wait between two rounds of waiting for capacity.
MIN_CAPACITY_WAIT_S = 0.05
# Rejections that waiting can undo with no known wait: a deployment out of rotation. (A budget
# that waiting restores comes with its wait, as BudgetExhausted; one the request can never fit
# is a precondition.)
_TRANSIENT_FILTERS = frozenset({"health"})


class Engine:
    def __init__(self, config: Config, router: router_core.Router, providers: dict[str, Provider]) -> None:
        self.config = config
        self.router = router
        self.providers = providers
        self.deployments: dict[str, DeploymentConfig] = {dep.id: dep for dep in config.deployments()}
        # What Route says of each deployment never changes; copying it beats building it (3x).
        self._route_candidates = {
            dep.id: pb.RouteCandidate(deployment=dep.id, provider=dep.type, provider_model=dep.model, region=dep.region)
            for dep in config.deployments()
        }
        self.attempter = Attempter(router, self.deployments, config.retries)

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
            entry.tier = candidate.tier
        for rejection in decision.rejected:
            response.rejected.add(deployment=rejection.deployment, filter=rejection.filter, detail=rejection.detail)
        return response

    async def chat(self, request: pb.ChatRequest, time_remaining: TimeRemaining) -> pb.ChatResponse:
        request_id = uuid.uuid4().hex
        attempts = Attempts()

        async def complete(slot: Slot) -> Completion:
            try:
                async with asyncio.timeout(slot.budget):
                    return await self.providers[slot.deployment.id].complete(request)
            except TimeoutError as error:
                raise as_upstream_error(error, slot.budget) from error

        decision, won = await self._first_answer(
            request, attempts, time_remaining, complete, _nothing_to_close, streaming=False
        )
        attempts.items.append(self.attempter.record.success(won.slot, None, won.answer.usage))
        return responses.chat_response(
            request_id, decision.model_group, won.slot.deployment, won.answer, attempts.items
        )

    async def chat_stream(
        self, request: pb.ChatRequest, time_remaining: TimeRemaining
    ) -> AsyncIterator[pb.ChatStreamResponse]:
        request_id = uuid.uuid4().hex
        attempts = Attempts()

        async def open_stream(slot: Slot) -> _OpenStream:
            events = self.providers[slot.deployment.id].stream(request)
            budget = min(slot.budget, slot.deployment.first_token_timeout_s or slot.budget)
            try:
                # Nothing reaches the client until the first event, so a failure up to
                # here can still fall over to another candidate.
                async with asyncio.timeout(budget):
                    first = await anext(events)
            except BaseException as raised:
                await events.aclose()
                if isinstance(raised, TimeoutError | StopAsyncIteration):
                    raise as_upstream_error(raised, budget) from raised
                raise
            return _OpenStream(first, events, slot.elapsed())

        decision, won = await self._first_answer(
            request, attempts, time_remaining, open_stream, _OpenStream.aclose, streaming=True
        )
        slot, stream = won.slot, won.answer
        try:
            served = responses.served(decision.model_group, slot.deployment)
            yield pb.ChatStreamResponse(
                start=pb.StreamStart(id=request_id, served=served, failed_attempts=attempts.items)
            )
            finished: StreamFinished | None = None
            deltas_sent = 0
            try:
                async for event in _stalling(stream.first, stream.events, slot.deployment.stall_timeout_s):
                    if isinstance(event, Delta):
                        yield pb.ChatStreamResponse(delta=pb.StreamDelta(text=event.text, tool_calls=event.tool_calls))
                        deltas_sent += 1
                    else:
                        finished = event
                if finished is None:
                    raise UpstreamError(pb.OUTCOME_PROTOCOL_ERROR, "the provider's stream ended unfinished")
            except UpstreamError as error:
                attempts.items.append(self.attempter.record.failure(slot, error))
                raise StreamInterrupted(slot.deployment.id, deltas_sent, error, attempts.items) from error
            attempts.items.append(self.attempter.record.success(slot, stream.first_token_s, finished.usage))
            yield pb.ChatStreamResponse(
                end=pb.StreamEnd(
                    finish_reason=finished.finish_reason,
                    usage=responses.usage(finished.usage),
                    cost_usd=responses.cost(slot.deployment, finished.usage),
                    attempts=attempts.items,
                    provider_request_id=finished.provider_request_id,
                )
            )
        finally:
            # A no-op once the outcome is recorded; gives the budget back if the client went away.
            self.router.release(slot.lease)
            await stream.aclose()

    async def _first_answer(
        self,
        request: pb.ChatRequest,
        attempts: Attempts,
        time_remaining: TimeRemaining,
        start: Start[R],
        discard: Discard[R],
        *,
        streaming: bool,
    ) -> tuple[router_core.Decision, Won[R]]:
        """Routes the request and runs its attempts to the first answer. When all a round found
        was rate limiting with a known wait, waits (up to `retries.wait_for_capacity_s` in all,
        within the deadline) and routes again; the attempts of every round are kept."""
        deadline = Deadline.starting_now(time_remaining, self.config.retries.total_budget_s)
        began = time.monotonic()
        while True:
            round_began = len(attempts.items)
            attempts.retry_after_s = None  # a wait already served says nothing of this round
            try:
                decision, tokens = self._decide_chat(request, streaming=streaming)
                won = await self.attempter.first_answer(
                    decision, tokens, attempts, deadline, start, discard, streaming=streaming
                )
                return decision, won
            except NoEligibleDeployment as error:
                error.attempts = attempts.items
                failure: BudgetExhausted | UpstreamFailed | NoEligibleDeployment = error
            except UpstreamFailed as error:
                failure = error
            wait = self._capacity_wait(failure, attempts.items[round_began:], time.monotonic() - began, deadline)
            if wait is None:
                raise failure
            await asyncio.sleep(wait)

    def _capacity_wait(
        self,
        failure: BudgetExhausted | UpstreamFailed | NoEligibleDeployment,
        round_attempts: Sequence[pb.Attempt],
        waited: float,
        deadline: Deadline,
    ) -> float | None:
        """How long to wait before routing again, or None to fail now: only when everything the
        round met was rate limiting with a known wait, and the wait fits the settings and the deadline."""
        allowed = self.config.retries.wait_for_capacity_s
        if allowed <= 0 or not isinstance(failure, BudgetExhausted | UpstreamFailed):
            return None
        if failure.code != grpc.StatusCode.RESOURCE_EXHAUSTED or failure.retry_after_s is None:
            return None
        if any(a.outcome not in (pb.OUTCOME_RATE_LIMITED, pb.OUTCOME_CANCELLED) for a in round_attempts):
            return None
        # A Retry-After of 0 must not turn into a busy loop of rounds.
        wait = max(failure.retry_after_s, MIN_CAPACITY_WAIT_S)
        if waited + wait > allowed:
            return None
        return wait if room_for_attempt(deadline.remaining(), after_s=wait) else None

    def _decide_chat(self, request: pb.ChatRequest, *, streaming: bool) -> tuple[router_core.Decision, Estimate]:
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
            if any(r.filter in _TRANSIENT_FILTERS for r in decision.rejected):
                # Some deployment could serve the request once it is back in rotation.
                raise NoHealthyDeployment(decision.model_group, rejections)
            raise NoEligibleDeployment(decision.model_group, rejections)
        return decision, Estimate(input_tokens, max_output)

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


@dataclass(slots=True)
class _OpenStream:
    """A stream that has produced its first event, the rest still to read."""

    first: StreamEvent
    events: AsyncGenerator[StreamEvent, None]
    first_token_s: float

    async def aclose(self) -> None:
        await self.events.aclose()


async def _nothing_to_close(_: Completion) -> None:
    """A unary answer that lost a hedged race holds nothing open."""


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
