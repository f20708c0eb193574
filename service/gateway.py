"""The switchboard.v1.Gateway servicer: validates, then hands each call to the engine of the
runtime current when the call began, which it keeps to its end.

Requests are decoded here rather than by grpc: bytes that are not the message (malformed,
invalid UTF-8 in a string, nested past the decoder's depth) are INVALID_ARGUMENT with a short
reason, not UNKNOWN with an exception's name and a traceback in the log."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TypeAlias, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass

from service.api.switchboard.v1 import gateway_pb2 as pb
from service.api.switchboard.v1 import gateway_pb2_grpc as pb_grpc
from service.errors import MAX_REASON_CHARS, InvalidRequest, stream_errors, unary_errors
from service.redaction import bounded
from service.runtime import Runtimes
from service.validation import validate_chat, validate_route

Context: TypeAlias = grpc.aio.ServicerContext
T = TypeVar("T")


class Undecodable:
    """What arrived where a request was expected, and why it is not one."""

    def __init__(self, message: str, reason: str) -> None:
        self.message = message
        self.reason = reason


def decoded(request: T | Undecodable) -> T:
    if isinstance(request, Undecodable):
        raise InvalidRequest([("request", f"not a valid {request.message}: {request.reason}")])
    return request


def _decoder(message_class: type[Message]) -> Callable[[bytes], Message | Undecodable]:
    name = message_class.DESCRIPTOR.full_name

    def decode(data: bytes) -> Message | Undecodable:
        try:
            return message_class.FromString(data)
        except (DecodeError, RecursionError) as error:
            return Undecodable(name, bounded(str(error), MAX_REASON_CHARS))

    return decode


def add_to_server(servicer: GatewayServicer, server: grpc.aio.Server) -> None:
    """`add_GatewayServicer_to_server`, with requests decoded by `_decoder`."""
    service = pb.DESCRIPTOR.services_by_name["Gateway"]
    handlers = {}
    for method in service.methods:
        handler = (
            grpc.unary_stream_rpc_method_handler if method.server_streaming else grpc.unary_unary_rpc_method_handler
        )
        handlers[method.name] = handler(
            getattr(servicer, method.name),
            request_deserializer=_decoder(GetMessageClass(method.input_type)),
            response_serializer=GetMessageClass(method.output_type).SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    server.add_registered_method_handlers(service.full_name, handlers)


class GatewayServicer(pb_grpc.GatewayServicer):
    def __init__(self, runtimes: Runtimes) -> None:
        self.runtimes = runtimes

    @unary_errors
    async def Chat(self, request: pb.ChatRequest, context: Context) -> pb.ChatResponse:  # noqa: N802
        request = decoded(request)
        with self.runtimes.hold() as runtime:
            validate_chat(request, runtime.config.server.limits)
            return await runtime.engine.chat(request, context.time_remaining)

    @stream_errors
    async def ChatStream(self, request: pb.ChatRequest, context: Context) -> AsyncIterator[pb.ChatStreamResponse]:  # noqa: N802
        request = decoded(request)
        with self.runtimes.hold() as runtime:
            validate_chat(request, runtime.config.server.limits)
            async for event in runtime.engine.chat_stream(request, context.time_remaining):
                yield event

    @unary_errors
    async def Route(self, request: pb.RouteRequest, context: Context) -> pb.RouteResponse:  # noqa: N802
        request = decoded(request)
        runtime = self.runtimes.current
        validate_route(request, runtime.config.server.limits)
        return runtime.engine.route(request)

    @unary_errors
    async def ListModels(self, request: pb.ListModelsRequest, context: Context) -> pb.ListModelsResponse:  # noqa: N802
        decoded(request)
        return self.runtimes.current.models
