"""What the provider adapter tests share: the requests they translate, and the calls they make."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from service.api.switchboard.v1 import gateway_pb2 as pb
from service.outcomes import UpstreamError
from service.providers import Provider

LOOKUP = pb.Tool(name="lookup", description="Look a word up")


def text(role: pb.Role, value: str) -> pb.Message:
    return pb.Message(role=role, content=[pb.ContentPart(text=value)])


def request(*messages: pb.Message, **params: object) -> pb.ChatRequest:
    """The messages given (by default a system prompt and "hi there") with these generation params."""
    return pb.ChatRequest(
        model="g",
        messages=messages or [text(pb.ROLE_SYSTEM, "be brief"), text(pb.ROLE_USER, "hi there")],
        params=pb.GenerationParams(**params),  # type: ignore[arg-type]
    )


async def drain(events: AsyncIterator[object]) -> None:
    async for _ in events:
        pass


async def failures(provider: Provider, asked: pb.ChatRequest) -> list[UpstreamError]:
    """How a unary call and a stream of `asked` each fail (both must)."""
    errors = []
    for call in (provider.complete(asked), drain(provider.stream(asked))):
        with pytest.raises(UpstreamError) as caught:
            await call
        errors.append(caught.value)
    return errors
