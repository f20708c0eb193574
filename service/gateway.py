"""The switchboard.v1.Gateway servicer: validates, then hands each call to the engine of the
runtime current when the call began, which it keeps to its end.

Requests are decoded here rather than by grpc: bytes that are not the message (malformed,
invalid UTF-8 in a string, nested past the decoder's depth) are INVALID_ARGUMENT with a short
reason, not UNKNOWN with an exception's name and a traceback in the log."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeAlias, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass

import router_core
from service.access import Call
from service.api.switchboard.v1 import gateway_pb2 as pb
from service.api.switchboard.v1 import gateway_pb2_grpc as pb_grpc
from service.errors import MAX_REASON_CHARS, ClientNotReading, InvalidRequest, NotEnabled, TooManyCalls, call_errors
from service.identity import Caller
from service.ledger import Ledger
from service.peers import peer_address
from service.redaction import bounded
from service.runtime import Runtime, Runtimes
from service.shadows import Shadows
from service.store.records import FeedbackRecord
from service.telemetry import server_span
from service.validation import OverLimits, validate_chat, validate_feedback, validate_route
from service.watchdog import within

Context: TypeAlias = grpc.aio.ServicerContext
T = TypeVar("T")


class Undecodable:
    """What arrived where a request was expected, and why it is not one."""

    def __init__(self, message: str, reason: str) -> None:
        self.message = message
        self.reason = reason


def _validate(request: pb.ChatRequest, runtime: Runtime, caller: Caller) -> None:
    """Every problem of a chat request at once: its own, and its model's when it has others."""
    try:
        validate_chat(request, runtime.config.server.limits)
    except OverLimits:
        raise
    except InvalidRequest as error:
        if not request.model or any(field == "model" for field, _ in error.violations):
            raise
        problem = runtime.engine.model_problem(request, caller)
        if problem is None:
            raise
        raise InvalidRequest([problem, *error.violations]) from None


async def _write(context: Context, event: pb.ChatStreamResponse, timeout_s: float) -> None:
    try:
        await within(context.write(event), timeout_s)
    except TimeoutError:
        raise ClientNotReading(timeout_s) from None


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


class PeerCalls:
    """Chat calls in progress per client address, so that one client cannot hold every upstream
    connection of a deployment however many connections it opens."""

    def __init__(self) -> None:
        self._calls: dict[str, int] = {}

    @contextmanager
    def hold(self, peer: str, limit: int) -> Iterator[None]:
        address = peer_address(peer)
        if self._calls.get(address, 0) >= limit:
            raise TooManyCalls(limit)
        self._calls[address] = self._calls.get(address, 0) + 1
        try:
            yield
        finally:
            self._calls[address] -= 1
            if not self._calls[address]:
                del self._calls[address]


class GatewayServicer(pb_grpc.GatewayServicer):
    def __init__(
        self,
        runtimes: Runtimes,
        router: router_core.Router,
        ledger: Ledger | None = None,
        shadows: Shadows | None = None,
    ) -> None:
        self.runtimes = runtimes
        self.router = router
        self.ledger = ledger
        self.shadows = shadows or Shadows(router, runtimes, ledger)
        self.peers = PeerCalls()

    @call_errors
    async def Chat(self, request: pb.ChatRequest, context: Context, call: Call) -> pb.ChatResponse:  # noqa: N802
        call.caller = self.runtimes.current.auth.caller(context)
        request = decoded(request)
        call.model = request.model
        with server_span(call, context, "chat"), self.runtimes.hold() as runtime:
            settings = runtime.config.server
            _validate(request, runtime, call.caller)
            with (
                self.peers.hold(context.peer(), settings.clients.max_calls_per_peer),
                self.shadows.mirroring(call, request, runtime, streaming=False) as primary,
            ):
                response = await runtime.engine.chat(request, context.time_remaining, call)
                primary.answered(response)
                return response

    @call_errors
    async def ChatStream(self, request: pb.ChatRequest, context: Context, call: Call) -> None:  # noqa: N802
        """Writes rather than yields, so that a client that stops reading (HTTP/2 flow control
        holding the write) is noticed after `write_timeout_s` and the call ended."""
        call.caller = self.runtimes.current.auth.caller(context)
        request = decoded(request)
        call.model = request.model
        with server_span(call, context, "chat"), self.runtimes.hold() as runtime:
            settings = runtime.config.server
            _validate(request, runtime, call.caller)
            with (
                self.peers.hold(context.peer(), settings.clients.max_calls_per_peer),
                self.shadows.mirroring(call, request, runtime, streaming=True) as primary,
            ):
                events = runtime.engine.chat_stream(request, context.time_remaining, call)
                async with contextlib.aclosing(events):
                    async for event in events:
                        await _write(context, event, settings.clients.write_timeout_s)
                        primary.streamed(event)

    @call_errors
    async def Route(self, request: pb.RouteRequest, context: Context, call: Call) -> pb.RouteResponse:  # noqa: N802
        runtime = self.runtimes.current
        call.caller = runtime.auth.caller(context)
        request = decoded(request)
        call.model = request.model
        validate_route(request, runtime.config.server.limits)
        response = await runtime.engine.route(request, call.caller)
        call.model_group = response.model_group
        return response

    @call_errors
    async def ListModels(  # noqa: N802
        self, request: pb.ListModelsRequest, context: Context, call: Call
    ) -> pb.ListModelsResponse:
        runtime = self.runtimes.current
        call.caller = runtime.auth.caller(context)
        decoded(request)
        return call.caller.visible_models(runtime.models)

    @call_errors
    async def Feedback(self, request: pb.FeedbackRequest, context: Context, call: Call) -> pb.FeedbackResponse:  # noqa: N802
        call.caller = self.runtimes.current.auth.caller(context)
        request = decoded(request)
        validate_feedback(request)
        if self.ledger is None:
            raise NotEnabled("feedback is kept in the ledger, which is off: set ledger: {enabled: true}")
        score = request.score if request.HasField("score") else None
        record = FeedbackRecord(
            time.time(), request.request_id, call.tenant, call.key_id, score, request.label, request.comment
        )
        self.ledger.record_feedback(record)
        return pb.FeedbackResponse()
