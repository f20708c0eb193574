"""The interface every provider adapter implements."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Protocol

from service.api.switchboard.v1 import gateway_pb2 as pb
from service.outcomes import Completion, StreamEvent


class Provider(Protocol):
    """One deployment's wire protocol: translate the unified request, call, translate back.

    Failures are raised as `UpstreamError` with their class; `stream` yields only
    non-empty `Delta`s and ends with exactly one `StreamFinished`.
    """

    async def complete(self, request: pb.ChatRequest) -> Completion: ...

    def stream(self, request: pb.ChatRequest) -> AsyncGenerator[StreamEvent, None]: ...

    async def aclose(self) -> None: ...
