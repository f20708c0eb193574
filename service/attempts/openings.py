"""How an attempt gets to its first answer: the whole completion of a unary call, or the first
event of a stream. Up to there a failure can still fall over to another candidate without the
client seeing anything; the two RPCs differ only here."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar

from service import telemetry
from service.api.switchboard.v1 import gateway_pb2 as pb
from service.attempts.attempt import Attempt
from service.outcomes import Completion, StreamEvent, StreamFinished, UpstreamError
from service.providers import Provider
from service.watchdog import within

R = TypeVar("R")
T = TypeVar("T")


class Opening(Protocol[R]):
    """Runs an attempt to its first answer, raising UpstreamError when it fails; closes an
    answer that will not be used (it lost a hedged race, or the request ended)."""

    streaming: bool

    async def start(self, attempt: Attempt) -> R: ...

    async def discard(self, answer: R) -> None: ...


@dataclass(slots=True)
class OpenStream:
    """A stream that has produced its first event, the rest still to read."""

    first: StreamEvent
    events: AsyncGenerator[StreamEvent, None]
    first_token_s: float

    def rest(self, stall_s: float | None) -> AsyncIterator[StreamEvent]:
        """Every event from the first, failing as a timeout when the upstream is silent for `stall_s`."""
        return stalling(self.first, self.events, stall_s)

    async def aclose(self) -> None:
        await self.events.aclose()


@dataclass(frozen=True, slots=True)
class Unary:
    """A unary call's attempt: the whole completion, within the attempt's budget."""

    providers: Mapping[str, Provider]
    request: pb.ChatRequest
    streaming = False

    async def start(self, attempt: Attempt) -> Completion:
        try:
            # Exact, unlike `within`: an attempt's budget may end a few ms before the client's deadline.
            async with asyncio.timeout(attempt.budget):
                with telemetry.within(attempt.span):
                    completion = await self.providers[attempt.deployment.id].complete(self.request)
        except TimeoutError as error:
            raise no_answer_within(attempt.budget) from error
        if completion.finish_reason == pb.FINISH_REASON_CONTENT_FILTER and not (
            completion.text or completion.tool_calls
        ):
            raise withheld()
        return completion

    async def discard(self, answer: Completion) -> None:
        """A whole answer holds nothing open."""


@dataclass(frozen=True, slots=True)
class Streaming:
    """A stream's attempt: up to its first event, within the attempt's budget and the
    deployment's `first_token_timeout_s`."""

    providers: Mapping[str, Provider]
    request: pb.ChatRequest
    streaming = True

    async def start(self, attempt: Attempt) -> OpenStream:
        events = self.providers[attempt.deployment.id].stream(self.request)
        budget = min(attempt.budget, attempt.deployment.first_token_timeout_s or attempt.budget)
        try:
            async with asyncio.timeout(budget):
                # The request goes out here: it carries the attempt's trace context.
                with telemetry.within(attempt.span):
                    first = await anext(events)
        except BaseException as raised:
            await events.aclose()
            if isinstance(raised, StopAsyncIteration):
                raise UpstreamError(pb.OUTCOME_PROTOCOL_ERROR, "stream ended without any event") from raised
            if isinstance(raised, TimeoutError):
                raise no_answer_within(budget) from raised
            raise
        if isinstance(first, StreamFinished) and first.finish_reason == pb.FINISH_REASON_CONTENT_FILTER:
            # Finished before any content: the same refusal a unary call gets, so that the
            # policy's content fallback applies to streams too.
            await events.aclose()
            raise withheld()
        return OpenStream(first, events, attempt.elapsed())

    async def discard(self, answer: OpenStream) -> None:
        await answer.aclose()


def withheld() -> UpstreamError:
    """An answer the provider's content filter withheld whole: nothing reached the client, so it
    is a refusal like any other, whatever the provider's way of saying it."""
    return UpstreamError(pb.OUTCOME_CONTENT_FILTERED, "the provider's content filter withheld the whole answer")


def no_answer_within(budget: float) -> UpstreamError:
    return UpstreamError(pb.OUTCOME_TIMEOUT, f"no answer within {budget:.3f}s")


async def stalling(first: T, rest: AsyncIterator[T], stall_s: float | None) -> AsyncIterator[T]:
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
            item = await within(anext(rest), stall_s)
        except StopAsyncIteration:
            return
        except TimeoutError as error:
            raise UpstreamError(pb.OUTCOME_TIMEOUT, f"stalled: no chunk for {stall_s:g}s") from error
        yield item
