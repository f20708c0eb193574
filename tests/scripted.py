"""Scripted deployments for the engine on virtual time (tests/virtual_time.py): each call does
what the test's script says, so a path through the attempt loop is exact and takes no wall time."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field

import router_core
from service.api.switchboard.v1 import gateway_pb2 as pb
from service.config import parse_config
from service.engine import Engine
from service.outcomes import Completion, Delta, StreamEvent, StreamFinished, UpstreamError, Usage
from service.providers import Provider
from tests.virtual_time import VirtualTimeLoop


@dataclass(frozen=True)
class Answer:
    """Answers after `delay`; a stream sends `deltas` pieces `gap` apart, and breaks after
    `break_after` of them when set."""

    delay: float = 0.01
    deltas: int = 3
    gap: float = 0.01
    break_after: int | None = None


@dataclass(frozen=True)
class Fail:
    outcome: pb.Outcome
    delay: float = 0.01
    retry_after_s: float | None = None


@dataclass(frozen=True)
class Hang:
    """Never answers (the deployment's timeout_s ends it)."""


@dataclass(frozen=True)
class Withheld:
    """The provider's content filter withholds the whole answer: a finish with no content."""


Action = Answer | Fail | Hang | Withheld


@dataclass
class Scripted(Provider):
    """A deployment doing what the script says, one action per call; then answering."""

    actions: list[Action] = field(default_factory=list)
    calls: int = 0

    def _next(self) -> Action:
        self.calls += 1
        return self.actions.pop(0) if self.actions else Answer()

    async def complete(self, request: pb.ChatRequest) -> Completion:
        action = self._next()
        await _before_answer(action)
        if isinstance(action, Withheld):
            return Completion("", pb.FINISH_REASON_CONTENT_FILTER, Usage())
        return Completion("hi", pb.FINISH_REASON_STOP, Usage())

    async def stream(self, request: pb.ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        action = self._next()
        await _before_answer(action)
        if isinstance(action, Withheld):
            yield StreamFinished(pb.FINISH_REASON_CONTENT_FILTER, Usage())
            return
        assert isinstance(action, Answer)
        for sent in range(action.deltas):
            if sent == action.break_after:
                raise UpstreamError(pb.OUTCOME_SERVER_ERROR, "reset mid-stream", status=502)
            yield Delta(f"piece {sent} ")
            await asyncio.sleep(action.gap)
        yield StreamFinished(pb.FINISH_REASON_STOP, Usage())

    async def aclose(self) -> None:
        return None


async def _before_answer(action: Action) -> None:
    await asyncio.sleep(3600 if isinstance(action, Hang) else 0.01 if isinstance(action, Withheld) else action.delay)
    if isinstance(action, Fail):
        raise UpstreamError(action.outcome, "scripted", status=500, retry_after_s=action.retry_after_s)


@dataclass
class Gateway:
    engine: Engine
    router: router_core.Router

    def calls(self, deployment: str) -> int:
        provider = self.engine.providers[deployment]
        assert isinstance(provider, Scripted)
        return provider.calls

    def leaks(self) -> dict[str, tuple[int, float]]:
        """Deployments with an attempt in flight or a token budget not whole: (in flight, headroom)."""
        return {s.deployment: (s.in_flight, s.headroom) for s in self.router.stats() if s.in_flight or s.headroom < 1}


def gateway(config_text: str, script: Mapping[str, Sequence[Action]]) -> Gateway:
    """An engine on `config_text` whose deployments follow `script`, its router's clock following the loop's."""
    loop = asyncio.get_running_loop()
    assert isinstance(loop, VirtualTimeLoop)
    config = parse_config(config_text)
    router = config.new_router(manual_clock=True)
    loop.follow(router.advance_clock)
    random.seed(7)  # the retries' jitter: each run of a path takes the same course
    providers: dict[str, Provider] = {dep.id: Scripted(list(script.get(dep.id, []))) for dep in config.deployments()}
    return Gateway(Engine(config, router, providers, clock=loop.time), router)
