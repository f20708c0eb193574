"""The Anthropic adapter against the Messages API mock: wire format both ways, tools, streams, error classes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from service.api.switchboard.v1 import gateway_pb2 as pb
from service.config import AnthropicDeployment
from service.outcomes import Delta, StreamFinished, UpstreamError
from service.providers.anthropic import AnthropicProvider
from tests.adapters import LOOKUP, failures, request, text
from tests.mock_anthropic import Fault, MockAnthropic


@pytest.fixture
async def anthropic() -> AsyncIterator[MockAnthropic]:
    mock = await MockAnthropic(api_key="sk-ant-right").start()
    yield mock
    await mock.stop()


def deployment(base_url: str, timeout_s: float = 5.0) -> AnthropicDeployment:
    return AnthropicDeployment.model_validate(
        {
            "type": "anthropic",
            "model": "claude-test",
            "base_url": base_url,
            "timeout_s": timeout_s,
            "default_max_tokens": 512,
        }
    )


@pytest.fixture
async def provider(anthropic: MockAnthropic) -> AsyncIterator[AnthropicProvider]:
    adapter = AnthropicProvider(deployment(anthropic.base_url), api_key="sk-ant-right")
    yield adapter
    await adapter.aclose()


async def test_unary_translates_both_ways(provider: AnthropicProvider, anthropic: MockAnthropic) -> None:
    anthropic.cached_tokens = 5
    completion = await provider.complete(request(temperature=0.5, stop=["zzz"]))
    assert completion.text == "mock: hi there"
    assert completion.finish_reason == pb.FINISH_REASON_STOP
    assert completion.provider_request_id.startswith("msg_")
    assert completion.usage.cached_input_tokens == 5
    assert completion.usage.input_tokens > 5 and completion.usage.output_tokens > 0
    sent = anthropic.requests[-1]
    assert sent["system"] == "be brief"
    assert sent["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi there"}]}]
    assert sent["max_tokens"] == 512 and sent["temperature"] == 0.5 and sent["stop_sequences"] == ["zzz"]
    headers = anthropic.headers[-1]
    assert headers["x-api-key"] == "sk-ant-right" and headers["anthropic-version"] == "2023-06-01"


async def test_max_tokens_truncates_with_length(provider: AnthropicProvider) -> None:
    completion = await provider.complete(request(text(pb.ROLE_USER, "one two three"), max_tokens=2))
    assert completion.finish_reason == pb.FINISH_REASON_LENGTH
    assert completion.text == "mock: one"


async def test_stream_matches_the_unary_answer(provider: AnthropicProvider) -> None:
    events = [event async for event in provider.stream(request())]
    deltas = [event for event in events if isinstance(event, Delta)]
    assert "".join(d.text for d in deltas) == "mock: hi there"
    finished = events[-1]
    assert isinstance(finished, StreamFinished)
    assert finished.finish_reason == pb.FINISH_REASON_STOP
    assert finished.usage.output_tokens > 0 and finished.provider_request_id.startswith("msg_")


async def test_a_tool_call_unary(provider: AnthropicProvider, anthropic: MockAnthropic) -> None:
    chat = request(text(pb.ROLE_USER, "define cat"))
    chat.tools.append(LOOKUP)
    chat.tool_choice.mode = pb.TOOL_CHOICE_MODE_REQUIRED
    completion = await provider.complete(chat)
    assert completion.finish_reason == pb.FINISH_REASON_TOOL_CALLS
    (call,) = completion.tool_calls
    assert call.name == "lookup" and call.id.startswith("toolu_")
    assert json.loads(call.arguments) == {"text": "define cat"}
    sent = anthropic.requests[-1]
    assert sent["tools"] == [
        {"name": "lookup", "description": "Look a word up", "input_schema": {"type": "object", "properties": {}}}
    ]
    assert sent["tool_choice"] == {"type": "any"}


async def test_a_tool_call_streamed_in_pieces(provider: AnthropicProvider, anthropic: MockAnthropic) -> None:
    anthropic.chunk_delay_s = 0.005
    anthropic.leading_empty_json_delta = True  # as the real API opens a tool_use block
    chat = request(text(pb.ROLE_USER, "define cat"))
    chat.tools.append(LOOKUP)
    chat.tool_choice.tool_name = "lookup"
    events = [event async for event in provider.stream(chat)]
    pieces = [piece for event in events if isinstance(event, Delta) for piece in event.tool_calls]
    assert pieces[0].id.startswith("toolu_") and pieces[0].name == "lookup"
    assert all(piece.index == 0 for piece in pieces) and len(pieces) > 2
    assert json.loads("".join(piece.arguments for piece in pieces)) == {"text": "define cat"}
    assert anthropic.requests[-1]["tool_choice"] == {"type": "tool", "name": "lookup"}
    finished = events[-1]
    assert isinstance(finished, StreamFinished) and finished.finish_reason == pb.FINISH_REASON_TOOL_CALLS


async def test_tool_results_go_back_as_tool_result_blocks(
    provider: AnthropicProvider, anthropic: MockAnthropic
) -> None:
    calls = [
        pb.ToolCall(id="toolu_1", name="lookup", arguments='{"word": "cat"}'),
        pb.ToolCall(id="toolu_2", name="lookup", arguments='{"word": "dog"}'),
    ]
    chat = request(
        text(pb.ROLE_USER, "define cat and dog"),
        pb.Message(role=pb.ROLE_ASSISTANT, content=[pb.ContentPart(text="Looking up.")], tool_calls=calls),
        pb.Message(role=pb.ROLE_TOOL, tool_call_id="toolu_1", content=[pb.ContentPart(text="a feline")]),
        pb.Message(role=pb.ROLE_TOOL, tool_call_id="toolu_2", content=[pb.ContentPart(text="a canine")]),
    )
    chat.tools.append(LOOKUP)
    completion = await provider.complete(chat)
    assert completion.text == "mock: tool said: a feline"
    assert anthropic.requests[-1]["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Looking up."},
                {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"word": "cat"}},
                {"type": "tool_use", "id": "toolu_2", "name": "lookup", "input": {"word": "dog"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "a feline"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "a canine"},
            ],
        },
    ]


@pytest.mark.parametrize(
    ("fault", "outcome"),
    [
        (Fault(status=429, headers={"retry-after": "7"}), pb.OUTCOME_RATE_LIMITED),
        (Fault(status=529), pb.OUTCOME_OVERLOADED),
        (Fault(status=500), pb.OUTCOME_SERVER_ERROR),
        (Fault(status=401), pb.OUTCOME_AUTH_ERROR),
        (Fault(status=400), pb.OUTCOME_BAD_REQUEST),
        (Fault(prompt_too_long=True), pb.OUTCOME_CONTEXT_WINDOW_EXCEEDED),
    ],
    ids=["rate-limited", "overloaded", "server-error", "auth", "bad-request", "prompt-too-long"],
)
async def test_http_errors_are_classified(
    provider: AnthropicProvider, anthropic: MockAnthropic, fault: Fault, outcome: int
) -> None:
    anthropic.fault = fault
    unary, stream = await failures(provider, request())
    assert (unary.outcome, stream.outcome) == (outcome, outcome)
    if outcome == pb.OUTCOME_RATE_LIMITED:
        assert unary.retry_after_s == stream.retry_after_s == 7


async def test_wrong_key_is_auth_error(anthropic: MockAnthropic) -> None:
    adapter = AnthropicProvider(deployment(anthropic.base_url), api_key="sk-ant-wrong")
    with pytest.raises(UpstreamError) as caught:
        await adapter.complete(request())
    assert caught.value.outcome == pb.OUTCOME_AUTH_ERROR
    await adapter.aclose()


@pytest.mark.parametrize(
    ("fault", "outcome"),
    [
        (Fault(cut_after=1), pb.OUTCOME_PROTOCOL_ERROR),
        (Fault(malformed_after=1), pb.OUTCOME_PROTOCOL_ERROR),
        (Fault(error_event_after=1), pb.OUTCOME_OVERLOADED),
    ],
    ids=["truncated", "malformed", "error-event"],
)
async def test_broken_streams_fail_after_their_content(
    provider: AnthropicProvider, anthropic: MockAnthropic, fault: Fault, outcome: int
) -> None:
    anthropic.fault = fault
    received: list[str] = []
    with pytest.raises(UpstreamError) as caught:
        async for event in provider.stream(request(text(pb.ROLE_USER, "x y z"))):
            if isinstance(event, Delta):
                received.append(event.text)
    assert caught.value.outcome == outcome
    assert "".join(received) == "mock:"


@pytest.mark.parametrize(
    ("chat", "named"),
    [
        (request(seed=7), "params.seed"),
        (request(presence_penalty=0.5), "params.presence_penalty"),
        (request(temperature=1.5), "temperature above 1"),
        (
            pb.ChatRequest(
                model="g",
                messages=[text(pb.ROLE_USER, "json")],
                response_format=pb.ResponseFormat(type=pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT),
            ),
            "response_format",
        ),
    ],
    ids=["seed", "presence-penalty", "hot-temperature", "json-mode"],
)
async def test_what_anthropic_cannot_do_is_refused_not_dropped(
    provider: AnthropicProvider, anthropic: MockAnthropic, chat: pb.ChatRequest, named: str
) -> None:
    with pytest.raises(UpstreamError) as caught:
        await provider.complete(chat)
    assert caught.value.outcome == pb.OUTCOME_BAD_REQUEST and named in caught.value.message
    assert not anthropic.requests


FIXTURES = Path(__file__).parent / "fixtures" / "anthropic"


async def replay(transcript: str) -> tuple[web.AppRunner, str]:
    """A server that answers every request with a recorded event stream, byte for byte."""

    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=(FIXTURES / transcript).read_bytes(), content_type="text/event-stream")

    app = web.Application()
    app.router.add_post("/v1/messages", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


async def test_the_documented_tool_stream_transcript() -> None:
    runner, base_url = await replay("documented_tool_stream.sse")
    adapter = AnthropicProvider(deployment(base_url), api_key="k")
    try:
        events = [event async for event in adapter.stream(request())]
    finally:
        await adapter.aclose()
        await runner.cleanup()
    deltas = [event for event in events if isinstance(event, Delta)]
    assert "".join(d.text for d in deltas) == "Let me look that word up."
    pieces = [piece for d in deltas for piece in d.tool_calls]
    assert pieces[0].id == "toolu_01DocShapeToolUse0001" and pieces[0].name == "lookup"
    assert {piece.index for piece in pieces} == {0}  # the first tool call, though the second content block
    assert isinstance(json.loads("".join(piece.arguments for piece in pieces)), dict)
    finished = events[-1]
    assert isinstance(finished, StreamFinished)
    assert finished.finish_reason == pb.FINISH_REASON_TOOL_CALLS
    assert finished.provider_request_id == "msg_01DocShapeToolStream0001"
    assert finished.usage.input_tokens == 402 and finished.usage.output_tokens > 1


async def test_the_documented_text_stream_transcript() -> None:
    runner, base_url = await replay("documented_text_stream.sse")
    adapter = AnthropicProvider(deployment(base_url), api_key="k")
    try:
        events = [event async for event in adapter.stream(request())]
    finally:
        await adapter.aclose()
        await runner.cleanup()
    assert "".join(e.text for e in events if isinstance(e, Delta))
    finished = events[-1]
    assert isinstance(finished, StreamFinished) and finished.finish_reason == pb.FINISH_REASON_STOP
