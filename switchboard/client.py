"""A thin async client for Switchboard's Gateway API, over the generated stubs.

The common case in a line: `await client.chat("hello", model="auto")` answers text; `async for
piece in client.stream("hello")` yields the answer's text as it comes; a failed call raises
`SwitchboardError` with its details decoded (the ErrorInfo reason, field violations, when to
retry, every attempt). Anything else the API offers is one step away: pass whole `Message`s
instead of a prompt, read `Answer.response` (the ChatResponse), or call `client.stub` (the
generated GatewayStub) directly. Retries and fallbacks are the gateway's: the client makes one
call per method call and never retries.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

from service.api.switchboard.v1 import gateway_pb2 as pb
from service.api.switchboard.v1 import gateway_pb2_grpc as pb_grpc

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_TIMEOUT_S = 60.0
_DETAILS_TRAILER = "grpc-status-details-bin"

Prompt = str | Sequence[pb.Message]


@dataclass
class SwitchboardError(Exception):
    """A call the gateway refused or could not serve, with what its error details say."""

    code: grpc.StatusCode
    message: str
    # The ErrorInfo's reason (a value of the contract's ErrorReason, without its prefix), and its
    # metadata; empty when the error carried none (INVALID_ARGUMENT carries field violations).
    reason: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    field_violations: list[tuple[str, str]] = field(default_factory=list)
    # When trying again could succeed (RetryInfo), in seconds.
    retry_after_s: float | None = None
    attempts: list[pb.Attempt] = field(default_factory=list)

    def __str__(self) -> str:
        reason = f" {self.reason}" if self.reason else ""
        return f"{self.code.name}{reason}: {self.message}"

    @classmethod
    def of(cls, error: grpc.aio.AioRpcError) -> SwitchboardError:
        """The error a failed call raised, its details decoded from the status trailer."""
        raised = cls(error.code(), error.details() or "")
        for detail in _details(error):
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                raised.reason, raised.metadata = info.reason, dict(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                raised.field_violations = [(v.field, v.description) for v in bad.field_violations]
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
                raised.retry_after_s = retry.retry_delay.ToTimedelta().total_seconds()
            elif detail.Is(pb.AttemptLog.DESCRIPTOR):
                log = pb.AttemptLog()
                detail.Unpack(log)
                raised.attempts = list(log.attempts)
        return raised


def _details(error: grpc.aio.AioRpcError) -> list[Any]:
    for key, value in error.trailing_metadata() or ():
        if key == _DETAILS_TRAILER and isinstance(value, bytes):
            status = status_pb2.Status()
            try:
                status.ParseFromString(value)
            except DecodeError:
                return []
            return list(status.details)
    return []


@dataclass(frozen=True)
class Answer:
    """A Chat's answer: its text, and the whole ChatResponse for the rest."""

    text: str
    response: pb.ChatResponse

    @property
    def id(self) -> str:
        """The gateway's id for the call (for Feedback, and its logs)."""
        return self.response.id

    @property
    def deployment(self) -> str:
        return self.response.served.deployment

    @property
    def tool_calls(self) -> list[pb.ToolCall]:
        return list(self.response.message.tool_calls)


class Stream:
    """A ChatStream as an async iterator of the answer's text; `start` and `end` hold the first
    and last events once they have come."""

    def __init__(self, call: grpc.aio.UnaryStreamCall[pb.ChatRequest, pb.ChatStreamResponse]) -> None:
        self._call = call
        self.start: pb.StreamStart | None = None
        self.end: pb.StreamEnd | None = None

    def __aiter__(self) -> AsyncIterator[str]:
        return self._texts()

    async def _texts(self) -> AsyncIterator[str]:
        try:
            async for event in self._call:
                kind = event.WhichOneof("event")
                if kind == "start":
                    self.start = event.start
                elif kind == "end":
                    self.end = event.end
                elif event.delta.text:
                    yield event.delta.text
        except grpc.aio.AioRpcError as error:
            raise SwitchboardError.of(error) from error

    async def text(self) -> str:
        """The whole answer's text, once the stream has ended."""
        return "".join([piece async for piece in self])

    def cancel(self) -> None:
        """Stops the stream: the gateway closes its upstream call and gives the lease back."""
        self._call.cancel()


class Client:
    """One channel to a gateway. `async with Client(...) as client:` closes it at the end."""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        api_key: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        channel: grpc.aio.Channel | None = None,
    ) -> None:
        """`api_key` is sent as `authorization: Bearer <key>`; `credentials` make the channel TLS
        (plaintext without); `timeout_s` is each call's deadline unless the call names its own."""
        if channel is None:
            channel = (
                grpc.aio.insecure_channel(target)
                if credentials is None
                else grpc.aio.secure_channel(target, credentials)
            )
        self._channel = channel
        self._metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        self._timeout_s = timeout_s
        self.stub = pb_grpc.GatewayStub(channel)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def chat(
        self,
        prompt: Prompt,
        *,
        model: str = "auto",
        system: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        metadata: Mapping[str, str] | None = None,
        routing: pb.RoutingHints | None = None,
        timeout_s: float | None = None,
    ) -> Answer:
        """One answer to `prompt` (a user message's text, or whole messages)."""
        request = chat_request(prompt, model, system, max_tokens, temperature, metadata, routing)
        try:
            response = await self.stub.Chat(request, timeout=self._deadline(timeout_s), metadata=self._metadata)
        except grpc.aio.AioRpcError as error:
            raise SwitchboardError.of(error) from error
        return Answer(answer_text(response.message), response)

    def stream(
        self,
        prompt: Prompt,
        *,
        model: str = "auto",
        system: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        metadata: Mapping[str, str] | None = None,
        routing: pb.RoutingHints | None = None,
        timeout_s: float | None = None,
    ) -> Stream:
        """The answer to `prompt` as it comes: iterate the returned Stream for its text."""
        request = chat_request(prompt, model, system, max_tokens, temperature, metadata, routing)
        return Stream(self.stub.ChatStream(request, timeout=self._deadline(timeout_s), metadata=self._metadata))

    async def route(self, prompt: Prompt, *, model: str = "auto", timeout_s: float | None = None) -> pb.RouteResponse:
        """Where `prompt` would be routed, without calling any provider."""
        request = pb.RouteRequest(model=model, messages=_messages(prompt, None))
        try:
            response: pb.RouteResponse = await self.stub.Route(
                request, timeout=self._deadline(timeout_s), metadata=self._metadata
            )
        except grpc.aio.AioRpcError as error:
            raise SwitchboardError.of(error) from error
        return response

    async def feedback(
        self,
        request_id: str,
        *,
        score: float | None = None,
        label: str = "",
        comment: str = "",
        timeout_s: float | None = None,
    ) -> None:
        """Reports on an answered call (`Answer.id`): a score, a label, a comment."""
        request = pb.FeedbackRequest(request_id=request_id, score=score, label=label, comment=comment)
        try:
            await self.stub.Feedback(request, timeout=self._deadline(timeout_s), metadata=self._metadata)
        except grpc.aio.AioRpcError as error:
            raise SwitchboardError.of(error) from error

    def _deadline(self, timeout_s: float | None) -> float:
        return self._timeout_s if timeout_s is None else timeout_s


def chat_request(
    prompt: Prompt,
    model: str,
    system: str | None = None,
    max_tokens: int | None = None,
    temperature: float | None = None,
    metadata: Mapping[str, str] | None = None,
    routing: pb.RoutingHints | None = None,
) -> pb.ChatRequest:
    """The ChatRequest for a prompt: its text as a user message (after `system`, if given), or
    the messages given."""
    params = pb.GenerationParams(max_tokens=max_tokens, temperature=temperature)
    return pb.ChatRequest(
        model=model, messages=_messages(prompt, system), params=params, metadata=metadata, routing=routing
    )


def _messages(prompt: Prompt, system: str | None) -> list[pb.Message]:
    messages = [_text_message(pb.ROLE_SYSTEM, system)] if system else []
    if isinstance(prompt, str):
        return [*messages, _text_message(pb.ROLE_USER, prompt)]
    return [*messages, *prompt]


def _text_message(role: pb.Role, text: str) -> pb.Message:
    return pb.Message(role=role, content=[pb.ContentPart(text=text)])


def answer_text(message: pb.Message) -> str:
    """A message's text: its text parts, joined."""
    return "".join(part.text for part in message.content if part.WhichOneof("part") == "text")
