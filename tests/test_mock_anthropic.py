"""The Anthropic Messages API mock over HTTP: answers, streams, tool use, validation and faults."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict

from tests.mock_anthropic import Fault, MockAnthropic

KEY = "sk-ant-test"
VERSION = "2023-06-01"
HEADERS = {"x-api-key": KEY, "anthropic-version": VERSION}
FIXTURES = Path(__file__).parent / "fixtures" / "anthropic"
LOOKUP = {
    "name": "lookup",
    "description": "Look a word up",
    "input_schema": {"type": "object", "properties": {"word": {"type": "string"}}},
}
CLOCK = {"name": "get_time", "input_schema": {"type": "object"}}
TEXT_EVENTS = [
    "message_start",
    "content_block_start",
    "ping",
    *["content_block_delta"] * 4,
    "content_block_stop",
    "message_delta",
    "message_stop",
]


@pytest.fixture
async def mock() -> AsyncIterator[MockAnthropic]:
    server = await MockAnthropic(api_key=KEY).start()
    yield server
    await server.stop()


class Answer:
    def __init__(self, status: int, headers: CIMultiDict[str], text: str) -> None:
        self.status = status
        self.headers = headers
        self.text = text

    def json(self) -> Any:
        return json.loads(self.text)

    def events(self) -> list[tuple[str, str]]:
        return parse_sse(self.text)


async def send(
    mock: MockAnthropic,
    body: Any,
    headers: dict[str, str] | None = None,
    path: str = "/v1/messages",
    timeout_s: float = 10.0,
) -> Answer:
    """POST `body` (a dict as JSON, a str as it is) and read the whole answer."""
    sent = dict(HEADERS if headers is None else headers)
    data = body if isinstance(body, str) else json.dumps(body)
    sent.setdefault("content-type", "application/json")
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session,
        session.post(f"{mock.base_url}{path}", data=data, headers=sent) as response,
    ):
        return Answer(response.status, response.headers.copy(), await response.text())


def ask(text: str = "hi there", **extra: Any) -> dict[str, Any]:
    return {"model": "claude-test", "max_tokens": 100, "messages": [user(text)], **extra}


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def assistant(content: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": content}


def called(*ids: str, text: str | None = None) -> dict[str, Any]:
    blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    blocks += [{"type": "tool_use", "id": i, "name": "lookup", "input": {"word": "cat"}} for i in ids]
    return assistant(blocks)


def result(tool_use_id: str, content: Any = "a feline") -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": tool_use_id, "content": content}


def parse_sse(text: str) -> list[tuple[str, str]]:
    """A stream's (event, data) pairs; every event is exactly an `event:` line and a `data:` line."""
    assert text.endswith("\n\n"), text[-80:]
    events = []
    for chunk in text[:-2].split("\n\n"):
        name, data = chunk.split("\n")
        assert name.startswith("event: ") and data.startswith("data: "), chunk
        events.append((name.removeprefix("event: "), data.removeprefix("data: ")))
    return events


def payloads(events: list[tuple[str, str]]) -> list[dict[str, Any]]:
    decoded = [json.loads(data) for _, data in events]
    assert [payload["type"] for payload in decoded] == [name for name, _ in events]
    return decoded


def shape(payload: Any) -> Any:
    """The keys of a payload at every depth, with the `type` of each object: what a transcript's
    structure is, without its values."""
    if isinstance(payload, dict):
        return (payload.get("type"), tuple(sorted((key, shape(value)) for key, value in payload.items())))
    if isinstance(payload, list):
        return tuple(shape(item) for item in payload)
    return None


def streamed_text(decoded: list[dict[str, Any]]) -> str:
    return "".join(p["delta"]["text"] for p in decoded if p["type"] == "content_block_delta")


def streamed_json(decoded: list[dict[str, Any]]) -> str:
    return "".join(p["delta"]["partial_json"] for p in decoded if p["type"] == "content_block_delta")


# Answers.


async def test_unary_text(mock: MockAnthropic) -> None:
    body = ask("hi there")
    answer = await send(mock, body)
    assert answer.status == 200, answer.text
    assert answer.headers["request-id"] == "req_mock_1"
    assert answer.headers["Content-Type"].startswith("application/json")
    assert answer.json() == {
        "id": "msg_mock_1",
        "type": "message",
        "role": "assistant",
        "content": [{"type": "text", "text": "mock: hi there"}],
        "model": "claude-test",
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": len(json.dumps(body["messages"])) // 4,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 3,
        },
    }
    assert mock.requests == [body]
    assert mock.headers[0]["x-api-key"] == KEY and mock.headers[0]["anthropic-version"] == VERSION


async def test_blocks_system_and_images_are_accepted(mock: MockAnthropic) -> None:
    mock.cached_tokens = 12
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    linked = {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}
    body = ask(
        system=[{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
        metadata={"user_id": "u-1"},
        temperature=0,
        top_p=1,
        top_k=5,
        stop_sequences=["zzz"],
        service_tier="auto",
    )
    body["messages"] = [
        user("first"),
        assistant("noted"),
        user([image, {"type": "text", "text": "what is"}, linked, {"type": "text", "text": "this?"}]),
    ]
    answer = await send(mock, body)
    assert answer.status == 200, answer.text
    message = answer.json()
    assert message["content"] == [{"type": "text", "text": "mock: what is this?"}]
    assert message["usage"]["cache_read_input_tokens"] == 12


async def test_max_tokens_truncates_to_words(mock: MockAnthropic) -> None:
    answer = await send(mock, ask("one two three", max_tokens=2))
    message = answer.json()
    assert message["content"][0]["text"] == "mock: one"
    assert (message["stop_reason"], message["stop_sequence"]) == ("max_tokens", None)
    assert message["usage"]["output_tokens"] == 2


async def test_stop_sequence_cuts_before_it(mock: MockAnthropic) -> None:
    answer = await send(mock, ask("one two three", stop_sequences=["three", " two"]))
    message = answer.json()
    assert message["content"][0]["text"] == "mock: one"
    assert (message["stop_reason"], message["stop_sequence"]) == ("stop_sequence", " two")
    # A stop sequence past max_tokens is never reached.
    message = (await send(mock, ask("one two three", max_tokens=1, stop_sequences=["three"]))).json()
    assert (message["content"][0]["text"], message["stop_reason"]) == ("mock:", "max_tokens")


async def test_prefilled_assistant_turn_is_accepted(mock: MockAnthropic) -> None:
    body = ask("name a colour")
    body["messages"].append(assistant("The colour is"))
    answer = await send(mock, body)
    assert answer.status == 200, answer.text
    assert answer.json()["content"][0]["text"] == "mock: name a colour"


# Streams.


async def test_text_stream_transcript(mock: MockAnthropic) -> None:
    answer = await send(mock, ask("hi there", stream=True))
    assert answer.status == 200, answer.text
    assert answer.headers["Content-Type"].startswith("text/event-stream")
    assert answer.headers["request-id"] == "req_mock_1"
    events = answer.events()
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    decoded = payloads(events)
    start = decoded[0]["message"]
    assert start["content"] == [] and start["stop_reason"] is None and start["stop_sequence"] is None
    assert (start["id"], start["model"], start["usage"]["output_tokens"]) == ("msg_mock_1", "claude-test", 1)
    assert decoded[1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    assert [p["delta"] for p in decoded[3:6]] == [
        {"type": "text_delta", "text": "mock:"},
        {"type": "text_delta", "text": " hi"},
        {"type": "text_delta", "text": " there"},
    ]
    assert all(p["index"] == 0 for p in decoded[1:7] if p["type"] != "ping")
    assert decoded[-2] == {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": 3},
    }
    assert decoded[-1] == {"type": "message_stop"}


@pytest.mark.parametrize(
    "extra",
    [{}, {"max_tokens": 2}, {"stop_sequences": ["c d"]}, {"stop_sequences": ["mock"]}],
    ids=["whole", "max-tokens", "stop-sequence", "stopped-at-once"],
)
async def test_stream_joins_to_the_unary_answer(mock: MockAnthropic, extra: dict[str, Any]) -> None:
    body = ask("a  b c d", **extra)
    unary = (await send(mock, body)).json()
    decoded = payloads((await send(mock, {**body, "stream": True})).events())
    assert streamed_text(decoded) == unary["content"][0]["text"]
    delta = decoded[-2]
    assert delta["delta"] == {"stop_reason": unary["stop_reason"], "stop_sequence": unary["stop_sequence"]}
    assert delta["usage"]["output_tokens"] == unary["usage"]["output_tokens"]
    assert decoded[0]["message"]["usage"]["input_tokens"] == unary["usage"]["input_tokens"]


def documented(name: str) -> list[dict[str, Any]]:
    return payloads(parse_sse((FIXTURES / name).read_text()))


def collapsed(shapes: list[Any]) -> list[Any]:
    """Shapes with runs of equal ones (the deltas of a block) counted once."""
    return [s for i, s in enumerate(shapes) if i == 0 or s != shapes[i - 1]]


async def test_text_stream_has_the_documented_shape(mock: MockAnthropic) -> None:
    """Event for event, key for key, the mock's text stream is built like the documented one."""
    reference = documented("documented_text_stream.sse")
    decoded = payloads((await send(mock, ask("what is the capital of France?", stream=True))).events())
    assert collapsed([shape(p) for p in decoded]) == collapsed([shape(p) for p in reference])


async def test_tool_stream_has_the_documented_shape(mock: MockAnthropic) -> None:
    """The documented tool stream opens with a text block (index 0); the mock's only block is its tool_use,
    with the same events and keys as the documented tool_use block, and the ping after the first start."""
    reference = [p for p in documented("documented_tool_stream.sse") if p.get("index") != 0]
    mock.leading_empty_json_delta = True
    decoded = payloads((await send(mock, ask("define cat", stream=True, tools=[LOOKUP]))).events())
    assert decoded[2] == {"type": "ping"}
    without_ping = [p for p in decoded if p["type"] != "ping"]
    reference = [p for p in reference if p["type"] != "ping"]
    assert collapsed([shape(p) for p in without_ping]) == collapsed([shape(p) for p in reference])
    assert decoded[3]["delta"] == {"type": "input_json_delta", "partial_json": ""}


@pytest.mark.parametrize(
    ("fixture", "body"),
    [
        ("mock_text_stream.sse", ask("what is the capital of France?", stream=True)),
        ("mock_tool_stream.sse", ask("define cat", stream=True, tools=[LOOKUP])),
    ],
    ids=["text", "tool"],
)
async def test_stream_bytes_match_the_golden_transcripts(mock: MockAnthropic, fixture: str, body: Any) -> None:
    """The exact bytes the mock streams for these requests (kept as fixtures an adapter's parser can read)."""
    answer = await send(mock, body)
    assert answer.text == (FIXTURES / fixture).read_text()


async def test_chunk_delay_paces_the_events(mock: MockAnthropic) -> None:
    mock.chunk_delay_s = 0.02
    started = time.monotonic()
    answer = await send(mock, ask("a b c", stream=True))
    assert len(answer.events()) == len(TEXT_EVENTS)
    assert time.monotonic() - started >= 0.02 * len(TEXT_EVENTS)


# Tool use.


async def test_unary_tool_use(mock: MockAnthropic) -> None:
    answer = await send(mock, ask("define cat", tools=[LOOKUP, CLOCK]))
    assert answer.status == 200, answer.text
    message = answer.json()
    assert message["stop_reason"] == "tool_use" and message["stop_sequence"] is None
    assert message["content"] == [
        {"type": "tool_use", "id": "toolu_mock_1", "name": "lookup", "input": {"text": "define cat"}}
    ]
    fragments = -(-len(json.dumps({"text": "define cat"})) // 8)
    assert message["usage"]["output_tokens"] == fragments


@pytest.mark.parametrize(
    ("choice", "name"),
    [
        ({"type": "auto"}, "lookup"),
        ({"type": "any", "disable_parallel_tool_use": True}, "lookup"),
        ({"type": "tool", "name": "get_time"}, "get_time"),
        ({"type": "none"}, None),
    ],
    ids=["auto", "any", "forced", "none"],
)
async def test_tool_choice(mock: MockAnthropic, choice: dict[str, Any], name: str | None) -> None:
    message = (await send(mock, ask("now?", tools=[LOOKUP, CLOCK], tool_choice=choice))).json()
    if name is None:
        assert message["content"] == [{"type": "text", "text": "mock: now?"}]
        assert message["stop_reason"] == "end_turn"
    else:
        assert message["content"][0]["name"] == name and message["stop_reason"] == "tool_use"


async def test_tool_use_ids_count_up(mock: MockAnthropic) -> None:
    for n in (1, 2):
        message = (await send(mock, ask("x", tools=[LOOKUP]))).json()
        assert (message["id"], message["content"][0]["id"]) == (f"msg_mock_{n}", f"toolu_mock_{n}")


async def test_streamed_tool_use(mock: MockAnthropic) -> None:
    answer = await send(mock, ask("define cat", stream=True, tools=[LOOKUP], tool_choice={"type": "any"}))
    events = answer.events()
    arguments = json.dumps({"text": "define cat"})
    fragments = [arguments[i : i + 8] for i in range(0, len(arguments), 8)]
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * len(fragments),
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    decoded = payloads(events)
    assert decoded[1]["content_block"] == {"type": "tool_use", "id": "toolu_mock_1", "name": "lookup", "input": {}}
    pieces = [p["delta"] for p in decoded[3:-3]]
    assert pieces == [{"type": "input_json_delta", "partial_json": fragment} for fragment in fragments]
    assert json.loads(streamed_json(decoded)) == {"text": "define cat"}
    assert decoded[-2]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert decoded[-2]["usage"] == {"output_tokens": len(fragments)}


async def test_leading_empty_json_delta_as_the_api_sends(mock: MockAnthropic) -> None:
    mock.leading_empty_json_delta = True
    decoded = payloads((await send(mock, ask("define cat", stream=True, tools=[LOOKUP]))).events())
    pieces = [p["delta"]["partial_json"] for p in decoded if p["type"] == "content_block_delta"]
    assert pieces[0] == "" and all(pieces[1:])
    assert json.loads("".join(pieces)) == {"text": "define cat"}


async def test_max_tokens_truncates_tool_input(mock: MockAnthropic) -> None:
    body = ask("define cat", tools=[LOOKUP], max_tokens=2)
    message = (await send(mock, body)).json()
    assert message["stop_reason"] == "max_tokens" and message["content"][0]["input"] == {}
    decoded = payloads((await send(mock, {**body, "stream": True})).events())
    assert streamed_json(decoded) == json.dumps({"text": "define cat"})[:16]
    assert decoded[-2]["delta"]["stop_reason"] == "max_tokens"


async def test_tool_results_are_answered_with_text(mock: MockAnthropic) -> None:
    body = ask("define cat and dog", tools=[LOOKUP])
    body["messages"] += [
        called("toolu_1", "toolu_2", text="Looking up."),
        user(
            [
                result("toolu_1"),
                result("toolu_2", [{"type": "text", "text": "a canine"}]),
                {"type": "text", "text": "ok?"},
            ]
        ),
    ]
    message = (await send(mock, body)).json()
    assert message["content"] == [{"type": "text", "text": "mock: tool said: a feline"}]
    assert message["stop_reason"] == "end_turn"
    decoded = payloads((await send(mock, {**body, "stream": True})).events())
    assert streamed_text(decoded) == "mock: tool said: a feline"


async def test_tool_result_with_block_content_and_error_flag(mock: MockAnthropic) -> None:
    body = ask("define cat", tools=[LOOKUP])
    failed = {
        **result("toolu_1", [{"type": "text", "text": "no"}, {"type": "text", "text": "such word"}]),
        "is_error": True,
    }
    body["messages"] += [called("toolu_1"), user([failed])]
    message = (await send(mock, body)).json()
    assert message["content"][0]["text"] == "mock: tool said: no such word"


# Headers and paths.


async def test_missing_and_wrong_key_are_authentication_errors(mock: MockAnthropic) -> None:
    for headers, message in (
        ({"anthropic-version": VERSION}, "x-api-key header is required"),
        ({**HEADERS, "x-api-key": "sk-ant-wrong"}, "invalid x-api-key"),
    ):
        answer = await send(mock, ask(), headers=headers)
        assert answer.status == 401
        assert answer.json()["error"] == {"type": "authentication_error", "message": message}
    assert len(mock.headers) == 2 and mock.headers[1]["x-api-key"] == "sk-ant-wrong"


async def test_no_key_is_checked_without_api_key() -> None:
    server = await MockAnthropic().start()
    try:
        assert (await send(server, ask(), headers={"anthropic-version": VERSION})).status == 200
    finally:
        await server.stop()


async def test_anthropic_version_header_is_required(mock: MockAnthropic) -> None:
    answer = await send(mock, ask(), headers={"x-api-key": KEY})
    assert answer.status == 400
    assert answer.json() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "anthropic-version: header is required"},
        "request_id": "req_mock_1",
    }
    assert answer.headers["request-id"] == "req_mock_1"


async def test_json_content_type_and_body_are_required(mock: MockAnthropic) -> None:
    answer = await send(mock, ask(), headers={**HEADERS, "content-type": "text/plain"})
    assert answer.status == 400 and answer.json()["error"]["type"] == "invalid_request_error"
    answer = await send(mock, "{not json")
    assert answer.status == 400 and answer.json()["error"]["type"] == "invalid_request_error"


async def test_unknown_paths_are_not_found(mock: MockAnthropic) -> None:
    answer = await send(mock, ask(), path="/v1/v1/messages")
    assert answer.status == 404
    assert answer.json()["error"] == {"type": "not_found_error", "message": "Not Found"}
    assert answer.headers["request-id"] == "req_mock_1"


# Validation: each is a 400 invalid_request_error with the API's message.

IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}


def without(key: str) -> dict[str, Any]:
    body = ask()
    del body[key]
    return body


def turns(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": "claude-test", "max_tokens": 100, "messages": list(messages), **extra}


INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("unknown-field", ask(seed=7), "seed: Extra inputs are not permitted"),
    ("openai-field", ask(presence_penalty=0.5), "presence_penalty: Extra inputs are not permitted"),
    ("no-model", without("model"), "model: Field required"),
    ("model-not-string", ask(model=7), "model: Input should be a valid string"),
    ("no-max-tokens", without("max_tokens"), "max_tokens: Field required"),
    ("max-tokens-zero", ask(max_tokens=0), "max_tokens: Input should be greater than or equal to 1"),
    ("max-tokens-float", ask(max_tokens=1.5), "max_tokens: Input should be a valid integer"),
    ("no-messages", without("messages"), "messages: Field required"),
    ("empty-messages", turns(), "messages: at least one message is required"),
    ("messages-not-list", ask(messages={"role": "user"}), "messages: Input should be a valid list"),
    ("hot-temperature", ask(temperature=1.5), "temperature: Input should be less than or equal to 1"),
    ("cold-temperature", ask(temperature=-0.1), "temperature: Input should be greater than or equal to 0"),
    ("top-p", ask(top_p=1.1), "top_p: Input should be less than or equal to 1"),
    ("top-k", ask(top_k=-1), "top_k: Input should be greater than or equal to 0"),
    ("stream-not-bool", ask(stream="yes"), "stream: Input should be a valid boolean"),
    ("stop-not-list", ask(stop_sequences="zzz"), "stop_sequences: Input should be a valid list"),
    ("stop-not-string", ask(stop_sequences=[1]), "stop_sequences.0: Input should be a valid string"),
    ("stop-blank", ask(stop_sequences=["ok", " \n"]), "stop_sequences: each stop sequence must contain non-whitespace"),
    ("system-not-text", ask(system=[{"type": "image"}]), "system.0.type: Input should be 'text'"),
    ("system-number", ask(system=5), "system: Input should be a valid string"),
    ("system-empty-block", ask(system=[{"type": "text", "text": ""}]), "system: text content blocks must be non-empty"),
    ("metadata-extra", ask(metadata={"user": "u"}), "metadata.user: Extra inputs are not permitted"),
    ("service-tier", ask(service_tier="priority"), "service_tier: Input should be 'auto' or 'standard_only'"),
    (
        "thinking-budget",
        ask(thinking={"type": "enabled", "budget_tokens": 100}),
        "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024",
    ),
    (
        "system-role",
        turns({"role": "system", "content": "be brief"}, user("hi")),
        'messages: Unexpected role "system". The Messages API accepts a top-level `system` parameter, '
        'not "system" as an input message role.',
    ),
    (
        "tool-role",
        turns(user("hi"), {"role": "tool", "content": "42"}),
        "messages.1.role: Input should be 'user' or 'assistant'",
    ),
    ("no-role", turns({"content": "hi"}), "messages.0.role: Field required"),
    ("no-content", turns({"role": "user"}), "messages.0.content: Field required"),
    ("message-extra", turns({**user("hi"), "name": "bob"}), "messages.0.name: Extra inputs are not permitted"),
    ("assistant-first", turns(assistant("hello"), user("hi")), 'messages: first message must use the "user" role'),
    (
        "empty-content",
        turns(user("hi"), assistant(""), user("again")),
        "messages.1: all messages must have non-empty content except for the optional final assistant message",
    ),
    (
        "empty-block-list",
        turns(user([])),
        "messages.0: all messages must have non-empty content except for the optional final assistant message",
    ),
    (
        "empty-text-block",
        turns(user([{"type": "text", "text": ""}])),
        "messages: text content blocks must be non-empty",
    ),
    (
        "blank-text-block",
        turns(user([{"type": "text", "text": "  "}])),
        "messages: text content blocks must contain non-whitespace text",
    ),
    (
        "openai-image-part",
        turns(user([{"type": "image_url", "image_url": {"url": "https://x"}}])),
        "messages.0.content.0: Input tag 'image_url' found using 'type' does not match any of the expected tags: "
        "'text', 'image', 'tool_use', 'tool_result'",
    ),
    (
        "untyped-block",
        turns(user([{"text": "hi"}])),
        "messages.0.content.0: Unable to extract tag using discriminator 'type'",
    ),
    (
        "block-extra",
        turns(user([{"type": "text", "text": "hi", "name": "x"}])),
        "messages.0.content.0.text.name: Extra inputs are not permitted",
    ),
    (
        "image-media-type",
        turns(user([{"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": "AA"}}])),
        "messages.0.content.0.image.source.base64.media_type: "
        "Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'",
    ),
    (
        "image-source-type",
        turns(user([{"type": "image", "source": {"type": "file", "file_id": "f"}}])),
        "messages.0.content.0.image.source: Input tag 'file' found using 'type' does not match any of the expected "
        "tags: 'base64', 'url'",
    ),
    (
        "image-url-missing",
        turns(user([{"type": "image", "source": {"type": "url"}}])),
        "messages.0.content.0.image.source.url.url: Field required",
    ),
    (
        "tool-use-input-not-object",
        turns(user("hi"), assistant([{"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": "cat"}])),
        "messages.1.content.0.tool_use.input: Input should be a valid dictionary",
    ),
    (
        "unanswered-tool-use",
        turns(user("hi"), called("toolu_1", "toolu_2"), user([result("toolu_1")])),
        "messages.1: `tool_use` ids were found without `tool_result` blocks immediately after: toolu_2. "
        "Each `tool_use` block must have a corresponding `tool_result` block in the next message.",
    ),
    (
        "tool-use-then-text",
        turns(user("hi"), called("toolu_1"), user("and?")),
        "messages.1: `tool_use` ids were found without `tool_result` blocks immediately after: toolu_1. "
        "Each `tool_use` block must have a corresponding `tool_result` block in the next message.",
    ),
    (
        "tool-use-last",
        turns(user("hi"), called("toolu_1")),
        "messages.1: `tool_use` ids were found without `tool_result` blocks immediately after: toolu_1. "
        "Each `tool_use` block must have a corresponding `tool_result` block in the next message.",
    ),
    (
        "result-answers-nothing",
        turns(user([result("toolu_x")])),
        "messages.0.content.0: unexpected `tool_use_id` found in `tool_result` blocks: toolu_x. "
        "Each `tool_result` block must have a corresponding `tool_use` block in the previous message.",
    ),
    (
        "result-answers-another",
        turns(user("hi"), called("toolu_1"), user([result("toolu_1"), result("toolu_2")])),
        "messages.2.content.1: unexpected `tool_use_id` found in `tool_result` blocks: toolu_2. "
        "Each `tool_result` block must have a corresponding `tool_use` block in the previous message.",
    ),
    (
        "result-after-text",
        turns(user("hi"), called("toolu_1"), user([{"type": "text", "text": "here:"}, result("toolu_1")])),
        "messages.2: Did not find 1 tool_result block(s) at the beginning of this message. "
        "Messages following tool_use blocks must begin with a matching number of tool_result blocks.",
    ),
    (
        "result-error-flag",
        turns(user("hi"), called("toolu_1"), user([{**result("toolu_1"), "is_error": "yes"}])),
        "messages.2.content.0.tool_result.is_error: Input should be a valid boolean",
    ),
    (
        "tool-without-schema",
        ask(tools=[{"name": "lookup"}]),
        "tools.0.custom.input_schema: Field required",
    ),
    (
        "tool-schema-not-object",
        ask(tools=[{"name": "lookup", "input_schema": {"type": "string"}}]),
        "tools.0.custom.input_schema.type: Input should be 'object'",
    ),
    (
        "tool-bad-name",
        ask(tools=[{**LOOKUP, "name": "look up"}]),
        "tools.0.custom.name: String should match pattern '^[a-zA-Z0-9_-]{1,128}$'",
    ),
    (
        "tool-long-name",
        ask(tools=[{**LOOKUP, "name": "x" * 129}]),
        "tools.0.custom.name: String should match pattern '^[a-zA-Z0-9_-]{1,128}$'",
    ),
    (
        "openai-tool",
        ask(tools=[{"type": "function", "function": {"name": "lookup"}}]),
        "tools.0: Input tag 'function' found using 'type' does not match any of the expected tags: 'custom'",
    ),
    (
        "tool-extra",
        ask(tools=[{**LOOKUP, "parameters": {}}]),
        "tools.0.custom.parameters: Extra inputs are not permitted",
    ),
    ("duplicate-tools", ask(tools=[LOOKUP, LOOKUP]), "tools: Tool names must be unique."),
    (
        "choice-without-tools",
        ask(tool_choice={"type": "auto"}),
        "tool_choice may only be specified while providing tools.",
    ),
    (
        "choice-openai-string",
        ask(tools=[LOOKUP], tool_choice="required"),
        "tool_choice: Input should be a valid dictionary or object to extract fields from",
    ),
    (
        "choice-openai-type",
        ask(tools=[LOOKUP], tool_choice={"type": "function", "function": {"name": "lookup"}}),
        "tool_choice: Input tag 'function' found using 'type' does not match any of the expected tags: "
        "'auto', 'any', 'tool', 'none'",
    ),
    (
        "choice-undeclared",
        ask(tools=[LOOKUP], tool_choice={"type": "tool", "name": "get_time"}),
        "Tool 'get_time' not found in provided tools",
    ),
    (
        "choice-parallel-flag",
        ask(tools=[LOOKUP], tool_choice={"type": "auto", "disable_parallel_tool_use": "yes"}),
        "tool_choice.auto.disable_parallel_tool_use: Input should be a valid boolean",
    ),
    (
        "choice-none-extra",
        ask(tools=[LOOKUP], tool_choice={"type": "none", "name": "lookup"}),
        "tool_choice.none.name: Extra inputs are not permitted",
    ),
]


@pytest.mark.parametrize(("body", "message"), [case[1:] for case in INVALID], ids=[case[0] for case in INVALID])
async def test_invalid_requests_are_refused(mock: MockAnthropic, body: dict[str, Any], message: str) -> None:
    answer = await send(mock, body)
    assert answer.status == 400, answer.text
    assert answer.json() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": message},
        "request_id": "req_mock_1",
    }
    assert answer.headers["request-id"] == "req_mock_1"
    assert mock.requests == [body] and mock.messages_made == 0


async def test_the_tool_turn_in_valid_order_is_accepted(mock: MockAnthropic) -> None:
    body = turns(
        user([IMAGE, {"type": "text", "text": "define cat"}]),
        called("toolu_1"),
        user([result("toolu_1"), {"type": "text", "text": "thanks"}]),
        assistant("A cat is a feline."),
        user("and dog?"),
        tools=[LOOKUP],
    )
    answer = await send(mock, body)
    assert answer.status == 200, answer.text
    assert answer.json()["content"][0] == {
        "type": "tool_use",
        "id": "toolu_mock_1",
        "name": "lookup",
        "input": {"text": "and dog?"},
    }


# Faults.


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (402, "billing_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (504, "timeout_error"),
        (529, "overloaded_error"),
        (418, "invalid_request_error"),
        (503, "api_error"),
    ],
)
async def test_fault_status_has_the_matching_error_type(mock: MockAnthropic, status: int, kind: str) -> None:
    mock.fault = Fault(status=status, message="nope", headers={"retry-after": "7"})
    for stream in (False, True):
        answer = await send(mock, ask(stream=stream))
        assert answer.status == status
        assert answer.json()["type"] == "error" and answer.json()["error"] == {"type": kind, "message": "nope"}
        assert answer.headers["retry-after"] == "7" and answer.headers["request-id"].startswith("req_mock_")


async def test_fault_error_type_overrides(mock: MockAnthropic) -> None:
    mock.fault = Fault(status=500, error_type="overloaded_error")
    assert (await send(mock, ask())).json()["error"]["type"] == "overloaded_error"


async def test_prompt_too_long(mock: MockAnthropic) -> None:
    mock.fault = Fault(prompt_too_long=True)
    answer = await send(mock, ask(stream=True))
    assert answer.status == 400
    assert answer.json()["error"] == {
        "type": "invalid_request_error",
        "message": "prompt is too long: 250000 tokens > 200000 maximum",
    }


async def test_validation_comes_before_faults(mock: MockAnthropic) -> None:
    mock.fault = Fault(status=529)
    assert (await send(mock, ask(seed=1))).status == 400


async def test_hang_delays_the_answer(mock: MockAnthropic) -> None:
    mock.fault = Fault(hang_s=5)
    with pytest.raises(asyncio.TimeoutError):
        await send(mock, ask(), timeout_s=0.2)
    mock.fault = Fault(hang_s=0.1)
    started = time.monotonic()
    assert (await send(mock, ask())).status == 200
    assert time.monotonic() - started >= 0.1


async def test_error_event_mid_stream(mock: MockAnthropic) -> None:
    mock.fault = Fault(error_event_after=1)
    answer = await send(mock, ask("x y z", stream=True))
    assert answer.status == 200
    events = answer.events()
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "error",
    ]
    assert events[-1][1] == '{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}'
    assert streamed_text(payloads(events[:-1])) == "mock:"


async def test_error_event_with_another_type(mock: MockAnthropic) -> None:
    mock.fault = Fault(error_event_after=0, error_type="api_error", message="Internal server error")
    events = (await send(mock, ask(stream=True))).events()
    assert json.loads(events[-1][1]) == {
        "type": "error",
        "error": {"type": "api_error", "message": "Internal server error"},
    }


async def test_cut_stream_ends_without_message_stop(mock: MockAnthropic) -> None:
    mock.fault = Fault(cut_after=2)
    answer = await send(mock, ask("x y z", stream=True))
    events = answer.events()
    assert [name for name, _ in events] == TEXT_EVENTS[:5]
    assert streamed_text(payloads(events)) == "mock: x"


async def test_cut_tool_stream_after_fragments(mock: MockAnthropic) -> None:
    mock.fault = Fault(cut_after=2)
    decoded = payloads((await send(mock, ask("define cat", stream=True, tools=[LOOKUP]))).events())
    assert decoded[-1]["type"] == "content_block_delta" and len(streamed_json(decoded)) == 16


async def test_malformed_event(mock: MockAnthropic) -> None:
    mock.fault = Fault(malformed_after=1)
    text = (await send(mock, ask("x y z", stream=True))).text
    assert text.endswith("event: content_block_delta\ndata: {not json\n\n")
    assert "message_stop" not in text
