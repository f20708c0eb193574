"""The Gemini adapter against the Gemini API mock: wire format both ways, function calls, safety, errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from google.protobuf import struct_pb2

from service.api.switchboard.v1 import gateway_pb2 as pb
from service.config import GeminiDeployment
from service.outcomes import Delta, StreamFinished, UpstreamError
from service.providers.gemini import GeminiProvider
from tests.adapters import LOOKUP, failures, request, text
from tests.mock_gemini import Fault, MockGemini


@pytest.fixture
async def gemini() -> AsyncIterator[MockGemini]:
    mock = await MockGemini(api_key="g-key").start()
    yield mock
    await mock.stop()


def deployment(base_url: str) -> GeminiDeployment:
    return GeminiDeployment.model_validate({"type": "gemini", "model": "gemini-test", "base_url": base_url})


@pytest.fixture
async def provider(gemini: MockGemini) -> AsyncIterator[GeminiProvider]:
    adapter = GeminiProvider(deployment(gemini.base_url), api_key="g-key")
    yield adapter
    await adapter.aclose()


async def test_unary_translates_both_ways(provider: GeminiProvider, gemini: MockGemini) -> None:
    gemini.cached_tokens = 3
    completion = await provider.complete(request(temperature=0.3, max_tokens=50, stop=["zzz"]))
    assert completion.text == "mock: hi there"
    assert completion.finish_reason == pb.FINISH_REASON_STOP
    assert completion.usage.input_tokens > 0 and completion.usage.output_tokens > 0
    assert completion.usage.cached_input_tokens == 3
    assert completion.provider_request_id
    sent = gemini.requests[-1]
    assert sent["systemInstruction"] == {"parts": [{"text": "be brief"}]}
    assert sent["contents"] == [{"role": "user", "parts": [{"text": "hi there"}]}]
    assert sent["generationConfig"] == {"temperature": 0.3, "maxOutputTokens": 50, "stopSequences": ["zzz"]}
    assert gemini.headers[-1]["x-goog-api-key"] == "g-key"


async def test_max_tokens_truncates_with_length(provider: GeminiProvider) -> None:
    completion = await provider.complete(request(text(pb.ROLE_USER, "one two three"), max_tokens=2))
    assert completion.finish_reason == pb.FINISH_REASON_LENGTH and completion.text == "mock: one"


async def test_stream_matches_the_unary_answer(provider: GeminiProvider) -> None:
    events = [event async for event in provider.stream(request())]
    assert "".join(e.text for e in events if isinstance(e, Delta)) == "mock: hi there"
    finished = events[-1]
    assert isinstance(finished, StreamFinished) and finished.finish_reason == pb.FINISH_REASON_STOP
    assert finished.usage.output_tokens > 0


async def test_a_function_call_unary_and_streamed(provider: GeminiProvider, gemini: MockGemini) -> None:
    chat = request(text(pb.ROLE_USER, "define cat"))
    chat.tools.append(LOOKUP)
    chat.tool_choice.tool_name = "lookup"
    completion = await provider.complete(chat)
    assert completion.finish_reason == pb.FINISH_REASON_TOOL_CALLS
    (call,) = completion.tool_calls
    assert call.name == "lookup" and call.id and json.loads(call.arguments) == {"text": "define cat"}
    sent = gemini.requests[-1]
    assert sent["tools"] == [{"functionDeclarations": [{"name": "lookup", "description": "Look a word up"}]}]
    assert sent["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["lookup"]}}
    events = [event async for event in provider.stream(chat)]
    (piece,) = [piece for e in events if isinstance(e, Delta) for piece in e.tool_calls]
    assert piece.index == 0 and piece.name == "lookup" and json.loads(piece.arguments) == {"text": "define cat"}
    assert piece.id != call.id  # ids the adapter makes are unique
    finished = events[-1]
    assert isinstance(finished, StreamFinished) and finished.finish_reason == pb.FINISH_REASON_TOOL_CALLS


async def test_function_results_are_answered_by_name(provider: GeminiProvider, gemini: MockGemini) -> None:
    chat = request(
        text(pb.ROLE_USER, "define cat"),
        pb.Message(role=pb.ROLE_ASSISTANT, tool_calls=[pb.ToolCall(id="c1", name="lookup", arguments='{"w": "cat"}')]),
        pb.Message(role=pb.ROLE_TOOL, tool_call_id="c1", content=[pb.ContentPart(text="a feline")]),
    )
    chat.tools.append(LOOKUP)
    completion = await provider.complete(chat)
    assert completion.text == 'mock: tool said: {"result": "a feline"}'
    assert gemini.requests[-1]["contents"][1:] == [
        {"role": "model", "parts": [{"functionCall": {"name": "lookup", "args": {"w": "cat"}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "lookup", "response": {"result": "a feline"}}}]},
    ]


async def test_json_schema_output(provider: GeminiProvider, gemini: MockGemini) -> None:
    schema = struct_pb2.Struct()
    schema.update({"type": "object", "properties": {"answer": {"type": "string"}}})
    chat = request(text(pb.ROLE_USER, "hello"))
    chat.response_format.CopyFrom(
        pb.ResponseFormat(type=pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA, name="reply", schema=schema)
    )
    completion = await provider.complete(chat)
    assert json.loads(completion.text) == {"answer": "mock: hello"}
    config = gemini.requests[-1]["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseJsonSchema"] == {"type": "object", "properties": {"answer": {"type": "string"}}}


async def test_safety_blocks_are_content_filter_outcomes(provider: GeminiProvider, gemini: MockGemini) -> None:
    gemini.block_prompt = True
    unary, stream = await failures(provider, request())
    assert (unary.outcome, stream.outcome) == (pb.OUTCOME_CONTENT_FILTERED, pb.OUTCOME_CONTENT_FILTERED)
    gemini.block_prompt = False
    gemini.safety_stop = True
    with pytest.raises(UpstreamError) as caught:
        await provider.complete(request())
    assert caught.value.outcome == pb.OUTCOME_CONTENT_FILTERED


@pytest.mark.parametrize(
    ("fault", "outcome"),
    [
        (Fault(status=429, headers={"retry-after": "7"}), pb.OUTCOME_RATE_LIMITED),
        (Fault(status=503), pb.OUTCOME_OVERLOADED),
        (Fault(status=500), pb.OUTCOME_SERVER_ERROR),
        (Fault(status=403), pb.OUTCOME_AUTH_ERROR),
        (Fault(status=400), pb.OUTCOME_BAD_REQUEST),
        (Fault(prompt_too_long=True), pb.OUTCOME_CONTEXT_WINDOW_EXCEEDED),
    ],
    ids=["rate-limited", "overloaded", "server-error", "permission", "bad-request", "prompt-too-long"],
)
async def test_http_errors_are_classified(
    provider: GeminiProvider, gemini: MockGemini, fault: Fault, outcome: int
) -> None:
    gemini.fault = fault
    unary, stream = await failures(provider, request())
    assert (unary.outcome, stream.outcome) == (outcome, outcome)
    if outcome == pb.OUTCOME_RATE_LIMITED:
        assert unary.retry_after_s == stream.retry_after_s == 7


async def test_an_invalid_key_is_auth_error_with_the_status_gemini_sent(gemini: MockGemini) -> None:
    adapter = GeminiProvider(deployment(gemini.base_url), api_key="wrong")
    with pytest.raises(UpstreamError) as caught:
        await adapter.complete(request())
    await adapter.aclose()
    assert (caught.value.outcome, caught.value.status) == (pb.OUTCOME_AUTH_ERROR, 400)


async def test_a_429_waits_the_retry_delay_gemini_puts_in_its_body(
    provider: GeminiProvider, gemini: MockGemini
) -> None:
    gemini.fault = Fault(status=429, retry_delay_s=2)
    unary, stream = await failures(provider, request())
    assert (
        (unary.outcome, unary.retry_after_s)
        == (stream.outcome, stream.retry_after_s)
        == (
            pb.OUTCOME_RATE_LIMITED,
            2.0,
        )
    )


@pytest.mark.parametrize(
    ("fault", "outcome"),
    [
        (Fault(cut_after=1), pb.OUTCOME_PROTOCOL_ERROR),
        (Fault(malformed_after=1), pb.OUTCOME_PROTOCOL_ERROR),
        (Fault(error_after=1), pb.OUTCOME_OVERLOADED),
    ],
    ids=["truncated", "malformed", "error-event"],
)
async def test_broken_streams_fail_after_their_content(
    provider: GeminiProvider, gemini: MockGemini, fault: Fault, outcome: int
) -> None:
    gemini.fault = fault
    received: list[str] = []
    with pytest.raises(UpstreamError) as caught:
        async for event in provider.stream(request(text(pb.ROLE_USER, "x y z"))):
            if isinstance(event, Delta):
                received.append(event.text)
    assert caught.value.outcome == outcome
    assert "".join(received).startswith("mock:")


FIXTURES = Path(__file__).parent / "fixtures" / "gemini"


async def replayed(transcript: str) -> list[object]:
    """What the adapter makes of a recorded stream, served byte for byte."""

    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=(FIXTURES / transcript).read_bytes(), content_type="text/event-stream")

    app = web.Application()
    app.router.add_post("/v1beta/models/{call}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    adapter = GeminiProvider(deployment(f"http://127.0.0.1:{port}"), api_key="k")
    events: list[object] = []
    try:
        async for event in adapter.stream(request()):
            events.append(event)
    except UpstreamError as error:
        events.append(error)
    finally:
        await adapter.aclose()
        await runner.cleanup()
    return events


async def test_the_documented_function_call_stream() -> None:
    delta, finished = await replayed("documented_function_call_stream.sse")
    assert isinstance(delta, Delta) and isinstance(finished, StreamFinished)
    (call,) = delta.tool_calls
    assert call.name == "get_weather" and json.loads(call.arguments) == {"location": "Boston, MA"}
    assert finished.finish_reason == pb.FINISH_REASON_TOOL_CALLS
    assert finished.usage.input_tokens == 21 and finished.provider_request_id == "Yj2kaJGtGY6bqtsPsvPY6A4"


async def test_the_documented_error_after_the_stream_began() -> None:
    *deltas, error = await replayed("documented_error_stream.sse")
    assert [d.text for d in deltas if isinstance(d, Delta)] == ["Okay"]
    assert isinstance(error, UpstreamError) and error.outcome == pb.OUTCOME_OVERLOADED
    assert "overloaded" in error.message
