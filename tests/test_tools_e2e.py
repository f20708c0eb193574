"""Tools, tool results and structured output through the gateway, against the OpenAI mock."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2

from service.api.switchboard.v1 import gateway_pb2 as pb
from tests.conftest import StartGateway, status_details
from tests.mock_openai import MockOpenAI


def config(upstream: MockOpenAI, capabilities: str = "[streaming, tools, json_mode, json_schema]") -> str:
    return f"""
default_group: chat
model_groups:
  - name: chat
    deployments:
      - id: mock
        type: openai_compatible
        model: mock-model
        base_url: {upstream.base_url}
        context_window: 8192
        capabilities: {capabilities}
  - name: plain
    deployments:
      - id: echo
        type: echo
        model: echo
        context_window: 8192
"""


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(value)
    return out


WEATHER = pb.Tool(
    name="get_weather",
    description="The weather in a city",
    parameters=struct({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
)


def user(text: str) -> pb.Message:
    return pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text=text)])


def tool_request(*messages: pb.Message, model: str = "chat", **fields: object) -> pb.ChatRequest:
    return pb.ChatRequest(model=model, messages=messages or [user("weather in Oslo?")], tools=[WEATHER], **fields)  # type: ignore[arg-type]


async def test_a_tool_call_comes_back_as_tool_calls(start_gateway: StartGateway, upstream: MockOpenAI) -> None:
    stub = await start_gateway(config(upstream))
    response = await stub.Chat(tool_request(tool_choice=pb.ToolChoice(tool_name="get_weather")))
    assert response.finish_reason == pb.FINISH_REASON_TOOL_CALLS
    (call,) = response.message.tool_calls
    assert call.name == "get_weather" and call.id
    assert json.loads(call.arguments) == {"text": "weather in Oslo?"}
    assert not response.message.content
    sent = upstream.requests[-1]
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather in a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            },
        }
    ]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}


async def test_the_tool_result_turn_is_answered(start_gateway: StartGateway, upstream: MockOpenAI) -> None:
    stub = await start_gateway(config(upstream))
    call = pb.ToolCall(id="call_1", name="get_weather", arguments='{"city": "Oslo"}')
    response = await stub.Chat(
        tool_request(
            user("weather in Oslo?"),
            pb.Message(role=pb.ROLE_ASSISTANT, tool_calls=[call]),
            pb.Message(role=pb.ROLE_TOOL, tool_call_id="call_1", content=[pb.ContentPart(text="sunny, 21 C")]),
        )
    )
    assert response.finish_reason == pb.FINISH_REASON_STOP
    assert response.message.content[0].text == "mock: tool said: sunny, 21 C"
    assistant, result = upstream.requests[-1]["messages"][1:]
    assert assistant == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
        ],
    }
    assert result == {"role": "tool", "content": "sunny, 21 C", "tool_call_id": "call_1"}


async def test_streamed_tool_call_pieces_reassemble(start_gateway: StartGateway, upstream: MockOpenAI) -> None:
    upstream.chunk_delay_s = 0.01  # one piece per read: the gateway passes them on as they come
    stub = await start_gateway(config(upstream))
    events = [event async for event in stub.ChatStream(tool_request())]
    pieces = [piece for event in events if event.HasField("delta") for piece in event.delta.tool_calls]
    assert len(pieces) > 1
    assert pieces[0].id and pieces[0].name == "get_weather"
    assert all(piece.index == 0 and not piece.name for piece in pieces[1:])
    assert json.loads("".join(piece.arguments for piece in pieces)) == {"text": "weather in Oslo?"}
    assert events[-1].end.finish_reason == pb.FINISH_REASON_TOOL_CALLS


async def test_json_schema_output(start_gateway: StartGateway, upstream: MockOpenAI) -> None:
    stub = await start_gateway(config(upstream))
    schema = struct({"type": "object", "properties": {"answer": {"type": "string"}}})
    request = pb.ChatRequest(
        model="chat",
        messages=[user("hello")],
        response_format=pb.ResponseFormat(
            type=pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA, name="reply", schema=schema, strict=True
        ),
    )
    response = await stub.Chat(request)
    assert json.loads(response.message.content[0].text) == {"answer": "mock: hello"}
    assert upstream.requests[-1]["response_format"] == {
        "type": "json_schema",
        "json_schema": {
            "name": "reply",
            "schema": {"type": "object", "properties": {"answer": {"type": "string"}}},
            "strict": True,
        },
    }


@pytest.mark.parametrize(
    ("request_fields", "capability"),
    [
        ({"tools": [WEATHER]}, "tools"),
        ({"response_format": pb.ResponseFormat(type=pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT)}, "json_mode"),
    ],
    ids=["tools", "json-mode"],
)
async def test_deployments_without_the_capability_are_filtered_out(
    start_gateway: StartGateway, upstream: MockOpenAI, request_fields: dict[str, object], capability: str
) -> None:
    stub = await start_gateway(config(upstream, capabilities="[streaming]"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Chat(pb.ChatRequest(model="chat", messages=[user("json please")], **request_fields))  # type: ignore[arg-type]
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert capability in (caught.value.details() or "")
    assert not upstream.requests
    route = await stub.Route(pb.RouteRequest(model="chat", messages=[user("json please")], **request_fields))  # type: ignore[arg-type]
    assert not route.candidates and route.rejected[0].filter == "capabilities"


def violations(error: grpc.aio.AioRpcError) -> dict[str, str]:
    details = [d for d in status_details(error) if isinstance(d, error_details_pb2.BadRequest)]
    return {v.field: v.description for d in details for v in d.field_violations}


CALL = pb.ToolCall(id="call_1", name="get_weather", arguments="{}")


@pytest.mark.parametrize(
    ("chat", "field"),
    [
        (
            tool_request(
                user("hi"), pb.Message(role=pb.ROLE_TOOL, tool_call_id="call_9", content=[pb.ContentPart(text="x")])
            ),
            "messages[1].tool_call_id",
        ),
        (tool_request(user("hi"), pb.Message(role=pb.ROLE_ASSISTANT, tool_calls=[CALL])), "messages"),
        (
            tool_request(user("hi"), pb.Message(role=pb.ROLE_ASSISTANT, tool_calls=[CALL]), user("and?")),
            "messages[2]",
        ),
        (
            tool_request(
                user("hi"),
                pb.Message(
                    role=pb.ROLE_ASSISTANT, tool_calls=[pb.ToolCall(id="c", name="get_weather", arguments="[1]")]
                ),
                pb.Message(role=pb.ROLE_TOOL, tool_call_id="c", content=[pb.ContentPart(text="x")]),
            ),
            "messages[1].tool_calls[0].arguments",
        ),
        (tool_request(tool_choice=pb.ToolChoice(tool_name="nope")), "tool_choice.tool_name"),
        (pb.ChatRequest(model="chat", messages=[user("hi")], tools=[pb.Tool(name="bad name")]), "tools[0].name"),
        (pb.ChatRequest(model="chat", messages=[user("hi")], tools=[WEATHER, WEATHER]), "tools[1].name"),
        (
            pb.ChatRequest(
                model="chat", messages=[user("hi")], tools=[pb.Tool(name="t", parameters=struct({"type": "array"}))]
            ),
            "tools[0].parameters",
        ),
        (
            pb.ChatRequest(
                model="chat",
                messages=[user("hi")],
                tool_choice=pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_REQUIRED),
            ),
            "tool_choice.mode",
        ),
        (
            pb.ChatRequest(
                model="chat",
                messages=[user("hi")],
                response_format=pb.ResponseFormat(type=pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA),
            ),
            "response_format.name",
        ),
    ],
    ids=[
        "result-without-call",
        "call-never-answered",
        "call-answered-late",
        "arguments-not-an-object",
        "forced-tool-undeclared",
        "bad-tool-name",
        "duplicate-tool",
        "parameters-not-an-object-schema",
        "required-without-tools",
        "schema-without-name",
    ],
)
async def test_malformed_tool_requests_are_invalid_argument(
    start_gateway: StartGateway, upstream: MockOpenAI, chat: pb.ChatRequest, field: str
) -> None:
    stub = await start_gateway(config(upstream))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Chat(chat)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in violations(caught.value), violations(caught.value)
    assert not upstream.requests
