"""What one request may ask of the gateway is bounded: sizes are checked first and cheaply, and
what an error carries back (violations, upstream text) is bounded too, however big the input."""

from __future__ import annotations

import time

import grpc
import pytest
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2

from service.api.switchboard.v1 import gateway_pb2 as pb
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
    upstream.fault = Fault(status=400, message="reflected " * 100_000)
    stub = await start_gateway(config(upstream))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Chat(chat_request())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(caught.value.details() or "") < 1_500
    log = next(d for d in status_details(caught.value) if isinstance(d, pb.AttemptLog))
    assert log.attempts[0].error_message.endswith("(cut)")
