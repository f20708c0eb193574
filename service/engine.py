"""One request's life: decide → run attempts → respond.

The router (Rust) orders the candidates; the attempts package runs them to the first answer,
and this module turns that answer into the response (a stream reads the rest of its events
here, and can no longer fall back once content is sent).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Literal, TypeVar

import router_core
from service import responses
from service.access import Call, new_request_id
from service.api.switchboard.v1 import gateway_pb2 as pb
from service.attempts import (
    COOL_DOWN_SLACK_S,
    SYSTEM_CLOCK,
    AttemptLog,
    Clock,
    Deadline,
    Estimate,
    Opening,
    Schedule,
    Streaming,
    TimeRemaining,
    Unary,
    Won,
    first_answer,
)
from service.cluster.dollars import DollarPool, reserve_budget
from service.config import Config, Deployment
from service.errors import (
    BudgetExhausted,
    InvalidRequest,
    NoEligibleDeployment,
    NoHealthyDeployment,
    StreamInterrupted,
    UpstreamFailed,
)
from service.identity import ANONYMOUS, BudgetExceeded, Caller, PermissionDenied
from service.outcomes import AttemptRecord, Delta, StreamFinished, UpstreamError, Usage, finish_reason_name
from service.providers import Provider
from service.tokens import estimate_input_tokens

R = TypeVar("R")
# Above this much text a request's token estimate runs on a thread, off the event loop.
OFF_LOOP_TEXT_BYTES = 256 * 1024
# The shortest wait between two rounds of waiting for capacity.
MIN_CAPACITY_WAIT_S = 0.05
# Rejections that waiting can undo with no known wait: a deployment out of rotation. (A budget
# that waiting restores comes with its wait, as BudgetExhausted; one the request can never fit
# is a precondition.)
_TRANSIENT_FILTERS = frozenset({"health"})
# What a client may favour (routing.preference), as the router names it.
_PREFERENCES: dict[int, Literal["cost", "latency"]] = {pb.PREFERENCE_COST: "cost", pb.PREFERENCE_LATENCY: "latency"}
# What ends a round of attempts without an answer.
RoundFailure = BudgetExhausted | UpstreamFailed | NoEligibleDeployment


class Engine:
    def __init__(
        self,
        config: Config,
        router: router_core.Router,
        providers: dict[str, Provider],
        *,
        clock: Clock = SYSTEM_CLOCK,
        pool: DollarPool | None = None,
    ) -> None:
        self.config = config
        self.router = router
        self.providers = providers
        self.clock = clock
        # Where budgets shared with other hosts are drawn from (service/cluster/dollars.py).
        self.pool = pool
        self.deployments: dict[str, Deployment] = {dep.id: dep for dep in config.deployments()}
        self._route_candidates = responses.route_candidates(config)

    async def aclose(self) -> None:
        await asyncio.gather(*(provider.aclose() for provider in self.providers.values()))

    async def route(self, request: pb.RouteRequest, caller: Caller = ANONYMOUS) -> pb.RouteResponse:
        input_tokens = await _estimate(request) if request.messages else request.input_tokens
        decision = self._decide(
            caller,
            request.model,
            request.routing,
            request.metadata,
            input_tokens,
            request.max_output_tokens,
            needs=_needed_capabilities(request, streaming=False),
            dry_run=True,
        )
        return responses.route_response(decision, input_tokens, self._route_candidates, caller.allows)

    def model_problem(self, request: pb.ChatRequest, caller: Caller = ANONYMOUS) -> tuple[str, str] | None:
        """Why the request's model cannot be routed, if it cannot: a dry run of the decision, so
        that a request invalid on other counts also hears of its model in the same answer."""
        try:
            self._decide(caller, request.model, request.routing, request.metadata, 0, 0, needs=[], dry_run=True)
        except InvalidRequest as error:
            return error.violations[0]
        return None

    async def chat(
        self, request: pb.ChatRequest, time_remaining: TimeRemaining, call: Call | None = None
    ) -> pb.ChatResponse:
        call = call or Call("Chat", new_request_id())
        log = AttemptLog()
        try:
            opening = Unary(self.providers, request)
            model_group, won = await self._first_answer(request, opening, log, time_remaining, call)
            call.finish_reason = finish_reason_name(won.answer.finish_reason)
            async with won:
                cost_usd = won.attempt.ok(won.answer.usage)
            call.attempt_ms = won.attempt.elapsed() * 1000
            _count_usage(call, won.answer.usage, cost_usd)
        finally:
            _count_attempts(call, log)
            _settle_budget(call)
        served = responses.served(model_group, won.attempt.deployment, call.experiment, call.variant)
        return responses.chat_response(call.request_id, served, won.answer, cost_usd, log.records)

    async def chat_stream(
        self, request: pb.ChatRequest, time_remaining: TimeRemaining, call: Call | None = None
    ) -> AsyncGenerator[pb.ChatStreamResponse, None]:
        call = call or Call("ChatStream", new_request_id())
        log = AttemptLog()
        try:
            # Closed with this generator, so that a reader that stops gives the lease back at once.
            async with contextlib.aclosing(self._stream(request, time_remaining, call, log)) as events:
                async for event in events:
                    yield event
        finally:
            _count_attempts(call, log)
            _settle_budget(call)

    async def _stream(
        self, request: pb.ChatRequest, time_remaining: TimeRemaining, call: Call, log: AttemptLog
    ) -> AsyncGenerator[pb.ChatStreamResponse, None]:
        opening = Streaming(self.providers, request)
        model_group, won = await self._first_answer(request, opening, log, time_remaining, call)
        async with won:
            attempt, stream = won.attempt, won.answer
            deployment = attempt.deployment
            served = responses.served(model_group, deployment, call.experiment, call.variant)
            yield responses.stream_start(call.request_id, served, log.records)
            finished: StreamFinished | None = None
            deltas_sent = 0
            try:
                async for event in stream.rest(deployment.stall_timeout_s):
                    if isinstance(event, Delta):
                        yield responses.stream_delta(event)
                        deltas_sent += 1
                    else:
                        finished = event
                if finished is None:
                    raise UpstreamError(pb.OUTCOME_PROTOCOL_ERROR, "the provider's stream ended unfinished")
            except UpstreamError as error:
                attempt.failed(error)
                raise StreamInterrupted(deployment.id, deltas_sent, error, log.records) from error
            cost_usd = attempt.ok(finished.usage, first_token_s=stream.first_token_s)
            call.ttft_ms, call.attempt_ms = stream.first_token_s * 1000, attempt.elapsed() * 1000
            call.finish_reason = finish_reason_name(finished.finish_reason)
            _count_usage(call, finished.usage, cost_usd)
            yield responses.stream_end(finished, cost_usd, log.records)

    async def _first_answer(
        self,
        request: pb.ChatRequest,
        opening: Opening[R],
        log: AttemptLog,
        time_remaining: TimeRemaining,
        call: Call,
    ) -> tuple[str, Won[R]]:
        """Routes the request and runs its attempts to the first answer, returning the model
        group and the winner, still open. When all a round found was rate limiting with a known
        wait, waits (up to `retries.wait_for_capacity_s` in all, within the deadline) and routes
        again; the attempts of every round are kept."""
        retries = self.config.retries
        deadline = Deadline.starting_now(time_remaining, retries.total_budget_s, self.clock, retries.deadline_margin_s)
        began = self.clock()
        input_tokens = await _estimate(request)
        while True:
            round_began = len(log.records)
            log.retry_after_s = None  # a wait already served says nothing of this round
            failure: RoundFailure
            try:
                caller = call.caller or ANONYMOUS
                decision, tokens = self._decide_chat(caller, request, input_tokens, streaming=opening.streaming)
                _note_decision(call, decision, tokens)
                if call.budget_hold is None:  # once a call, on its first round
                    call.budget_hold = await self._hold_budget(caller, decision, tokens)
                schedule = Schedule(
                    self.router,
                    self.deployments,
                    self.config.retries,
                    decision,
                    tokens,
                    log,
                    deadline,
                    self.clock,
                    caller,
                )
                won = await first_answer(schedule, opening)
                call.deployment, call.response_model = won.attempt.deployment.id, won.attempt.deployment.provider.model
                return decision.model_group, won
            except NoEligibleDeployment as error:
                error.attempts = log.records
                failure = error
            except UpstreamFailed as error:
                failure = error
            wait = self._capacity_wait(failure, log.records[round_began:], self.clock() - began, deadline)
            if wait is None:
                raise failure
            await asyncio.sleep(wait)

    async def _hold_budget(
        self, caller: Caller, decision: router_core.Decision, tokens: Estimate
    ) -> router_core.BudgetHold | None:
        """Reserves the call's estimated cost (its tokens at the prices of the first candidate it
        may use: the leased one, usually) on the caller's budgets; BudgetExceeded, with the
        decision's lease given back, when one has too little left. A budget pooled with other
        hosts whose allowance here is short is drawn from first."""
        owners = caller.budget_owners
        if not owners:
            return None
        lease = decision.lease
        if lease is not None and caller.allows(lease.deployment):
            first = lease.deployment
        else:
            first = next(c.deployment for c in decision.candidates if caller.allows(c.deployment))
        estimate = self.router.cost_usd(first, tokens.input, tokens.max_output)
        held = await reserve_budget(self.router, self.pool, owners, estimate)
        if isinstance(held, router_core.BudgetRefusal):
            if lease is not None:
                self.router.release(lease)
            raise BudgetExceeded(owners[held.owner_index][0], held)
        return held

    def _capacity_wait(
        self, failure: RoundFailure, round_records: Sequence[AttemptRecord], waited: float, deadline: Deadline
    ) -> float | None:
        """How long to wait before routing again, or None to fail now: only when everything the
        round met was rate limiting with a known wait, and the wait fits the settings and the deadline."""
        allowed = self.config.retries.wait_for_capacity_s
        if allowed <= 0:
            return None
        if isinstance(failure, BudgetExhausted):
            retry_after_s: float | None = failure.retry_after_s
        elif isinstance(failure, UpstreamFailed) and not failure.deadline_exceeded:
            retry_after_s = failure.retry_after_s
        else:
            return None
        if retry_after_s is None:
            return None
        if any(r.outcome not in (pb.OUTCOME_RATE_LIMITED, pb.OUTCOME_CANCELLED) for r in round_records):
            return None
        # A Retry-After of 0 must not turn into a busy loop of rounds.
        wait = max(retry_after_s, MIN_CAPACITY_WAIT_S) + COOL_DOWN_SLACK_S
        if waited + wait > allowed:
            return None
        return wait if deadline.room(after_s=wait) else None

    def _decide_chat(
        self, caller: Caller, request: pb.ChatRequest, input_tokens: int, *, streaming: bool
    ) -> tuple[router_core.Decision, Estimate]:
        """The decision, and the tokens its leases reserve (input estimate plus max output)."""
        max_output = request.params.max_tokens if request.params.HasField("max_tokens") else 0
        decision = self._decide(
            caller,
            request.model,
            request.routing,
            request.metadata,
            input_tokens,
            max_output,
            needs=_needed_capabilities(request, streaming=streaming),
            dry_run=False,
        )
        if not decision.candidates:
            # Deployments beyond the caller's groups (a policy's) are not its to hear of.
            rejections = [(r.deployment, r.filter, r.detail) for r in decision.rejected if caller.allows(r.deployment)]
            if decision.retry_after_s is not None:
                raise BudgetExhausted(decision.model_group, rejections, decision.retry_after_s)
            if any(r.filter in _TRANSIENT_FILTERS for r in decision.rejected):
                # Some deployment could serve the request once it is back in rotation.
                raise NoHealthyDeployment(decision.model_group, rejections)
            raise NoEligibleDeployment(decision.model_group, rejections)
        return decision, Estimate(input_tokens, max_output)

    def _decide(
        self,
        caller: Caller,
        model: str,
        routing: pb.RoutingHints,
        metadata: Mapping[str, str],
        input_tokens: int,
        max_output_tokens: int,
        *,
        needs: list[str],
        dry_run: bool,
    ) -> router_core.Decision:
        capabilities = [*routing.required_capabilities, *needs]
        try:
            decision = self.router.route(
                model,
                input_tokens=input_tokens,
                max_output_tokens=max_output_tokens,
                capabilities=capabilities,
                regions=caller.regions(routing.allowed_regions),
                tenant=caller.tenant,
                api_key=caller.key_id,
                task=routing.task,
                tags=list(routing.tags),
                metadata=caller.metadata(metadata),
                max_cost_usd=routing.max_cost_usd if routing.HasField("max_cost_usd") else None,
                latency_target_ms=routing.latency_target_ms if routing.HasField("latency_target_ms") else None,
                affinity_key=routing.affinity_key,
                preference=_PREFERENCES.get(routing.preference),
                dry_run=dry_run,
            )
        except router_core.UnknownModelGroupError as error:
            known = ", ".join(caller.known_groups(error.known)) or "none"
            raise InvalidRequest([("model", f"unknown model group {model!r}; known groups: {known}")]) from error
        try:
            caller.allow_group(decision.model_group)
            if decision.candidates and not any(caller.allows(c.deployment) for c in decision.candidates):
                raise PermissionDenied(
                    f"tenant {caller.tenant!r} may use none of the deployments this request routes to"
                )
        except PermissionDenied:
            if decision.lease is not None:
                self.router.release(decision.lease)
            raise
        return decision


async def _estimate(request: pb.ChatRequest | pb.RouteRequest) -> int:
    """The request's input estimate. It takes a few nanoseconds a byte, milliseconds for the
    largest request the limits allow, so a large request's runs on a thread rather than stalling
    every other call on the event loop; the core lets go of the GIL while it counts."""
    if _text_bytes(request) <= OFF_LOOP_TEXT_BYTES:
        return estimate_input_tokens(request.messages, request.tools)
    return await asyncio.to_thread(estimate_input_tokens, request.messages, request.tools)


def _text_bytes(request: pb.ChatRequest | pb.RouteRequest) -> int:
    return sum(len(part.text) for message in request.messages for part in message.content)


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


def _count_usage(call: Call, usage: Usage, cost_usd: float) -> None:
    call.input_tokens, call.output_tokens, call.cost_usd = usage.input_tokens, usage.output_tokens, cost_usd


def _settle_budget(call: Call) -> None:
    """The call's cost (nothing, if it failed) replaces what it reserved."""
    if call.budget_hold is not None:
        call.budget_hold.settle(call.cost_usd)


def _count_attempts(call: Call, log: AttemptLog) -> None:
    """The attempts made, those beyond the first, and how the last one ended, as `ok`,
    `server_error`, ..."""
    call.attempts = len(log.records)
    call.retries, call.fallbacks, call.hedges = log.retries, log.fallbacks, log.hedges
    if log.records:
        call.outcome = pb.Outcome.Name(log.records[-1].outcome).removeprefix("OUTCOME_").lower()


def _note_decision(call: Call, decision: router_core.Decision, tokens: Estimate) -> None:
    call.model_group, call.policy, call.strategy = decision.model_group, decision.policy or "", decision.strategy
    call.experiment, call.variant = decision.experiment or ("", "")
    if call.estimate is None:  # the first round's sample decides, whatever it drew
        call.shadow, call.estimate = decision.shadow, tokens
    call.decision = decision
