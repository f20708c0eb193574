"""The switchboard.v1.Gateway servicer: validates, then hands each call to the engine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TypeAlias

import grpc

from service import responses
from service.api.switchboard.v1 import gateway_pb2 as pb
from service.api.switchboard.v1 import gateway_pb2_grpc as pb_grpc
from service.engine import Engine
from service.errors import stream_errors, unary_errors
from service.validation import validate_chat, validate_route

Context: TypeAlias = grpc.aio.ServicerContext


class GatewayServicer(pb_grpc.GatewayServicer):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # The model list only changes with the config, so it is built once.
        self._models = responses.model_list(engine.config)

    @unary_errors
    async def Chat(self, request: pb.ChatRequest, context: Context) -> pb.ChatResponse:  # noqa: N802
        validate_chat(request)
        return await self.engine.chat(request, context.time_remaining)

    @stream_errors
    async def ChatStream(self, request: pb.ChatRequest, context: Context) -> AsyncIterator[pb.ChatStreamResponse]:  # noqa: N802
        validate_chat(request)
        async for event in self.engine.chat_stream(request, context.time_remaining):
            yield event

    @unary_errors
    async def Route(self, request: pb.RouteRequest, context: Context) -> pb.RouteResponse:  # noqa: N802
        validate_route(request)
        return self.engine.route(request)

    @unary_errors
    async def ListModels(self, request: pb.ListModelsRequest, context: Context) -> pb.ListModelsResponse:  # noqa: N802
        return self._models
