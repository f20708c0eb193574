"""What one request may ask of the gateway is bounded: sizes are checked first and cheaply, and
what an error carries back (violations, upstream text) is bounded too, however big the input."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2

from service.api.switchboard.v1 import gateway_pb2 as pb
from service.config import parse_config
from service.server import Gateway
from tests.conftest import StartGateway, status_details
from tests.mock_openai import Fault, MockOpenAI
from tests.test_e2e import chat_request, config, user


async def invalid(stub: object, request: pb.ChatRequest) -> tuple[grpc.aio.AioRpcError, dict[str, str]]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Chat(request)  # type: ignore[attr-defined]
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    (bad_request,) = status_details(caught.value)
    assert isinstance(bad_request, error_details_pb2.BadRequest)
    return caught.value, {v.field: v.description for v in bad_request.field_violations}


def nested_schema(depth: int) -> struct_pb2.Struct:
    schema = struct_pb2.Struct()
    schema.update({"type": "object"})
    inner = schema
    for _ in range(depth):
        inner = inner.get_or_create_struct("properties")
    return schema


async def test_a_hundred_thousand_empty_messages_are_refused_at_once(start_gateway: StartGateway) -> None:
    """Before: a 14.9 MB error message (over the trailer limit, so RESOURCE_EXHAUSTED), a log line
    as large and +150 MB of memory. Now one violation naming the limit."""
    stub = await start_gateway(config())
    request = pb.ChatRequest(model="echo", messages=[pb.Message()] * 100_000)
    started = time.perf_counter()
    error, violations = await invalid(stub, request)
    elapsed = time.perf_counter() - started
    assert violations == {"messages": "at most 1000, got 100000"}
    assert len(error.details() or "") < 100
    assert elapsed < 5, "a generous bound: the check itself is a len()"


async def test_many_problems_are_reported_as_the_first_twenty_and_a_count(start_gateway: StartGateway) -> None:
    stub = await start_gateway(config())
    request = pb.ChatRequest(model="echo", messages=[pb.Message(role=pb.ROLE_USER)] * 500)
    error, violations = await invalid(stub, request)
    assert len(violations) == 21
    assert violations["request"] == "and 480 more problems"
    assert len(error.details() or "") < 4_000


async def test_a_huge_name_in_a_request_is_cut_in_the_error(start_gateway: StartGateway) -> None:
    stub = await start_gateway(config())
    request = chat_request(model="echo")
    request.tools.add(name="lookup")
    request.tool_choice.tool_name = "x" * 100_000
    _, violations = await invalid(stub, request)
    assert violations["tool_choice.tool_name"].endswith("more characters)")
    assert len(violations["tool_choice.tool_name"]) < 400


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        (lambda r: r.tools.add(name="deep", parameters=nested_schema(25)), "tools[0].parameters", "more than 20 deep"),
        (lambda r: r.messages[0].content.extend([pb.ContentPart(text="x")] * 65), "messages[0].content", "at most 64"),
        (lambda r: r.metadata.update({str(i): "v" for i in range(65)}), "metadata", "at most 64, got 65"),
        (lambda r: r.routing.tags.extend(["t"] * 65), "routing.tags", "at most 64, got 65"),
        (lambda r: r.messages[0].content.add(text="x" * (2 * 1024 * 1024)), "messages", "bytes of text"),
    ],
    ids=["schema-depth", "parts", "metadata", "tags", "text"],
)
async def test_each_limit_names_its_field(start_gateway: StartGateway, change: object, field: str, says: str) -> None:
    stub = await start_gateway(config())
    request = chat_request(model="echo")
    change(request)  # type: ignore[operator]
    _, violations = await invalid(stub, request)
    assert says in violations[field]


async def test_the_limits_are_configurable(start_gateway: StartGateway) -> None:
    stub = await start_gateway("server: {limits: {max_messages: 2}}\n" + config())
    _, violations = await invalid(stub, pb.ChatRequest(model="echo", messages=[user("a"), user("b"), user("c")]))
    assert violations == {"messages": "at most 2, got 3"}
    assert (await stub.Chat(pb.ChatRequest(model="echo", messages=[user("a"), user("b")]))).message.content


async def test_an_upstreams_error_text_is_cut(start_gateway: StartGateway, upstream: MockOpenAI) -> None:
    # 50 KB: read whole (error bodies are read up to 64 KiB, see test_upstream_bounds), then cut.
    upstream.fault = Fault(status=400, message="reflected " * 5_000)
    stub = await start_gateway(config(upstream))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Chat(chat_request())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(caught.value.details() or "") < 1_500
    log = next(d for d in status_details(caught.value) if isinstance(d, pb.AttemptLog))
    assert log.attempts[0].error_message.endswith("(cut)")


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2) with a one-byte tag."""
    length, size = b"", len(payload)
    while True:
        byte, size = size & 0x7F, size >> 7
        length += bytes([byte | (0x80 if size else 0)])
        if not size:
            return bytes([number << 3 | 2]) + length + payload


def deep_struct_request(depth: int) -> bytes:
    """A ChatRequest whose first tool's parameters nest `depth` Structs, past any decoder."""
    struct = b""
    for _ in range(depth):
        value = _field(5, struct)  # Value.struct_value
        struct = _field(1, _field(1, b"p") + _field(2, value))  # Struct.fields entry {key, value}
    tool = _field(1, b"deep") + _field(3, struct)  # Tool.name, Tool.parameters
    return _field(1, b"echo") + _field(4, tool)  # ChatRequest.model, ChatRequest.tools


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        (b"\xff\xff\xff\xff", "not a valid switchboard.v1.ChatRequest"),
        (_field(1, b"\xff\xfe"), "not a valid switchboard.v1.ChatRequest"),  # model: invalid UTF-8
        (deep_struct_request(200), "not a valid switchboard.v1.ChatRequest"),
    ],
    ids=["garbage", "invalid-utf8", "nested-past-the-decoder"],
)
async def test_bytes_that_are_not_a_request_are_invalid_argument_without_a_traceback(
    payload: bytes, says: str, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = Gateway(parse_config(config()), "127.0.0.1:0", environ={})
    await gateway.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            for method in ("Chat", "ChatStream"):
                call = getattr(channel, "unary_stream" if method == "ChatStream" else "unary_unary")(
                    f"/switchboard.v1.Gateway/{method}", request_serializer=None, response_deserializer=None
                )
                with caplog.at_level(logging.DEBUG), pytest.raises(grpc.aio.AioRpcError) as caught:
                    if method == "ChatStream":
                        [event async for event in call(payload)]
                    else:
                        await call(payload)
                assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
                assert says in (caught.value.details() or "")
    finally:
        await gateway.stop(0)
    assert "Traceback" not in caplog.text


async def test_an_unknown_model_is_reported_with_the_other_problems(start_gateway: StartGateway) -> None:
    stub = await start_gateway(config())
    _, violations = await invalid(stub, pb.ChatRequest(model="nope"))
    assert set(violations) == {"model", "messages"}
    assert "unknown model group 'nope'" in violations["model"]


async def test_a_large_request_is_estimated_off_the_event_loop_by_chat_and_route(
    start_gateway: StartGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past 256 KiB of text the estimate runs on a thread: the answer is the same, and the
    thread is used (its count is what the reservation and the window filter see)."""
    threaded: list[object] = []
    to_thread = asyncio.to_thread

    async def spy(function: Any, /, *args: Any) -> Any:
        threaded.append(function)
        return await to_thread(function, *args)

    monkeypatch.setattr(asyncio, "to_thread", spy)
    stub = await start_gateway(config())
    small, large = "hello there", "word " * 60_000
    assert (await stub.Chat(chat_request(model="echo", text=small))).message.content[0].text == small
    assert not threaded
    answer = await stub.Chat(chat_request(model="echo", text=large))
    assert answer.message.content[0].text == large.strip()
    assert [f.__name__ for f in threaded] == ["estimate_input_tokens"]  # type: ignore[attr-defined]
    threaded.clear()
    route = await stub.Route(pb.RouteRequest(model="echo", messages=[user(large)]))
    assert route.input_tokens > 50_000
    assert [f.__name__ for f in threaded] == ["estimate_input_tokens"]  # type: ignore[attr-defined]
