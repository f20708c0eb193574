"""The Gemini API mock over HTTP: answers, streams, function calls, safety, validation and faults."""

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

from tests.mock_gemini import (
    API_KEY_INVALID,
    CALL_AFTER_USER,
    INVALID_ROLE,
    OVERLOADED,
    PROMPT_TOO_LONG,
    RESPONSE_AFTER_CALL,
    RESPONSE_COUNT,
    UNREGISTERED_CALLER,
    Fault,
    MockGemini,
)

KEY = "AIza-mock-key"
MODEL = "gemini-2.5-flash"
UNARY = f"/v1beta/models/{MODEL}:generateContent"
STREAM = f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
ARRAY_STREAM = f"/v1beta/models/{MODEL}:streamGenerateContent"
FIXTURES = Path(__file__).parent / "fixtures" / "gemini"
LOOKUP: dict[str, Any] = {
    "name": "lookup",
    "description": "Look a word up",
    "parameters": {"type": "OBJECT", "properties": {"word": {"type": "STRING"}}, "required": ["word"]},
}
CLOCK = {"name": "get_time", "description": "The time now"}
TOOLS = [{"functionDeclarations": [LOOKUP, CLOCK]}]
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"


@pytest.fixture
async def mock() -> AsyncIterator[MockGemini]:
    server = await MockGemini(api_key=KEY).start()
    yield server
    await server.stop()


class Answer:
    def __init__(self, status: int, headers: CIMultiDict[str], text: str) -> None:
        self.status = status
        self.headers = headers
        self.text = text

    def json(self) -> Any:
        return json.loads(self.text)

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(data) for data in parse_sse(self.text)]


async def send(
    mock: MockGemini,
    body: Any,
    path: str = UNARY,
    headers: dict[str, str] | None = None,
    timeout_s: float = 10.0,
    method: str = "POST",
) -> Answer:
    """POST `body` (a dict as JSON, a str as it is) and read the whole answer."""
    sent = {"x-goog-api-key": KEY, "content-type": "application/json"} if headers is None else headers
    data = body if isinstance(body, str) else json.dumps(body)
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session,
        session.request(method, f"{mock.base_url}{path}", data=data, headers=sent) as response,
    ):
        return Answer(response.status, response.headers.copy(), await response.text())


def user(*parts: Any) -> dict[str, Any]:
    return {"role": "user", "parts": [{"text": p} if isinstance(p, str) else p for p in parts]}


def model_turn(*parts: Any) -> dict[str, Any]:
    return {"role": "model", "parts": [{"text": p} if isinstance(p, str) else p for p in parts]}


def ask(text: str = "hi there", **extra: Any) -> dict[str, Any]:
    return {"contents": [user(text)], **extra}


def call(name: str = "lookup", args: Any = None) -> dict[str, Any]:
    return {"functionCall": {"name": name, "args": {"word": "cat"} if args is None else args}}


def result(name: str = "lookup", response: Any = None) -> dict[str, Any]:
    return {"functionResponse": {"name": name, "response": {"meaning": "a feline"} if response is None else response}}


def parse_sse(text: str) -> list[str]:
    """The data of each event; every event is exactly one `data: ` line ended by CRLF CRLF."""
    assert text.endswith("\r\n\r\n"), text[-80:]
    events = text[:-4].split("\r\n\r\n")
    assert all(event.startswith("data: ") and "\n" not in event for event in events), events
    return [event.removeprefix("data: ") for event in events]


def streamed_text(chunks: list[dict[str, Any]]) -> str:
    return "".join(
        part.get("text", "")
        for chunk in chunks
        for candidate in chunk.get("candidates", [])
        for part in candidate.get("content", {}).get("parts", [])
    )


def prompt_tokens(body: dict[str, Any]) -> int:
    return len(json.dumps(body["contents"])) // 4


def usage(prompt: int, output: int = 0, **extra: Any) -> dict[str, Any]:
    counts: dict[str, Any] = {"promptTokenCount": prompt}
    if output:
        counts["candidatesTokenCount"] = output
    counts["totalTokenCount"] = prompt + output
    counts.update(extra)
    counts["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt}]
    return counts


def shape(payload: Any) -> Any:
    """The keys of a payload at every depth (but in function call args): a transcript's structure without its
    values."""
    if isinstance(payload, dict):
        return tuple(sorted((key, None if key == "args" else shape(value)) for key, value in payload.items()))
    if isinstance(payload, list):
        return tuple(shape(item) for item in payload)
    return None


# Answers.


async def test_unary_text(mock: MockGemini) -> None:
    body = ask("hi there")
    answer = await send(mock, body)
    assert answer.status == 200, answer.text
    assert answer.headers["Content-Type"] == "application/json; charset=UTF-8"
    assert answer.text.startswith('{\n  "candidates": [\n') and answer.text.endswith("}\n")
    assert answer.json() == {
        "candidates": [
            {"content": {"parts": [{"text": "mock: hi there"}], "role": "model"}, "finishReason": "STOP", "index": 0}
        ],
        "usageMetadata": usage(prompt_tokens(body), 3),
        "modelVersion": MODEL,
        "responseId": "mock-resp-1",
    }
    assert mock.requests == [body]
    assert mock.headers[0]["x-goog-api-key"] == KEY
    assert mock.urls == [UNARY]
    assert (await send(mock, body)).json()["responseId"] == "mock-resp-2"


async def test_last_user_text_system_instruction_and_media_parts(mock: MockGemini) -> None:
    mock.cached_tokens = 12
    body = {
        "systemInstruction": {"parts": [{"text": "be brief"}]},
        "contents": [
            user("first"),
            model_turn("noted"),
            user(
                {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
                "what is",
                {"fileData": {"mimeType": "application/pdf", "fileUri": "https://example.com/a.pdf"}},
                "this?",
            ),
        ],
        "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
        "generationConfig": {"temperature": 0, "topP": 0.9, "topK": 40, "seed": 7, "presencePenalty": 0.5},
        "cachedContent": "cachedContents/abc",
    }
    answer = await send(mock, body)
    assert answer.status == 200, answer.text
    reply = answer.json()
    assert reply["candidates"][0]["content"]["parts"] == [{"text": "mock: what is this?"}]
    assert reply["usageMetadata"] == usage(prompt_tokens(body), 4, cachedContentTokenCount=12)


async def test_content_without_role_is_the_users(mock: MockGemini) -> None:
    answer = await send(mock, {"contents": [{"parts": [{"text": "no role"}]}]})
    assert answer.json()["candidates"][0]["content"]["parts"][0]["text"] == "mock: no role"


async def test_snake_case_names_are_accepted(mock: MockGemini) -> None:
    body = {
        "contents": [{"role": "user", "parts": [{"text": "a b c"}]}],
        "generation_config": {"max_output_tokens": 2, "stop_sequences": ["zzz"]},
        "system_instruction": {"parts": [{"text": "be brief"}]},
    }
    reply = (await send(mock, body)).json()
    assert reply["candidates"][0]["content"]["parts"][0]["text"] == "mock: a"
    assert reply["candidates"][0]["finishReason"] == "MAX_TOKENS"


async def test_max_output_tokens_truncates_to_words(mock: MockGemini) -> None:
    reply = (await send(mock, ask("one two three", generationConfig={"maxOutputTokens": 2}))).json()
    candidate = reply["candidates"][0]
    assert candidate["content"]["parts"] == [{"text": "mock: one"}]
    assert candidate["finishReason"] == "MAX_TOKENS"
    assert reply["usageMetadata"]["candidatesTokenCount"] == 2


async def test_stop_sequence_cuts_before_it_and_reports_stop(mock: MockGemini) -> None:
    reply = (await send(mock, ask("one two three", generationConfig={"stopSequences": ["three", " two"]}))).json()
    candidate = reply["candidates"][0]
    assert candidate["content"]["parts"] == [{"text": "mock: one"}]
    assert candidate["finishReason"] == "STOP"
    config = {"stopSequences": ["three"], "maxOutputTokens": 1}
    candidate = (await send(mock, ask("one two three", generationConfig=config))).json()["candidates"][0]
    assert (candidate["content"]["parts"][0]["text"], candidate["finishReason"]) == ("mock:", "MAX_TOKENS")


async def test_json_mode(mock: MockGemini) -> None:
    config = {
        "responseMimeType": "application/json",
        "responseSchema": {"type": "OBJECT", "properties": {"answer": {"type": "STRING"}}},
    }
    reply = (await send(mock, ask("hi there", generationConfig=config))).json()
    text = reply["candidates"][0]["content"]["parts"][0]["text"]
    assert json.loads(text) == {"answer": "mock: hi there"}
    assert reply["usageMetadata"]["candidatesTokenCount"] == len(text.split(" "))
    config = {"responseMimeType": "application/json", "responseJsonSchema": {"type": "object"}}
    reply = (await send(mock, ask("hi", generationConfig=config))).json()
    assert json.loads(reply["candidates"][0]["content"]["parts"][0]["text"]) == {"answer": "mock: hi"}


async def test_enum_mode_answers_the_first_value(mock: MockGemini) -> None:
    config = {"responseMimeType": "text/x.enum", "responseSchema": {"type": "STRING", "enum": ["red", "blue"]}}
    reply = (await send(mock, ask("pick", generationConfig=config))).json()
    assert reply["candidates"][0]["content"]["parts"] == [{"text": "red"}]


async def test_blocked_prompt(mock: MockGemini) -> None:
    mock.block_prompt = True
    body = ask("something bad", tools=TOOLS)
    answer = await send(mock, body)
    assert answer.status == 200
    reply = answer.json()
    assert "candidates" not in reply
    assert reply["promptFeedback"]["blockReason"] == "SAFETY"
    ratings = reply["promptFeedback"]["safetyRatings"]
    assert [r["probability"] for r in ratings] == ["NEGLIGIBLE", "NEGLIGIBLE", "NEGLIGIBLE", "HIGH"]
    assert all("blocked" not in r for r in ratings)
    assert reply["usageMetadata"] == usage(prompt_tokens(body))
    assert (reply["modelVersion"], reply["responseId"]) == (MODEL, "mock-resp-1")
    chunks = (await send(mock, body, STREAM)).events()
    assert len(chunks) == 1 and "candidates" not in chunks[0]
    assert chunks[0]["promptFeedback"] == reply["promptFeedback"]


async def test_safety_stop(mock: MockGemini) -> None:
    mock.safety_stop = True
    body = ask("tell me more", tools=TOOLS)
    reply = (await send(mock, body)).json()
    candidate = reply["candidates"][0]
    assert "content" not in candidate
    assert (candidate["finishReason"], candidate["index"]) == ("SAFETY", 0)
    assert candidate["safetyRatings"][-1] == {
        "category": "HARM_CATEGORY_DANGEROUS_CONTENT",
        "probability": "HIGH",
        "blocked": True,
    }
    assert reply["usageMetadata"] == usage(prompt_tokens(body))
    chunks = (await send(mock, body, STREAM)).events()
    assert len(chunks) == 1 and chunks[0]["candidates"][0]["finishReason"] == "SAFETY"


async def test_safety_stop_after_some_words(mock: MockGemini) -> None:
    mock.safety_stop, mock.safety_stop_words = True, 2
    body = ask("tell me more")
    candidate = (await send(mock, body)).json()["candidates"][0]
    assert candidate["content"]["parts"] == [{"text": "mock: tell"}]
    assert candidate["finishReason"] == "SAFETY"
    chunks = (await send(mock, body, STREAM)).events()
    assert streamed_text(chunks) == "mock: tell"
    assert [c["candidates"][0].get("finishReason") for c in chunks] == [None, None, "SAFETY"]
    assert "content" not in chunks[-1]["candidates"][0]
    assert chunks[-1]["usageMetadata"]["candidatesTokenCount"] == 2


# Streams.


async def test_stream_transcript(mock: MockGemini) -> None:
    body = ask("hi there")
    answer = await send(mock, body, STREAM)
    assert answer.status == 200, answer.text
    assert answer.headers["Content-Type"] == "text/event-stream"
    assert "[DONE]" not in answer.text
    prompt = prompt_tokens(body)
    tail = {"modelVersion": MODEL, "responseId": "mock-resp-1"}
    assert answer.events() == [
        {
            "candidates": [{"content": {"parts": [{"text": "mock:"}], "role": "model"}, "index": 0}],
            "usageMetadata": usage(prompt, 1),
            **tail,
        },
        {
            "candidates": [{"content": {"parts": [{"text": " hi"}], "role": "model"}, "index": 0}],
            "usageMetadata": usage(prompt, 2),
            **tail,
        },
        {
            "candidates": [
                {"content": {"parts": [{"text": " there"}], "role": "model"}, "finishReason": "STOP", "index": 0}
            ],
            "usageMetadata": usage(prompt, 3),
            **tail,
        },
    ]
    # The API's spacing: ": " after keys, no space after commas.
    assert answer.text.startswith('data: {"candidates": [{"content": {"parts": [{"text": "mock:"}],"role": "model"}')


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"maxOutputTokens": 2},
        {"stopSequences": ["c d"]},
        {"stopSequences": ["mock"]},
        {"responseMimeType": "application/json"},
    ],
    ids=["whole", "max-tokens", "stop-sequence", "stopped-at-once", "json"],
)
async def test_stream_joins_to_the_unary_answer(mock: MockGemini, config: dict[str, Any]) -> None:
    body = ask("a  b c d", generationConfig=config)
    unary = (await send(mock, body)).json()
    chunks = (await send(mock, body, STREAM)).events()
    assert streamed_text(chunks) == unary["candidates"][0]["content"]["parts"][0]["text"]
    assert chunks[-1]["candidates"][0]["finishReason"] == unary["candidates"][0]["finishReason"]
    assert all("finishReason" not in chunk["candidates"][0] for chunk in chunks[:-1])
    assert chunks[-1]["usageMetadata"] == unary["usageMetadata"]


@pytest.mark.parametrize(("final_chunk", "last"), [("empty_text", [{"text": ""}]), ("no_content", None)])
async def test_finish_reason_in_a_chunk_of_its_own(mock: MockGemini, final_chunk: Any, last: Any) -> None:
    mock.final_chunk = final_chunk
    chunks = (await send(mock, ask("a b"), STREAM)).events()
    assert streamed_text(chunks) == "mock: a b"
    assert [c["candidates"][0].get("finishReason") for c in chunks] == [None, None, None, "STOP"]
    assert chunks[-1]["candidates"][0].get("content", {}).get("parts") == last
    assert chunks[-1]["usageMetadata"]["candidatesTokenCount"] == 3


async def test_json_array_stream_without_alt_sse(mock: MockGemini) -> None:
    body = ask("hi there")
    sse = (await send(mock, body, STREAM)).events()
    answer = await send(mock, body, ARRAY_STREAM)
    assert answer.status == 200
    assert answer.headers["Content-Type"] == "application/json; charset=UTF-8"
    assert answer.text.startswith("[{\n") and answer.text.endswith("}]")
    chunks = answer.json()
    assert [{**c, "responseId": "x"} for c in chunks] == [{**c, "responseId": "x"} for c in sse]
    assert (await send(mock, body, ARRAY_STREAM + "?alt=json")).json()[0]["responseId"] == "mock-resp-3"


async def test_chunk_delay_paces_the_chunks(mock: MockGemini) -> None:
    mock.chunk_delay_s = 0.02
    started = time.monotonic()
    chunks = (await send(mock, ask("a b c"), STREAM)).events()
    assert len(chunks) == 4
    assert time.monotonic() - started >= 0.02 * 4


def documented(name: str) -> list[dict[str, Any]]:
    return [json.loads(data) for data in parse_sse((FIXTURES / name).read_bytes().decode())]


async def test_text_stream_has_the_documented_shape(mock: MockGemini) -> None:
    """Chunk for chunk, key for key, the mock's stream is built like the recorded one (a first and a last chunk)."""
    reference = documented("documented_text_stream.sse")
    chunks = (await send(mock, ask("what is the capital of France?"), STREAM)).events()
    assert [shape(chunks[0]), shape(chunks[-1])] == [shape(reference[0]), shape(reference[-1])]
    assert all(shape(chunk) == shape(chunks[0]) for chunk in chunks[:-1])


async def test_function_call_stream_has_the_documented_shape(mock: MockGemini) -> None:
    reference = documented("documented_function_call_stream.sse")
    chunks = (await send(mock, ask("define cat", tools=TOOLS), STREAM)).events()
    assert [shape(chunk) for chunk in chunks] == [shape(chunk) for chunk in reference]


@pytest.mark.parametrize(
    ("fixture", "path", "body"),
    [
        ("mock_text_stream.sse", STREAM, ask("what is the capital of France?")),
        ("mock_function_call_stream.sse", STREAM, ask("define cat", tools=TOOLS)),
        ("mock_text.json", UNARY, ask("what is the capital of France?")),
        ("mock_function_call.json", UNARY, ask("define cat", tools=TOOLS)),
    ],
    ids=["text-stream", "call-stream", "text", "call"],
)
async def test_bytes_match_the_golden_transcripts(mock: MockGemini, fixture: str, path: str, body: Any) -> None:
    """The exact bytes the mock sends for these requests (kept as fixtures an adapter's parser can read)."""
    answer = await send(mock, body, path)
    assert answer.text == (FIXTURES / fixture).read_bytes().decode()


# Function calls.


async def test_unary_function_call(mock: MockGemini) -> None:
    body = ask("define cat", tools=TOOLS)
    reply = (await send(mock, body)).json()
    args = {"text": "define cat"}
    assert reply["candidates"] == [
        {
            "content": {"parts": [{"functionCall": {"name": "lookup", "args": args}}], "role": "model"},
            "finishReason": "STOP",
            "index": 0,
        }
    ]
    assert reply["usageMetadata"] == usage(prompt_tokens(body), len(json.dumps(args).split(" ")))
    assert mock.function_calls_made == 1


async def test_streamed_function_call_comes_whole(mock: MockGemini) -> None:
    body = ask("define cat", tools=TOOLS)
    unary = (await send(mock, body)).json()
    chunks = (await send(mock, body, STREAM)).events()
    assert len(chunks) == 1
    assert chunks[0]["candidates"] == unary["candidates"]
    assert chunks[0]["usageMetadata"] == unary["usageMetadata"]


@pytest.mark.parametrize(
    ("config", "name"),
    [
        ({"mode": "AUTO"}, "lookup"),
        ({"mode": "ANY"}, "lookup"),
        ({"mode": "ANY", "allowedFunctionNames": ["get_time"]}, "get_time"),
        ({"mode": "VALIDATED", "allowedFunctionNames": ["get_time"]}, "get_time"),
        ({"mode": "any"}, "lookup"),
        ({"mode": "NONE"}, None),
    ],
    ids=["auto", "any", "any-allowed", "validated-allowed", "lower-case", "none"],
)
async def test_function_calling_modes(mock: MockGemini, config: dict[str, Any], name: str | None) -> None:
    body = ask("now?", tools=TOOLS, toolConfig={"functionCallingConfig": config})
    part = (await send(mock, body)).json()["candidates"][0]["content"]["parts"][0]
    if name is None:
        assert part == {"text": "mock: now?"}
    else:
        assert part["functionCall"]["name"] == name


async def test_call_ids_and_thought_signatures_as_gemini_3_sends_them(mock: MockGemini) -> None:
    mock.function_call_ids, mock.thought_signature = True, "c2lnbmF0dXJl"
    for n in (1, 2):
        part = (await send(mock, ask("x", tools=TOOLS))).json()["candidates"][0]["content"]["parts"][0]
        assert part == {
            "functionCall": {"id": f"mock-call-{n}", "name": "lookup", "args": {"text": "x"}},
            "thoughtSignature": "c2lnbmF0dXJl",
        }


async def test_max_output_tokens_cuts_a_function_call_to_nothing(mock: MockGemini) -> None:
    body = ask("define cat", tools=TOOLS, generationConfig={"maxOutputTokens": 1})
    reply = (await send(mock, body)).json()
    assert reply["candidates"] == [{"content": {"role": "model"}, "finishReason": "MAX_TOKENS", "index": 0}]
    chunks = (await send(mock, body, STREAM)).events()
    assert chunks[0]["candidates"] == reply["candidates"]


async def test_function_response_is_answered_with_text(mock: MockGemini) -> None:
    body = {
        "contents": [
            user("define cat and dog"),
            model_turn("Looking up.", call(), call(args={"word": "dog"})),
            {"role": "user", "parts": [result(), result(response={"meaning": "a canine"}), {"text": "ok?"}]},
        ],
        "tools": TOOLS,
    }
    answer = await send(mock, body)
    assert answer.status == 200, answer.text
    text = answer.json()["candidates"][0]["content"]["parts"][0]["text"]
    assert text == 'mock: tool said: {"meaning": "a feline"}'
    assert streamed_text((await send(mock, body, STREAM)).events()) == text
    assert mock.function_calls_made == 0


async def test_calls_with_ids_and_signatures_echoed_back_are_accepted(mock: MockGemini) -> None:
    echoed = {"functionCall": {"id": "c1", "name": "lookup", "args": {"word": "cat"}}, "thoughtSignature": "c2ln"}
    answered = {"functionResponse": {"id": "c1", "name": "lookup", "response": {"result": 1}}}
    body = {"contents": [user("define cat"), model_turn(echoed), user(answered)], "tools": TOOLS}
    answer = await send(mock, body)
    assert answer.status == 200, answer.text
    assert answer.json()["candidates"][0]["content"]["parts"][0]["text"] == 'mock: tool said: {"result": 1}'


# Keys and paths.


async def test_missing_and_wrong_keys(mock: MockGemini) -> None:
    answer = await send(mock, ask(), headers={"content-type": "application/json"})
    assert answer.status == 403
    assert answer.json() == {"error": {"code": 403, "message": UNREGISTERED_CALLER, "status": "PERMISSION_DENIED"}}
    answer = await send(mock, ask(), headers={"x-goog-api-key": "wrong"})
    assert answer.status == 400
    assert answer.json() == {
        "error": {
            "code": 400,
            "message": API_KEY_INVALID,
            "status": "INVALID_ARGUMENT",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                    "metadata": {"service": "generativelanguage.googleapis.com"},
                },
                {
                    "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                    "locale": "en-US",
                    "message": API_KEY_INVALID,
                },
            ],
        }
    }
    assert mock.headers[1]["x-goog-api-key"] == "wrong"


async def test_key_in_the_query_is_accepted(mock: MockGemini) -> None:
    assert (await send(mock, ask(), f"{UNARY}?key={KEY}", headers={})).status == 200


async def test_no_key_is_checked_without_api_key() -> None:
    server = await MockGemini().start()
    try:
        assert (await send(server, ask(), headers={})).status == 200
    finally:
        await server.stop()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/models/gemini-2.5-flash:generateContent"),
        ("POST", "/v1beta/models/gemini-2.5-flash:countTokens"),
        ("POST", "/v1beta/models/models/gemini-2.5-flash:generateContent"),
        ("GET", UNARY),
    ],
    ids=["v1", "other-method", "models-twice", "get"],
)
async def test_unknown_paths_are_the_front_ends_404_page(mock: MockGemini, method: str, path: str) -> None:
    answer = await send(mock, ask(), path, method=method)
    assert answer.status == 404
    assert answer.headers["Content-Type"].startswith("text/html")
    assert "was not found on this server" in answer.text


async def test_unknown_models_when_models_are_listed() -> None:
    server = await MockGemini(models={MODEL}).start()
    try:
        assert (await send(server, ask(), headers={})).status == 200
        answer = await send(server, ask(), "/v1beta/models/gemini-9:streamGenerateContent?alt=sse", headers={})
        assert answer.status == 404
        assert answer.json()["error"] == {
            "code": 404,
            "message": "models/gemini-9 is not found for API version v1beta, or is not supported for "
            "streamGenerateContent. Call ListModels to see the list of available models and their supported methods.",
            "status": "NOT_FOUND",
        }
    finally:
        await server.stop()


async def test_other_alt_values_are_refused(mock: MockGemini) -> None:
    answer = await send(mock, ask(), ARRAY_STREAM + "?alt=proto")
    assert answer.status == 400 and answer.json()["error"]["status"] == "INVALID_ARGUMENT"


# Validation. What the API's JSON parser refuses is a 400 listing each problem in a BadRequest detail.


def violations(answer: Answer) -> list[dict[str, str]]:
    details = answer.json()["error"]["details"]
    assert [d["@type"] for d in details] == [BAD_REQUEST]
    found: list[dict[str, str]] = details[0]["fieldViolations"]
    return found


PARSE_ERRORS: list[tuple[str, Any, list[tuple[str | None, str]]]] = [
    (
        "top-level",
        ask(temperature=0.5),
        [(None, 'Invalid JSON payload received. Unknown name "temperature": Cannot find field.')],
    ),
    (
        "in-generation-config",
        ask(generationConfig={"max_tokens": 5}),
        [
            (
                "generation_config",
                "Invalid JSON payload received. Unknown name \"max_tokens\" at 'generation_config': Cannot find field.",
            )
        ],
    ),
    (
        "role-in-parts",
        {"contents": [{"parts": [{"text": "a", "role": "user"}]}, {"parts": [{"text": "b", "role": "user"}]}]},
        [
            (
                "contents[0].parts[0]",
                "Invalid JSON payload received. Unknown name \"role\" at 'contents[0].parts[0]': Cannot find field.",
            ),
            (
                "contents[1].parts[0]",
                "Invalid JSON payload received. Unknown name \"role\" at 'contents[1].parts[0]': Cannot find field.",
            ),
        ],
    ),
    (
        "openai-schema-keyword",
        ask(
            tools=[
                {
                    "functionDeclarations": [
                        {**LOOKUP, "parameters": {**LOOKUP["parameters"], "additionalProperties": False}}
                    ]
                }
            ]
        ),
        [
            (
                "tools[0].function_declarations[0].parameters",
                'Invalid JSON payload received. Unknown name "additionalProperties" at '
                "'tools[0].function_declarations[0].parameters': Cannot find field.",
            )
        ],
    ),
    (
        "nested-schema-keyword",
        ask(
            generationConfig={
                "responseMimeType": "application/json",
                "responseSchema": {"type": "OBJECT", "properties": {"a": {"type": "STRING", "const": "x"}}},
            }
        ),
        [
            (
                "generation_config.response_schema.properties[0].value",
                'Invalid JSON payload received. Unknown name "const" at '
                "'generation_config.response_schema.properties[0].value': Cannot find field.",
            )
        ],
    ),
    (
        "type-list",
        ask(generationConfig={"responseMimeType": "application/json", "responseSchema": {"type": ["STRING", "NULL"]}}),
        [
            (
                "generation_config.response_schema",
                "Invalid JSON payload received. Unknown name \"type\" at 'generation_config.response_schema': "
                "Proto field is not repeating, cannot start list.",
            )
        ],
    ),
    (
        "bad-enum",
        ask(tools=TOOLS, toolConfig={"functionCallingConfig": {"mode": "SOMETIMES"}}),
        [
            (
                "tool_config.function_calling_config.mode",
                "Invalid value at 'tool_config.function_calling_config.mode' "
                '(type.googleapis.com/google.ai.generativelanguage.v1beta.FunctionCallingConfig.Mode), "SOMETIMES"',
            )
        ],
    ),
    (
        "bad-float",
        ask(generationConfig={"temperature": "hot"}),
        [("generation_config.temperature", "Invalid value at 'generation_config.temperature' (TYPE_FLOAT), \"hot\"")],
    ),
    (
        "object-for-string",
        {"contents": [{"role": "user", "parts": [{"text": {"value": "hi"}}]}]},
        [
            (
                "contents[0].parts[0].text",
                "Invalid value at 'contents[0].parts[0].text' (TYPE_STRING), Starting an object on a scalar field",
            )
        ],
    ),
    (
        "args-not-object",
        {"contents": [user("x"), model_turn(call(args="cat")), user(result())]},
        [
            (
                "contents[1].parts[0].function_call.args",
                "Invalid value at 'contents[1].parts[0].function_call.args' "
                '(type.googleapis.com/google.protobuf.Struct), "cat"',
            )
        ],
    ),
    (
        "two-data-fields",
        {"contents": [{"role": "model", "parts": [{"text": "calling", **call()}]}]},
        [
            (
                "contents[0].parts[0]",
                "Invalid value at 'contents[0].parts[0]' (oneof), oneof field 'data' is already set. "
                "Cannot set 'functionCall'",
            )
        ],
    ),
    (
        "bad-base64",
        ask() | {"contents": [user({"inlineData": {"mimeType": "image/png", "data": "not base64!"}})]},
        [
            (
                "contents[0].parts[0].inline_data.data",
                "Invalid value at 'contents[0].parts[0].inline_data.data' (TYPE_BYTES), "
                'Base64 decoding failed for "not base64!"',
            )
        ],
    ),
    (
        "openai-messages",
        {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
        [(None, 'Invalid JSON payload received. Unknown name "messages": Cannot find field.')],
    ),
]


@pytest.mark.parametrize(("body", "expected"), [c[1:] for c in PARSE_ERRORS], ids=[c[0] for c in PARSE_ERRORS])
async def test_bodies_the_parser_refuses(mock: MockGemini, body: Any, expected: list[tuple[str | None, str]]) -> None:
    for path in (UNARY, STREAM):
        answer = await send(mock, body, path)
        assert answer.status == 400, answer.text
        error = answer.json()["error"]
        assert (error["code"], error["status"]) == (400, "INVALID_ARGUMENT")
        assert error["message"] == "\n".join(text for _, text in expected)
        assert violations(answer) == [{"field": f, "description": t} if f else {"description": t} for f, t in expected]
    assert mock.responses_made == 0


async def test_non_json_and_non_object_bodies(mock: MockGemini) -> None:
    answer = await send(mock, "{not json")
    assert answer.status == 400
    assert answer.json()["error"]["message"].startswith("Invalid JSON payload received.")
    answer = await send(mock, "")
    assert answer.json()["error"]["message"] == "* GenerateContentRequest.contents: contents is not specified\n"
    answer = await send(mock, "[1, 2]")
    assert (
        answer.json()["error"]["message"]
        == 'Invalid JSON payload received. Unknown name "": Root element must be a message.'
    )


def turns(*contents: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"contents": list(contents), **extra}


def declared(*declarations: dict[str, Any]) -> dict[str, Any]:
    return ask(tools=[{"functionDeclarations": list(declarations)}])


def configured(**config: Any) -> dict[str, Any]:
    return ask(generationConfig=config)


NAME_PROBLEM = (
    "Invalid function name. Must start with a letter or an underscore. Must be alphameric (a-z, A-Z, 0-9), "
    "underscores (_), dots (.), colons (:), or dashes (-), with a maximum length of 64."
)
INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("no-contents", {"generationConfig": {}}, "* GenerateContentRequest.contents: contents is not specified\n"),
    ("empty-contents", turns(), "* GenerateContentRequest.contents: contents is not specified\n"),
    (
        "empty-parts",
        turns(user("a"), {"role": "model", "parts": []}),
        "* GenerateContentRequest.contents[1].parts: contents.parts must not be empty.\n",
    ),
    (
        "part-without-data",
        turns(user({"thought": True})),
        "* GenerateContentRequest.contents[0].parts[0].data: "
        "required oneof field 'data' must have one initialized field\n",
    ),
    (
        "two-problems",
        turns(user("a"), {"role": "model"}, {"role": "user", "parts": []}),
        "* GenerateContentRequest.contents[1].parts: contents.parts must not be empty.\n"
        "* GenerateContentRequest.contents[2].parts: contents.parts must not be empty.\n",
    ),
    (
        "bad-function-name",
        declared({**LOOKUP, "name": "look up"}),
        f"* GenerateContentRequest.tools[0].function_declarations[0].name: {NAME_PROBLEM}\n",
    ),
    (
        "long-function-name",
        declared({**LOOKUP, "name": "x" * 65}),
        f"* GenerateContentRequest.tools[0].function_declarations[0].name: {NAME_PROBLEM}\n",
    ),
    (
        "digit-first-name",
        declared({**LOOKUP, "name": "1lookup"}),
        f"* GenerateContentRequest.tools[0].function_declarations[0].name: {NAME_PROBLEM}\n",
    ),
    (
        "empty-object-parameters",
        declared({"name": "get_time", "parameters": {"type": "OBJECT", "properties": {}}}),
        "* GenerateContentRequest.tools[0].function_declarations[0].parameters.properties: "
        "should be non-empty for OBJECT type\n",
    ),
    (
        "untyped-property",
        declared({"name": "f", "parameters": {"type": "OBJECT", "properties": {"occupation": {"description": "job"}}}}),
        "* GenerateContentRequest.tools[0].function_declarations[0].parameters.properties[occupation].type: "
        "must be specified\n",
    ),
    (
        "array-without-items",
        declared({"name": "f", "parameters": {"type": "object", "properties": {"tags": {"type": "array"}}}}),
        "* GenerateContentRequest.tools[0].function_declarations[0].parameters.properties[tags].items: "
        "missing field.\n",
    ),
    (
        "empty-enum-value",
        configured(responseMimeType="text/x.enum", responseSchema={"type": "STRING", "enum": ["a", ""]}),
        "* GenerateContentRequest.generation_config.response_schema.enum[1]: cannot be empty\n",
    ),
    (
        "bad-response-mime-type",
        configured(responseMimeType="image/png"),
        "* GenerateContentRequest.generation_config.response_mime_type: allowed mimetypes are `text/plain`, "
        "`application/json`, `application/xml`, `application/yaml` and `text/x.enum`.\n",
    ),
    (
        "schema-without-json",
        configured(responseSchema={"type": "STRING"}),
        "* GenerateContentRequest.generation_config.response_schema: response_mime_type must be one of "
        "application/json, text/x.enum\n",
    ),
    (
        "json-schema-without-json",
        configured(responseMimeType="text/plain", responseJsonSchema={"type": "object"}),
        "* GenerateContentRequest.generation_config.response_json_schema: "
        "response_mime_type must be application/json\n",
    ),
    (
        "hot-temperature",
        configured(temperature=2.5),
        "* GenerateContentRequest.generation_config.temperature: temperature must be in the range [0.0, 2.0]\n",
    ),
    (
        "cold-temperature",
        configured(temperature=-0.1),
        "* GenerateContentRequest.generation_config.temperature: temperature must be in the range [0.0, 2.0]\n",
    ),
    (
        "top-p",
        configured(topP=1.5),
        "* GenerateContentRequest.generation_config.top_p: top_p must be in the range [0.0, 1.0]\n",
    ),
    (
        "zero-max-tokens",
        configured(maxOutputTokens=0),
        "* GenerateContentRequest.generation_config.max_output_tokens: max_output_tokens must be positive\n",
    ),
    (
        "two-candidates",
        configured(candidateCount=2),
        "* GenerateContentRequest.generation_config.candidate_count: this mock generates one candidate only\n",
    ),
    (
        "six-stop-sequences",
        configured(stopSequences=list("abcdef")),
        "* GenerateContentRequest.generation_config.stop_sequences: at most 5 stop sequences are allowed\n",
    ),
    (
        "allowed-names-in-auto",
        ask(tools=TOOLS, toolConfig={"functionCallingConfig": {"mode": "AUTO", "allowedFunctionNames": ["lookup"]}}),
        "* GenerateContentRequest.tool_config.function_calling_config.allowed_function_names: "
        "allowed_function_names may only be set when mode is ANY or VALIDATED\n",
    ),
    (
        "allowed-name-undeclared",
        ask(tools=TOOLS, toolConfig={"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["nope"]}}),
        "* GenerateContentRequest.tool_config.function_calling_config.allowed_function_names[0]: "
        "function nope is not declared in tools\n",
    ),
    ("assistant-role", turns(user("a"), {"role": "assistant", "parts": [{"text": "b"}]}, user("c")), INVALID_ROLE),
    ("system-role", turns({"role": "system", "parts": [{"text": "be brief"}]}, user("c")), INVALID_ROLE),
    ("response-without-call", turns(user("define cat"), user(result())), RESPONSE_AFTER_CALL),
    (
        "response-after-text",
        turns(user("define cat"), model_turn("I will look it up."), user(result())),
        RESPONSE_AFTER_CALL,
    ),
    (
        "response-to-another-function",
        turns(user("define cat"), model_turn(call()), user(result("get_time"))),
        RESPONSE_AFTER_CALL,
    ),
    (
        "one-response-for-two-calls",
        turns(user("define"), model_turn(call(), call(args={"word": "dog"})), user(result())),
        RESPONSE_COUNT,
    ),
    ("history-opens-with-a-call", turns(model_turn(call()), user(result()), user("and?")), CALL_AFTER_USER),
    ("call-after-model-turn", turns(user("a"), model_turn("b"), model_turn(call()), user(result())), CALL_AFTER_USER),
]


@pytest.mark.parametrize(("body", "message"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
async def test_invalid_requests_are_refused(mock: MockGemini, body: dict[str, Any], message: str) -> None:
    for path in (UNARY, STREAM):
        answer = await send(mock, body, path)
        assert answer.status == 400, answer.text
        assert answer.json() == {"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}}
    assert mock.requests == [body, body] and mock.responses_made == 0


async def test_validation_comes_before_faults(mock: MockGemini) -> None:
    mock.fault = Fault(status=503)
    assert (await send(mock, ask(temperature=1))).status == 400
    assert (await send(mock, turns())).status == 400


# Faults.


@pytest.mark.parametrize(
    ("status", "name"),
    [
        (400, "INVALID_ARGUMENT"),
        (403, "PERMISSION_DENIED"),
        (404, "NOT_FOUND"),
        (429, "RESOURCE_EXHAUSTED"),
        (500, "INTERNAL"),
        (503, "UNAVAILABLE"),
        (504, "DEADLINE_EXCEEDED"),
        (418, "FAILED_PRECONDITION"),
        (502, "UNKNOWN"),
    ],
)
async def test_fault_status_has_the_matching_status_name(mock: MockGemini, status: int, name: str) -> None:
    mock.fault = Fault(status=status, message="nope", headers={"retry-after": "7"})
    for path in (UNARY, STREAM, ARRAY_STREAM):
        answer = await send(mock, ask(), path)
        assert answer.status == status
        assert answer.headers["Content-Type"] == "application/json; charset=UTF-8"
        assert answer.json() == {"error": {"code": status, "message": "nope", "status": name}}
        assert answer.headers["retry-after"] == "7"


async def test_fault_status_name_and_details(mock: MockGemini) -> None:
    quota = {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{"quotaMetric": "m"}]}
    mock.fault = Fault(status=429, message="You exceeded your current quota.", details=[quota], retry_delay_s=41)
    error = (await send(mock, ask())).json()["error"]
    assert error["details"] == [quota, {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "41s"}]
    mock.fault = Fault(status=400, status_name="FAILED_PRECONDITION", message="User location is not supported.")
    assert (await send(mock, ask())).json()["error"]["status"] == "FAILED_PRECONDITION"


async def test_prompt_too_long(mock: MockGemini) -> None:
    mock.fault = Fault(prompt_too_long=True)
    for path in (UNARY, STREAM):
        answer = await send(mock, ask(), path)
        assert answer.status == 400
        assert answer.json() == {"error": {"code": 400, "message": PROMPT_TOO_LONG, "status": "INVALID_ARGUMENT"}}


async def test_hang_delays_the_answer(mock: MockGemini) -> None:
    mock.fault = Fault(hang_s=5)
    with pytest.raises(asyncio.TimeoutError):
        await send(mock, ask(), timeout_s=0.2)
    mock.fault = Fault(hang_s=0.1)
    started = time.monotonic()
    assert (await send(mock, ask())).status == 200
    assert time.monotonic() - started >= 0.1


async def test_cut_stream_ends_without_a_finish_reason(mock: MockGemini) -> None:
    mock.fault = Fault(cut_after=2)
    answer = await send(mock, ask("x y z"), STREAM)
    assert answer.status == 200
    chunks = answer.events()
    assert streamed_text(chunks) == "mock: x"
    assert all("finishReason" not in chunk["candidates"][0] for chunk in chunks)
    mock.fault = Fault(cut_after=0)
    assert (await send(mock, ask("define cat", tools=TOOLS), STREAM)).text == ""
    mock.fault = Fault(cut_after=1)
    text = (await send(mock, ask("x y z"), ARRAY_STREAM)).text
    assert text.startswith("[{") and not text.endswith("]")


async def test_malformed_chunk(mock: MockGemini) -> None:
    mock.fault = Fault(malformed_after=1)
    text = (await send(mock, ask("x y z"), STREAM)).text
    data = parse_sse(text)
    assert len(data) == 2 and json.loads(data[0]) and data[1] == "{not json"
    assert text.endswith("data: {not json\r\n\r\n")


async def test_error_after_the_200_as_the_api_sends_it(mock: MockGemini) -> None:
    """A bare pretty-printed JSON object after the last event, not a `data:` event."""
    mock.fault = Fault(error_after=1)
    answer = await send(mock, ask("x y z"), STREAM)
    assert answer.status == 200
    head, tail = answer.text.split("\r\n\r\n", 1)
    assert json.loads(head.removeprefix("data: "))["candidates"][0]["content"]["parts"] == [{"text": "mock:"}]
    assert tail == json.dumps({"error": {"code": 503, "message": OVERLOADED, "status": "UNAVAILABLE"}}, indent=2) + "\n"
    assert tail.startswith('{\n  "error": {\n    "code": 503,')


async def test_error_after_the_200_as_an_event(mock: MockGemini) -> None:
    mock.fault = Fault(error_after=0, error_as_event=True, error_code=500, error_message="Internal error encountered.")
    data = parse_sse((await send(mock, ask("x y z"), STREAM)).text)
    assert [json.loads(d) for d in data] == [
        {"error": {"code": 500, "message": "Internal error encountered.", "status": "INTERNAL"}}
    ]


async def test_error_after_the_200_in_a_json_array_stream(mock: MockGemini) -> None:
    mock.fault = Fault(error_after=1)
    chunks = (await send(mock, ask("x y z"), ARRAY_STREAM)).json()
    assert streamed_text(chunks[:1]) == "mock:"
    assert chunks[1] == {"error": {"code": 503, "message": OVERLOADED, "status": "UNAVAILABLE"}}


async def test_documented_error_stream_reads_like_the_mocks() -> None:
    """The recorded transcript of an error after the 200 splits the same way the mock's does."""
    text = (FIXTURES / "documented_error_stream.sse").read_bytes().decode()
    events, _, error = text.rpartition("\r\n\r\n")
    assert all(json.loads(data)["candidates"] for data in parse_sse(events + "\r\n\r\n"))
    assert json.loads(error)["error"]["status"] == "UNAVAILABLE"
