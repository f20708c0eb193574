"""Shadow calls: a policy's copies of a sampled share of its requests (`shadow:` in a policy),
sent to other deployments to measure them on real traffic.

Only a request the caller got an answer to is copied, and only to the shadow deployments the
request itself could have gone to (the router filters them as it does the request's candidates;
the caller's tenant must be allowed them too). A copy starts once the caller's own call has
ended, as a task of its own: the caller never
waits for it, never sees it, and its failures and slowness go nowhere but the ledger. It takes a
shadow lease (`Router.reserve_shadow`), which reserves only the deployment's rate-limit budget
and is refused while that budget is within the share kept for callers, so shadows are the first
calls turned away when budget runs short. It is recorded in the ledger as a call of its own
(method `Shadow`: counted and priced apart, never charged to the tenant's budgets), with the
request id of the call it copied and how its answer agreed with that call's.

At most `max_in_flight` copies of one policy run at once in a process; a sampled request past
that is not copied. A copy runs on the providers of the runtime its call ran on, which it keeps
from closing until it ends, and a gateway stopping cancels the copies still running."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import router_core
from service.access import Call, new_request_id
from service.agreement import Answer, ToolUse, compare_answers
from service.api.switchboard.v1 import gateway_pb2 as pb
from service.attempts import SYSTEM_CLOCK, Attempt, AttemptLog, Clock, Estimate, Streaming, Unary, Won
from service.ledger import Ledger
from service.outcomes import (
    OUTCOME_CLASSES,
    Completion,
    Delta,
    StreamFinished,
    UpstreamError,
    Usage,
    finish_reason_name,
)
from service.runtime import Runtime, Runtimes
from service.store.records import SHADOW_METHOD, CallRecord

log = logging.getLogger(__name__)

# The most of a streamed answer kept to compare with a shadow's (characters, each tool-call piece
# counting one more), and the most tool calls: the answer's own size is the provider's to choose,
# this bounds what is held for it. An answer past either is not compared.
MAX_KEPT_CHARS = 200_000
MAX_KEPT_TOOL_CALLS = 128
# Answers this short (both texts together) are compared on the event loop, in microseconds; longer
# ones on a thread, which costs more than the comparison of short ones.
INLINE_COMPARED_CHARS = 2000
# A shadow call, stream or not, ends after this many of its deployment's `timeout_s` in all.
WHOLE_CALL_TIMEOUTS = 2


@dataclass
class PartialAnswer:
    """A streamed answer put together from its deltas, for a shadow to be compared with."""

    text: list[str] = field(default_factory=list)
    tools: dict[int, list[str]] = field(default_factory=dict)  # index → [name, arguments pieces…]
    kept: int = 0
    complete: bool = False

    def add(self, delta: pb.StreamDelta | Delta) -> None:
        if self.kept > MAX_KEPT_CHARS:
            return
        if delta.text:
            self.text.append(delta.text)
            self.kept += len(delta.text)
        for piece in delta.tool_calls:
            if piece.index not in self.tools and len(self.tools) >= MAX_KEPT_TOOL_CALLS:
                self.kept = MAX_KEPT_CHARS + 1
                return
            parts = self.tools.setdefault(piece.index, [""])
            if piece.name:
                parts[0] = piece.name
            parts.append(piece.arguments)
            self.kept += len(piece.name) + len(piece.arguments) + 1

    def answer(self) -> Answer | None:
        """The whole answer; None unless the stream completed, and had it all kept."""
        if not self.complete or self.kept > MAX_KEPT_CHARS:
            return None
        tools = tuple(ToolUse(parts[0], "".join(parts[1:])) for _, parts in sorted(self.tools.items()))
        return Answer("".join(self.text), tools)


class Primary:
    """What the caller got, collected while its call runs, when its request is to be copied."""

    __slots__ = ("_call", "_partial", "answer", "complete")

    def __init__(self, call: Call) -> None:
        self._call = call
        self._partial: PartialAnswer | None = None
        self.complete = False  # the caller got a whole answer
        self.answer: Answer | None = None  # that answer, unless too large to keep

    def answered(self, response: pb.ChatResponse) -> None:
        if self._call.shadow is None:
            return
        calls = tuple(ToolUse(c.name, c.arguments) for c in response.message.tool_calls)
        self.answer = Answer("".join(part.text for part in response.message.content), calls)
        self.complete = True

    def streamed(self, event: pb.ChatStreamResponse) -> None:
        if self._call.shadow is None:
            return
        if self._partial is None:
            self._partial = PartialAnswer()
        kind = event.WhichOneof("event")
        if kind == "delta":
            self._partial.add(event.delta)
        elif kind == "end":
            self._partial.complete = self.complete = True
            self.answer = self._partial.answer()


@dataclass
class ShadowStats:
    """What became of the requests sampled for copying, per (policy, deployment, result): `ok`,
    `failed`, `refused` (no shadow lease), `busy` (max_in_flight reached)."""

    counts: Counter[tuple[str, str, str]] = field(default_factory=Counter)


class Shadows:
    """Starts and keeps the shadow calls of one gateway process."""

    def __init__(
        self, router: router_core.Router, runtimes: Runtimes, ledger: Ledger | None, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self._router = router
        self._runtimes = runtimes
        self._ledger = ledger
        self._clock = clock
        self._in_flight: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self.stats = ShadowStats()

    @contextmanager
    def mirroring(self, call: Call, request: pb.ChatRequest, runtime: Runtime, *, streaming: bool) -> Iterator[Primary]:
        """The block in which the caller's call runs; when it ends with an answer, a request the
        router sampled for copying is copied."""
        primary = Primary(call)
        try:
            yield primary
        finally:
            if call.shadow is not None and primary.complete and not self._closing:
                self._start(call, request, runtime, primary.answer, streaming)

    def _start(
        self, call: Call, request: pb.ChatRequest, runtime: Runtime, primary: Answer | None, streaming: bool
    ) -> None:
        copy, policy = call.shadow, call.policy
        assert copy is not None
        for deployment in copy.deployments:
            if call.caller is not None and not call.caller.allows(deployment):
                continue
            if self._in_flight[policy] >= copy.max_in_flight:
                self.stats.counts[policy, deployment, "busy"] += 1
                continue
            held = ExitStack()
            # Held from now, not from when the task first runs: a reload meanwhile must not
            # close the providers under it. Let go when the task is done, even one cancelled
            # before it ever ran.
            held.enter_context(self._runtimes.hold(runtime))
            self._in_flight[policy] += 1
            task = asyncio.ensure_future(self._run(call, request, runtime, deployment, primary, streaming))
            self._tasks.add(task)
            task.add_done_callback(functools.partial(self._ended, held=held, policy=policy))

    def _ended(self, task: asyncio.Task[None], *, held: ExitStack, policy: str) -> None:
        self._tasks.discard(task)
        self._in_flight[policy] -= 1
        held.close()

    async def _run(
        self,
        call: Call,
        request: pb.ChatRequest,
        runtime: Runtime,
        deployment: str,
        primary: Answer | None,
        streaming: bool,
    ) -> None:
        try:
            done = await self._call(call, request, runtime, deployment, streaming)
        except Exception:  # a shadow must never take anything else down with it
            log.exception("a shadow call to %s failed unexpectedly", deployment)
            return
        if done is None:
            self.stats.counts[call.policy, deployment, "refused"] += 1
            return
        record, answer = done
        self.stats.counts[call.policy, deployment, "ok" if record.status == "OK" else "failed"] += 1
        if primary is not None and answer is not None:
            if len(primary.text) + len(answer.text) <= INLINE_COMPARED_CHARS:
                agreement = compare_answers(primary, answer)
            else:  # bounded, but long answers take milliseconds: off the event loop the callers share
                agreement = await asyncio.to_thread(compare_answers, primary, answer)
            record = record._replace(similarity=round(agreement.similarity, 4), agrees=agreement.agrees)
        if self._ledger is not None:
            self._ledger.add_record(record)

    async def _call(
        self, call: Call, request: pb.ChatRequest, runtime: Runtime, deployment_id: str, streaming: bool
    ) -> tuple[CallRecord, Answer | None] | None:
        """Runs one copy to its end; None when it could not have a lease."""
        deployment = runtime.engine.deployments.get(deployment_id)
        if deployment is None:
            return None
        tokens = call.estimate or Estimate(0, 0)
        try:
            lease = self._router.reserve_shadow(
                deployment_id, tokens=tokens.input + tokens.max_output, input_tokens=tokens.input
            )
        except (router_core.DeploymentUnavailableError, router_core.UnknownDeploymentError):
            return None  # out of rotation or budget; or gone in a reload since the decision
        attempt = Attempt(self._router, deployment, 0, lease, deployment.timeout_s, AttemptLog(), self._clock)
        usage, cost_usd, ttft_ms, answer, finished = Usage(), 0.0, None, None, ""
        outcome = "ok"
        try:
            # An attempt's own timeouts bound its first answer; this bounds the whole of it.
            async with asyncio.timeout(deployment.timeout_s * WHOLE_CALL_TIMEOUTS):
                if streaming:
                    opening = Streaming(runtime.providers, request)
                    with attempt.until_answer():
                        stream = await opening.start(attempt)
                    async with Won(attempt, stream, opening):
                        partial = PartialAnswer()
                        async for event in stream.rest(deployment.stall_timeout_s):
                            if isinstance(event, Delta):
                                partial.add(event)
                            elif isinstance(event, StreamFinished):
                                partial.complete, usage = True, event.usage
                                finished = finish_reason_name(event.finish_reason)
                        if not partial.complete:
                            raise UpstreamError(pb.OUTCOME_PROTOCOL_ERROR, "the provider's stream ended unfinished")
                        cost_usd = attempt.ok(usage, first_token_s=stream.first_token_s)
                    ttft_ms, answer = stream.first_token_s * 1000, partial.answer()
                else:
                    unary = Unary(runtime.providers, request)
                    with attempt.until_answer():
                        completion: Completion = await unary.start(attempt)
                    cost_usd, usage = attempt.ok(completion.usage), completion.usage
                    answer, finished = Answer.of_completion(completion), finish_reason_name(completion.finish_reason)
        except UpstreamError as error:
            attempt.settle_on(error)
            outcome = OUTCOME_CLASSES.get(error.outcome, "error")
        except TimeoutError:
            attempt.settle_on(UpstreamError(pb.OUTCOME_TIMEOUT, "the shadow call ran too long"))
            outcome = "timeout"
        latency_ms = round(attempt.elapsed() * 1000, 3)
        record = CallRecord(
            time.time(),
            new_request_id(),
            call.tenant,
            call.key_id,
            SHADOW_METHOD,
            call.model_group,
            deployment_id,
            "OK" if outcome == "ok" else "FAILED",
            outcome,
            usage.input_tokens,
            usage.output_tokens,
            cost_usd,
            latency_ms,
            ttft_ms=None if ttft_ms is None else round(ttft_ms, 3),
            policy=call.policy,
            experiment=call.experiment,
            variant=call.variant,
            shadow_of=call.request_id,
            attempt_ms=latency_ms,
            finish_reason=finished,
        )
        return record, answer

    @property
    def running(self) -> int:
        """Shadow calls under way."""
        return len(self._tasks)

    def close(self) -> None:
        """Starts no more shadow calls (the gateway is stopping)."""
        self._closing = True

    async def aclose(self) -> None:
        """Starts no more, cancels those still running, and waits for them to give their leases back."""
        self._closing = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
