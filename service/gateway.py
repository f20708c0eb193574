"""The switchboard.v1.Gateway servicer: validates, then hands each call to the engine of the
runtime current when the call began, which it keeps to its end."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TypeAlias

import grpc

from service.api.switchboard.v1 import gateway_pb2 as pb
from service.api.switchboard.v1 import gateway_pb2_grpc as pb_grpc
from service.errors import stream_errors, unary_errors
from service.runtime import Runtimes
from service.validation import validate_chat, validate_route

Context: TypeAlias = grpc.aio.ServicerContext


class GatewayServicer(pb_grpc.GatewayServicer):
    def __init__(self, runtimes: Runtimes) -> None:
        self.runtimes = runtimes

    @unary_errors
    async def Chat(self, request: pb.ChatRequest, context: Context) -> pb.ChatResponse:  # noqa: N802
        with self.runtimes.hold() as runtime:
            validate_chat(request, runtime.config.server.limits)
            return await runtime.engine.chat(request, context.time_remaining)

    @stream_errors
    async def ChatStream(self, request: pb.ChatRequest, context: Context) -> AsyncIterator[pb.ChatStreamResponse]:  # noqa: N802
        with self.runtimes.hold() as runtime:
            validate_chat(request, runtime.config.server.limits)
            async for event in runtime.engine.chat_stream(request, context.time_remaining):
                yield event

    @unary_errors
    async def Route(self, request: pb.RouteRequest, context: Context) -> pb.RouteResponse:  # noqa: N802
        runtime = self.runtimes.current
        validate_route(request, runtime.config.server.limits)
        return runtime.engine.route(request)

    @unary_errors
    async def ListModels(self, request: pb.ListModelsRequest, context: Context) -> pb.ListModelsResponse:  # noqa: N802
        return self.runtimes.current.models
