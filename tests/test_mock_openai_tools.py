"""The mock upstream's tool calling, tool results, response_format and stop handling, over HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.mock_openai import Fault, MockOpenAI

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        "strict": False,
    },
}
CLOCK = {"type": "function", "function": {"name": "get_time"}}


@pytest.fixture
async def mock() -> AsyncIterator[MockOpenAI]:
    server = await MockOpenAI().start()
    yield server
    await server.stop()


async def post(mock: MockOpenAI, **body: Any) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{mock.base_url}/chat/completions", json={"model": "gpt-test", **body}) as response,
    ):
        if body.get("stream") and response.status == 200:
            return response.status, await response.text()
        return response.status, await response.json()


async def stream(mock: MockOpenAI, **body: Any) -> list[Any]:
    """The stream's events: decoded chunks, then the literal "[DONE]" if it came."""
    status, text = await post(mock, stream=True, **body)
    assert status == 200, text
    events: list[Any] = []
    for line in text.split("\n\n"):
        if line:
            assert line.startswith("data: ")
            data = line.removeprefix("data: ")
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def asked(*call_ids: str) -> dict[str, Any]:
    calls = [
        {"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
        for call_id in call_ids
    ]
    return {"role": "assistant", "content": None, "tool_calls": calls}


def answered(call_id: str, text: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": text}


async def test_unary_tool_call(mock: MockOpenAI) -> None:
    status, body = await post(mock, messages=[user("weather in Oslo?")], tools=[WEATHER, CLOCK])
    assert status == 200, body
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_mock_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": json.dumps({"text": "weather in Oslo?"})},
            }
        ],
        "refusal": None,
    }
    fragments = -(-len(json.dumps({"text": "weather in Oslo?"})) // 8)
    assert body["usage"]["completion_tokens"] == fragments + 1


async def test_forced_tool_and_counter(mock: MockOpenAI) -> None:
    forced = {"type": "function", "function": {"name": "get_time"}}
    for n in (1, 2):
        _, body = await post(mock, messages=[user("now?")], tools=[WEATHER, CLOCK], tool_choice=forced)
        call = body["choices"][0]["message"]["tool_calls"][0]
        assert (call["id"], call["function"]["name"]) == (f"call_mock_{n}", "get_time")


async def test_tool_choice_none_answers_text(mock: MockOpenAI) -> None:
    _, body = await post(mock, messages=[user("hi")], tools=[WEATHER], tool_choice="none")
    assert body["choices"][0]["message"]["content"] == "mock: hi"
    assert body["choices"][0]["finish_reason"] == "stop"


async def test_streamed_tool_call(mock: MockOpenAI) -> None:
    events = await stream(
        mock, messages=[user("weather in Oslo?")], tools=[WEATHER], stream_options={"include_usage": True}
    )
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    first = chunks[0]["choices"][0]
    assert first["delta"] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"index": 0, "id": "call_mock_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
        ],
    }
    fragments = [chunk["choices"][0]["delta"] for chunk in chunks[1:-2]]
    assert all(set(d) == {"tool_calls"} and d["tool_calls"][0]["index"] == 0 for d in fragments)
    pieces = [d["tool_calls"][0]["function"]["arguments"] for d in fragments]
    assert all(0 < len(piece) <= 8 for piece in pieces)
    assert json.loads("".join(pieces)) == {"text": "weather in Oslo?"}
    finish = chunks[-2]["choices"][0]
    assert (finish["delta"], finish["finish_reason"]) == ({}, "tool_calls")
    assert all(chunk["choices"][0]["finish_reason"] is None for chunk in chunks[:-2])
    usage = chunks[-1]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == len(pieces) + 1


async def test_fault_cuts_tool_call_stream_after_fragments(mock: MockOpenAI) -> None:
    mock.fault = Fault(cut_after=2)
    events = await stream(mock, messages=[user("weather in Oslo?")], tools=[WEATHER])
    assert len(events) == 3 and "[DONE]" not in events
    assert all(event["choices"][0]["finish_reason"] is None for event in events)


async def test_tool_result_is_answered_with_text(mock: MockOpenAI) -> None:
    messages = [user("weather in Oslo?"), asked("call_a"), answered("call_a", "sunny, 21C")]
    _, body = await post(mock, messages=messages, tools=[WEATHER])
    assert body["choices"][0]["message"]["content"] == "mock: tool said: sunny, 21C"
    assert body["choices"][0]["finish_reason"] == "stop"
    events = await stream(mock, messages=messages, tools=[WEATHER])
    text = "".join(event["choices"][0]["delta"].get("content") or "" for event in events[:-1] if event["choices"])
    assert text == "mock: tool said: sunny, 21C"


async def test_parallel_tool_results_with_text_parts(mock: MockOpenAI) -> None:
    messages = [
        user("weather?"),
        asked("call_a", "call_b"),
        answered("call_b", "rain"),
        {"role": "tool", "tool_call_id": "call_a", "content": [{"type": "text", "text": "snow"}]},
    ]
    status, body = await post(mock, messages=messages)
    assert status == 200, body
    assert body["choices"][0]["message"]["content"] == "mock: tool said: snow"


@pytest.mark.parametrize(
    ("body", "param", "needle"),
    [
        (
            {"messages": [user("hi"), answered("call_x", "42")]},
            "messages.[1].role",
            "messages with role 'tool' must be a response to a preceeding message with 'tool_calls'",
        ),
        (
            {"messages": [user("hi"), asked("call_a"), answered("call_b", "42")]},
            "messages.[2].role",
            "must be a response to a preceeding message",
        ),
        (
            {"messages": [user("hi"), asked("call_a", "call_b"), answered("call_a", "1"), user("and?")]},
            "messages.[1].role",
            "The following tool_call_ids did not have response messages: call_b",
        ),
        (
            {"messages": [user("hi"), {"role": "tool", "content": "42"}]},
            "messages[1].tool_call_id",
            "Missing required parameter",
        ),
        (
            {"messages": [user("hi")], "tool_choice": "auto"},
            "tool_choice",
            "'tool_choice' is only allowed when 'tools' are specified",
        ),
        (
            {"messages": [user("hi")], "tools": [{"type": "function", "function": {"name": "get weather"}}]},
            "tools[0].function.name",
            "string does not match pattern",
        ),
        (
            {"messages": [user("hi")], "tools": [{"type": "function", "function": {"name": "x" * 65}}]},
            "tools[0].function.name",
            "string does not match pattern",
        ),
        (
            {"messages": [user("hi")], "tools": [{"type": "retrieval"}]},
            "tools[0].type",
            "Supported values are: 'function'",
        ),
        (
            {"messages": [user("hi")], "tools": [WEATHER] * 129},
            "tools",
            "array too long",
        ),
        (
            {"messages": [user("hi")], "tools": [WEATHER], "tool_choice": "always"},
            "tool_choice",
            "Supported values are",
        ),
        (
            {
                "messages": [user("hi")],
                "tools": [WEATHER],
                "tool_choice": {"type": "function", "function": {"name": "get_time"}},
            },
            "tool_choice.function.name",
            "get_time",
        ),
        (
            {"messages": [user("hi")], "response_format": {"type": "json_object"}},
            "messages",
            "'messages' must contain the word 'json' in some form, to use 'response_format' of type 'json_object'.",
        ),
        (
            {"messages": [user("hi")], "response_format": {"type": "yaml"}},
            "response_format.type",
            "Supported values are: 'text', 'json_object', and 'json_schema'",
        ),
        (
            {"messages": [user("hi")], "response_format": {"type": "json_schema", "json_schema": {"schema": {}}}},
            "response_format.json_schema.name",
            "Missing required parameter",
        ),
    ],
    ids=[
        "tool-without-tool-calls",
        "tool-answering-unknown-id",
        "unanswered-tool-call",
        "tool-without-id",
        "tool-choice-without-tools",
        "bad-tool-name",
        "long-tool-name",
        "non-function-tool",
        "too-many-tools",
        "bad-tool-choice",
        "undeclared-forced-tool",
        "json-object-without-json",
        "bad-response-format",
        "json-schema-without-name",
    ],
)
async def test_invalid_requests_are_400(mock: MockOpenAI, body: dict[str, Any], param: str, needle: str) -> None:
    status, answer = await post(mock, **body)
    assert status == 400
    error = answer["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert needle in error["message"]


async def test_json_object_answer_is_json(mock: MockOpenAI) -> None:
    status, body = await post(mock, messages=[user("reply in JSON please")], response_format={"type": "json_object"})
    assert status == 200, body
    assert json.loads(body["choices"][0]["message"]["content"]) == {"answer": "mock: reply in JSON please"}


async def test_json_schema_answer_is_json_unary_and_streamed(mock: MockOpenAI) -> None:
    response_format = {
        "type": "json_schema",
        "json_schema": {
            "name": "answer",
            "strict": True,
            "schema": {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]},
        },
    }
    _, body = await post(mock, messages=[user("a b c")], response_format=response_format)
    assert json.loads(body["choices"][0]["message"]["content"]) == {"answer": "mock: a b c"}
    events = await stream(mock, messages=[user("a b c")], response_format=response_format)
    pieces = [event["choices"][0]["delta"].get("content") for event in events[1:-2]]
    assert len(pieces) > 1
    assert json.loads("".join(pieces)) == {"answer": "mock: a b c"}


async def test_stop_sequence_cuts_the_reply(mock: MockOpenAI) -> None:
    _, body = await post(mock, messages=[user("one two STOP three")], stop=["zzz", " STOP"])
    assert body["choices"][0]["message"]["content"] == "mock: one two"
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] == 3
    events = await stream(mock, messages=[user("one two STOP three")], stop="two")
    text = "".join(event["choices"][0]["delta"].get("content", "") for event in events[:-1])
    assert text == "mock: one "
    assert events[-2]["choices"][0]["finish_reason"] == "stop"
