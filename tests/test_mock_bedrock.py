"""The Amazon Bedrock Converse/ConverseStream mock over HTTP: SigV4, answers, event streams, tool use,
validation and faults, checked with aiohttp and with botocore's own client, signer, parsers and decoder."""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import botocore.session  # type: ignore[import-untyped]
import pytest
from botocore.config import Config  # type: ignore[import-untyped]
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer  # type: ignore[import-untyped]
from botocore.exceptions import ClientError, EventStreamError  # type: ignore[import-untyped]
from multidict import CIMultiDict
from yarl import URL

from tests.mock_bedrock import (
    ACCESS_KEY,
    EXCEPTIONS,
    GUARDRAIL_TEXT,
    SECRET_KEY,
    STREAM_EXCEPTIONS,
    Fault,
    MockBedrock,
    encode_event,
    sign,
)

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
FIXTURES = Path(__file__).parent / "fixtures" / "bedrock"
LOOKUP = {
    "toolSpec": {
        "name": "lookup",
        "description": "Look a word up",
        "inputSchema": {"json": {"type": "object", "properties": {"word": {"type": "string"}}}},
    }
}
CLOCK = {"toolSpec": {"name": "get_time", "inputSchema": {"json": {"type": "object"}}}}
TOOLS = {"tools": [LOOKUP, CLOCK]}
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n").decode()
VALIDATION = "ValidationException:http://internal.amazon.com/coral/com.amazon.bedrock/"


@pytest.fixture
async def mock() -> AsyncIterator[MockBedrock]:
    server = await MockBedrock().start()
    yield server
    await server.stop()


class Answer:
    def __init__(self, status: int, headers: CIMultiDict[str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)

    def frames(self) -> list[Any]:
        """The complete event-stream messages of the body, decoded by botocore."""
        buffer = EventStreamBuffer()
        buffer.add_data(self.body)
        return list(buffer)

    def events(self) -> list[tuple[str, dict[str, Any]]]:
        return [(frame.headers[":event-type"], json.loads(frame.payload)) for frame in self.frames()]

    def error(self) -> tuple[int, str, str]:
        """(status, the exception name as botocore reads it from x-amzn-ErrorType, the message)."""
        return self.status, self.headers["x-amzn-ErrorType"].split(":", 1)[0], self.json()["message"]


def operation_path(model: str = MODEL, stream: bool = False) -> str:
    """The path botocore sends: the model id percent-encoded as one segment."""
    return f"/model/{quote(model, safe='')}/{'converse-stream' if stream else 'converse'}"


async def send(
    mock: MockBedrock,
    body: Any,
    *,
    stream: bool = False,
    model: str = MODEL,
    path: str | None = None,
    method: str = "POST",
    headers: dict[str, str] | None = None,
    extra_headers: dict[str, str] | None = None,
    timeout_s: float = 10.0,
    **signing: Any,
) -> Answer:
    """Send `body` (a dict as JSON, bytes or str as they are), signed with `sign` (keyword arguments go to it)
    unless `headers` are given, to the exact path (yarl must not re-encode the model id) and read the answer."""
    url = mock.base_url + (path or operation_path(model, stream))
    data = body if isinstance(body, bytes) else body.encode() if isinstance(body, str) else json.dumps(body).encode()
    if headers is None:
        headers = sign(method, url, {"Content-Type": "application/json"}, data, **signing)
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session,
        session.request(
            method, URL(url, encoded=True), data=data, headers={**headers, **(extra_headers or {})}
        ) as response,
    ):
        return Answer(response.status, response.headers.copy(), await response.read())


def text(value: str) -> dict[str, Any]:
    return {"text": value}


def user(*blocks: dict[str, Any] | str) -> dict[str, Any]:
    return {"role": "user", "content": [text(b) if isinstance(b, str) else b for b in blocks]}


def assistant(*blocks: dict[str, Any] | str) -> dict[str, Any]:
    return {"role": "assistant", "content": [text(b) if isinstance(b, str) else b for b in blocks]}


def tool_use(tool_use_id: str, name: str = "lookup") -> dict[str, Any]:
    return {"toolUse": {"toolUseId": tool_use_id, "name": name, "input": {"word": "cat"}}}


def tool_result(tool_use_id: str, *content: dict[str, Any], status: str | None = None) -> dict[str, Any]:
    result: dict[str, Any] = {"toolUseId": tool_use_id, "content": list(content) or [text("a feline")]}
    if status is not None:
        result["status"] = status
    return {"toolResult": result}


def ask(value: str = "hi there", **extra: Any) -> dict[str, Any]:
    return {"messages": [user(value)], **extra}


def turns(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"messages": list(messages), **extra}


def usage(body: dict[str, Any], output_tokens: int, cached: int = 0) -> dict[str, int]:
    input_tokens = len(json.dumps(body["messages"])) // 4
    return {
        "inputTokens": input_tokens,
        "outputTokens": output_tokens,
        "totalTokens": input_tokens + output_tokens,
        "cacheReadInputTokens": cached,
        "cacheWriteInputTokens": 0,
    }


def streamed_text(events: list[tuple[str, dict[str, Any]]]) -> str:
    return "".join(p["delta"]["text"] for name, p in events if name == "contentBlockDelta")


def streamed_input(events: list[tuple[str, dict[str, Any]]]) -> str:
    return "".join(p["delta"]["toolUse"]["input"] for name, p in events if name == "contentBlockDelta")


def client(mock: MockBedrock, secret_key: str = SECRET_KEY, session_token: str | None = None) -> Any:
    """botocore's own bedrock-runtime client against the mock, without retries."""
    return botocore.session.get_session().create_client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=mock.base_url,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=secret_key,
        aws_session_token=session_token,
        config=Config(retries={"total_max_attempts": 1}),
    )


# Answers.


async def test_unary_text(mock: MockBedrock) -> None:
    body = ask("hi there")
    answer = await send(mock, body)
    assert answer.status == 200, answer.body
    assert answer.headers["x-amzn-RequestId"] == "00000000-0000-4000-8000-000000000001"
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.json() == {
        "output": {"message": {"role": "assistant", "content": [{"text": "mock: hi there"}]}},
        "stopReason": "end_turn",
        "usage": usage(body, 3),
        "metrics": {"latencyMs": 1},
    }
    assert mock.requests == [body]
    assert mock.model_ids == [MODEL]
    assert mock.headers[0]["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/")


async def test_model_arn_with_encoded_slashes(mock: MockBedrock) -> None:
    arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-haiku-20240307-v1:0"
    answer = await send(mock, ask(), model=arn)
    assert answer.status == 200, answer.body
    assert mock.model_ids == [arn]


async def test_blocks_system_and_settings_are_accepted(mock: MockBedrock) -> None:
    mock.cached_tokens = 12
    image = {"image": {"format": "png", "source": {"bytes": PNG}}}
    body = turns(
        user("first"),
        assistant("noted"),
        user(image, "what is", {"cachePoint": {"type": "default"}}, "this?"),
        system=[text("be brief"), {"cachePoint": {"type": "default"}}],
        inferenceConfig={"maxTokens": 100, "temperature": 0, "topP": 1, "stopSequences": ["zzz"]},
        guardrailConfig={"guardrailIdentifier": "abc123", "guardrailVersion": "DRAFT", "trace": "enabled"},
        additionalModelRequestFields={"top_k": 5},
        additionalModelResponseFieldPaths=["/stop_sequence"],
        requestMetadata={"team": "gateway"},
        performanceConfig={"latency": "standard"},
        promptVariables={"topic": {"text": "cats"}},
    )
    answer = await send(mock, body)
    assert answer.status == 200, answer.body
    reply = answer.json()
    assert reply["output"]["message"]["content"] == [{"text": "mock: what is this?"}]
    assert reply["usage"]["cacheReadInputTokens"] == 12
    assert reply["additionalModelResponseFields"] == {"stop_sequence": None}


async def test_max_tokens_truncates_to_words(mock: MockBedrock) -> None:
    reply = (await send(mock, ask("one two three", inferenceConfig={"maxTokens": 2}))).json()
    assert reply["output"]["message"]["content"] == [{"text": "mock: one"}]
    assert reply["stopReason"] == "max_tokens"
    assert reply["usage"]["outputTokens"] == 2


async def test_stop_sequence_cuts_before_it(mock: MockBedrock) -> None:
    body = ask("one two three", inferenceConfig={"stopSequences": ["three", " two"]})
    body["additionalModelResponseFieldPaths"] = ["/stop_sequence"]
    reply = (await send(mock, body)).json()
    assert reply["output"]["message"]["content"] == [{"text": "mock: one"}]
    assert reply["stopReason"] == "stop_sequence"
    assert reply["additionalModelResponseFields"] == {"stop_sequence": " two"}
    assert "additionalModelResponseFields" not in (await send(mock, ask("a b", inferenceConfig={}))).json()


async def test_prefilled_assistant_turn_is_accepted(mock: MockBedrock) -> None:
    answer = await send(mock, turns(user("hi there"), assistant("Sure,")))
    assert answer.status == 200, answer.body
    assert answer.json()["output"]["message"]["content"] == [{"text": "mock: hi there"}]


async def test_text_stream_frames(mock: MockBedrock) -> None:
    body = ask("hi there")
    answer = await send(mock, body, stream=True)
    assert answer.status == 200, answer.body
    assert answer.headers["Content-Type"] == "application/vnd.amazon.eventstream"
    assert answer.headers["x-amzn-RequestId"] == "00000000-0000-4000-8000-000000000001"
    frames = answer.frames()
    for frame in frames:
        assert frame.headers[":content-type"] == "application/json"
        assert frame.headers[":message-type"] == "event"
        assert list(frame.headers) == [":event-type", ":content-type", ":message-type"]
    assert answer.events() == [
        ("messageStart", {"role": "assistant"}),
        ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "mock:"}}),
        ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": " hi"}}),
        ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": " there"}}),
        ("contentBlockStop", {"contentBlockIndex": 0}),
        ("messageStop", {"stopReason": "end_turn"}),
        ("metadata", {"usage": usage(body, 3), "metrics": {"latencyMs": 1}}),
    ]
    assert len(b"".join(frame_bytes(answer.body))) == len(answer.body)


def frame_bytes(body: bytes) -> list[bytes]:
    """The body cut at each message's total length (its first 4 bytes)."""
    frames = []
    while body:
        total = int.from_bytes(body[:4], "big")
        frames.append(body[:total])
        body = body[total:]
    return frames


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"inferenceConfig": {"maxTokens": 2}},
        {"inferenceConfig": {"stopSequences": ["there"]}, "additionalModelResponseFieldPaths": ["/stop_sequence"]},
    ],
)
async def test_stream_joins_to_the_unary_answer(mock: MockBedrock, extra: dict[str, Any]) -> None:
    unary = (await send(mock, ask("hi there you", **extra))).json()
    events = (await send(mock, ask("hi there you", **extra), stream=True)).events()
    assert [{"text": streamed_text(events)}] == unary["output"]["message"]["content"]
    stop = dict(events)["messageStop"]
    assert stop["stopReason"] == unary["stopReason"]
    assert stop.get("additionalModelResponseFields") == unary.get("additionalModelResponseFields")
    assert dict(events)["metadata"]["usage"] == unary["usage"]


def shape(payload: Any) -> Any:
    """The keys of a payload at every depth, without its values (and without the service's "p" padding)."""
    if isinstance(payload, dict):
        return tuple(sorted((key, shape(value)) for key, value in payload.items() if key != "p"))
    if isinstance(payload, list):
        return tuple(shape(item) for item in payload)
    return None


def collapsed(events: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """Runs of deltas of the same shape as one: only the structure counts."""
    out: list[tuple[str, Any]] = []
    for name, payload in events:
        if not out or out[-1] != (name, shape(payload)):
            out.append((name, shape(payload)))
    return out


@pytest.mark.parametrize(("fixture", "body"), [("text", ask("hi there")), ("tool", ask("cat", toolConfig=TOOLS))])
async def test_streams_have_the_documented_shape(mock: MockBedrock, fixture: str, body: dict[str, Any]) -> None:
    documented = json.loads((FIXTURES / f"documented_{fixture}_stream.json").read_text())
    events = (await send(mock, body, stream=True)).events()
    assert collapsed(events) == collapsed([(name, payload) for name, payload in documented])


@pytest.mark.parametrize(("fixture", "body"), [("text", ask("hi there")), ("tool", ask("cat", toolConfig=TOOLS))])
async def test_stream_bytes_match_the_golden_files(mock: MockBedrock, fixture: str, body: dict[str, Any]) -> None:
    answer = await send(mock, body, stream=True)
    assert answer.body == (FIXTURES / f"mock_{fixture}_stream.bin").read_bytes()


@pytest.mark.parametrize(
    ("headers", "payload"),
    [
        ({":event-type": "contentBlockDelta", ":content-type": "application/json", ":message-type": "event"}, b"{}"),
        ({":message-type": "event", "x-unicode": "héllo ✓"}, '{"text": "日本語"}'.encode()),
        ({}, b""),
        ({"long": "v" * 1000}, b"x" * 70000),
    ],
)
def test_encode_event_round_trips_through_botocore(headers: dict[str, str], payload: bytes) -> None:
    frame = encode_event(headers, payload)
    assert int.from_bytes(frame[:4], "big") == len(frame)
    buffer = EventStreamBuffer()
    # Fed a byte at a time then whole, it decodes the same message once.
    for i in range(0, len(frame) - 1, max(1, len(frame) // 7)):
        buffer.add_data(frame[i : min(i + max(1, len(frame) // 7), len(frame) - 1)])
        assert list(buffer) == []
    buffer.add_data(frame[len(frame) - 1 :])
    [message] = list(buffer)
    assert message.headers == headers
    assert message.payload == payload
    assert encode_event(headers, payload) + frame == frame * 2


async def test_chunk_delay_paces_the_frames(mock: MockBedrock) -> None:
    mock.chunk_delay_s = 0.05
    started = time.monotonic()
    answer = await send(mock, ask("a b c"), stream=True)
    # messageStart, four words, contentBlockStop, messageStop, metadata.
    assert len(answer.frames()) == 8
    assert time.monotonic() - started >= 0.35


# Tool use.


async def test_unary_tool_use(mock: MockBedrock) -> None:
    body = ask("cat", toolConfig=TOOLS)
    reply = (await send(mock, body)).json()
    assert reply["output"]["message"]["content"] == [
        {"toolUse": {"toolUseId": "tooluse_mock_1", "name": "lookup", "input": {"text": "cat"}}}
    ]
    assert reply["stopReason"] == "tool_use"
    # json.dumps({"text": "cat"}) is 15 characters: two fragments of 8.
    assert reply["usage"] == usage(body, 2)


@pytest.mark.parametrize(
    ("choice", "name"),
    [(None, "lookup"), ({"auto": {}}, "lookup"), ({"any": {}}, "lookup"), ({"tool": {"name": "get_time"}}, "get_time")],
)
async def test_tool_choice(mock: MockBedrock, choice: dict[str, Any] | None, name: str) -> None:
    config: dict[str, Any] = {**TOOLS, "toolChoice": choice} if choice else TOOLS
    reply = (await send(mock, ask("cat", toolConfig=config))).json()
    assert reply["output"]["message"]["content"][0]["toolUse"]["name"] == name


async def test_tool_use_ids_count_up(mock: MockBedrock) -> None:
    for n in (1, 2):
        reply = (await send(mock, ask("cat", toolConfig=TOOLS))).json()
        assert reply["output"]["message"]["content"][0]["toolUse"]["toolUseId"] == f"tooluse_mock_{n}"


async def test_streamed_tool_use(mock: MockBedrock) -> None:
    body = ask("cat", toolConfig=TOOLS)
    events = (await send(mock, body, stream=True)).events()
    assert events == [
        ("messageStart", {"role": "assistant"}),
        (
            "contentBlockStart",
            {"contentBlockIndex": 0, "start": {"toolUse": {"toolUseId": "tooluse_mock_1", "name": "lookup"}}},
        ),
        ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"toolUse": {"input": '{"text":'}}}),
        ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"toolUse": {"input": ' "cat"}'}}}),
        ("contentBlockStop", {"contentBlockIndex": 0}),
        ("messageStop", {"stopReason": "tool_use"}),
        ("metadata", {"usage": usage(body, 2), "metrics": {"latencyMs": 1}}),
    ]
    assert json.loads(streamed_input(events)) == {"text": "cat"}


async def test_max_tokens_truncates_tool_input(mock: MockBedrock) -> None:
    reply = (await send(mock, ask("cat", toolConfig=TOOLS, inferenceConfig={"maxTokens": 1}))).json()
    assert reply["stopReason"] == "max_tokens"
    assert reply["output"]["message"]["content"][0]["toolUse"]["input"] == {}


async def test_tool_results_are_answered_with_text(mock: MockBedrock) -> None:
    body = turns(user("cat"), assistant("Looking.", tool_use("t1")), user(tool_result("t1")), toolConfig=TOOLS)
    reply = (await send(mock, body)).json()
    assert reply["output"]["message"]["content"] == [{"text": "mock: tool said: a feline"}]
    assert reply["stopReason"] == "end_turn"
    events = (await send(mock, body, stream=True)).events()
    assert streamed_text(events) == "mock: tool said: a feline"
    assert "contentBlockStart" not in dict(events)


async def test_parallel_tool_results_json_and_error_status(mock: MockBedrock) -> None:
    body = turns(
        user("cat"),
        assistant(tool_use("t1"), tool_use("t2", "get_time")),
        user(
            tool_result("t2", {"json": {"hour": 9}}, status="success"),
            tool_result("t1", text("not found"), status="error"),
            "go on",
        ),
        toolConfig=TOOLS,
    )
    reply = (await send(mock, body)).json()
    assert reply["output"]["message"]["content"] == [{"text": 'mock: tool said: {"hour": 9}'}]


async def test_botocore_client_end_to_end() -> None:
    """botocore signs (session token included), encodes the model id, and parses answers, streams and errors."""
    server = await MockBedrock(session_token="mock-session-token").start()
    try:

        def calls() -> None:
            bedrock = client(server, session_token="mock-session-token")
            reply = bedrock.converse(modelId=MODEL, messages=[user("hello botocore")], toolConfig=TOOLS)
            assert reply["output"]["message"]["content"][0]["toolUse"]["input"] == {"text": "hello botocore"}
            assert reply["ResponseMetadata"]["RequestId"] == "00000000-0000-4000-8000-000000000001"
            stream = bedrock.converse_stream(modelId=MODEL, messages=[user("hello botocore")])["stream"]
            events = [next(iter(event.items())) for event in stream]
            assert [name for name, _ in events] == [
                "messageStart",
                *["contentBlockDelta"] * 3,
                "contentBlockStop",
                "messageStop",
                "metadata",
            ]
            assert streamed_text(events) == "mock: hello botocore"
            with pytest.raises(ClientError) as refused:
                bedrock.converse(modelId=MODEL, messages=[assistant("x")])
            assert refused.value.response["Error"]["Code"] == "ValidationException"
            assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
            with pytest.raises(ClientError) as forged:
                client(server, secret_key="wrong", session_token="mock-session-token").converse(
                    modelId=MODEL, messages=[user("x")]
                )
            assert forged.value.response["Error"]["Code"] == "InvalidSignatureException"
            with pytest.raises(ClientError) as tokenless:
                client(server).converse(modelId=MODEL, messages=[user("x")])
            assert tokenless.value.response["Error"]["Code"] == "UnrecognizedClientException"

        await asyncio.to_thread(calls)
        assert server.headers[0]["x-amz-security-token"] == "mock-session-token"
        assert server.model_ids[0] == MODEL
    finally:
        await server.stop()


# Guardrails and content filters.


async def test_guardrail_intervened(mock: MockBedrock) -> None:
    mock.guardrail = True
    reply = (await send(mock, ask("cat", toolConfig=TOOLS))).json()
    assert reply["stopReason"] == "guardrail_intervened"
    assert reply["output"]["message"]["content"] == [{"text": GUARDRAIL_TEXT}]
    events = (await send(mock, ask("cat"), stream=True)).events()
    assert streamed_text(events) == GUARDRAIL_TEXT
    assert dict(events)["messageStop"] == {"stopReason": "guardrail_intervened"}


async def test_content_filtered(mock: MockBedrock) -> None:
    mock.content_filtered = True
    reply = (await send(mock, ask("cat"))).json()
    assert reply["stopReason"] == "content_filtered"
    assert reply["output"]["message"]["content"] == []
    events = (await send(mock, ask("cat"), stream=True)).events()
    assert [name for name, _ in events] == ["messageStart", "messageStop", "metadata"]
    assert dict(events)["messageStop"] == {"stopReason": "content_filtered"}


# SigV4.


async def test_missing_authorization(mock: MockBedrock) -> None:
    answer = await send(mock, ask(), headers={"Content-Type": "application/json"})
    assert answer.error() == (403, "MissingAuthenticationTokenException", "Missing Authentication Token")
    assert answer.headers["x-amzn-ErrorType"] == (
        "MissingAuthenticationTokenException:http://internal.amazon.com/coral/com.amazon.coral.service/"
    )
    assert answer.headers["x-amzn-RequestId"]
    assert mock.model_ids == []


async def test_unknown_access_key(mock: MockBedrock) -> None:
    answer = await send(mock, ask(), access_key="AKIAOTHERKEY00000000")
    assert answer.error() == (
        403,
        "UnrecognizedClientException",
        "The security token included in the request is invalid.",
    )


async def test_wrong_secret_key(mock: MockBedrock) -> None:
    status, kind, message = (await send(mock, ask(), secret_key="wrong")).error()
    assert (status, kind) == (403, "InvalidSignatureException")
    assert message.startswith(
        "The request signature we calculated does not match the signature you provided. Check your AWS Secret "
        "Access Key and signing method. Consult the service documentation for details.\n\nThe Canonical String "
        f"for this request should have been\n'POST\n/model/{quote(quote(MODEL, safe=''), safe='')}/converse\n\n"
    )
    assert "\n\nThe String-to-Sign should have been\n'AWS4-HMAC-SHA256\n" in message


async def test_body_changed_after_signing(mock: MockBedrock) -> None:
    url = mock.base_url + operation_path()
    headers = sign("POST", url, {"Content-Type": "application/json"}, json.dumps(ask("signed")))
    answer = await send(mock, ask("sent instead"), headers=headers)
    assert answer.error()[:2] == (403, "InvalidSignatureException")


async def test_unsigned_header_changes_are_ignored_but_signed_ones_are_not(mock: MockBedrock) -> None:
    assert (await send(mock, ask(), extra_headers={"X-Unsigned": "anything"})).status == 200
    answer = await send(mock, ask(), extra_headers={"Content-Type": "application/json; charset=utf-8"})
    assert answer.error()[:2] == (403, "InvalidSignatureException")


async def test_session_token() -> None:
    server = await MockBedrock(session_token="token-1").start()
    try:
        assert (await send(server, ask(), session_token="token-1")).status == 200
        for token in (None, "token-2"):
            answer = await send(server, ask(), session_token=token)
            assert answer.error() == (
                403,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            )
    finally:
        await server.stop()


async def test_a_token_the_mock_does_not_expect_is_refused(mock: MockBedrock) -> None:
    answer = await send(mock, ask(), session_token="stray")
    assert answer.error()[:2] == (403, "UnrecognizedClientException")


async def test_date_header_or_x_amz_date_is_required(mock: MockBedrock) -> None:
    signed = sign("POST", mock.base_url + operation_path(), {"Content-Type": "application/json"}, json.dumps(ask()))
    del signed["X-Amz-Date"]
    status, kind, message = (await send(mock, ask(), headers=signed)).error()
    assert (status, kind) == (403, "IncompleteSignatureException")
    assert message == (
        "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. "
        f"Authorization={signed['Authorization']}"
    )


async def test_signing_with_a_date_header(mock: MockBedrock) -> None:
    url = mock.base_url + operation_path()
    data = json.dumps(ask())
    signed = sign("POST", url, {"Content-Type": "application/json", "Date": "placeholder"}, data)
    assert "X-Amz-Date" not in signed
    assert (await send(mock, data, headers=signed)).status == 200


@pytest.mark.parametrize(
    ("authorization", "missing"),
    [
        ("Bearer some-api-key", ["Credential", "Signature", "SignedHeaders"]),
        (
            f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/20240101/us-east-1/bedrock/aws4_request",
            ["Signature", "SignedHeaders"],
        ),
    ],
)
async def test_malformed_authorization(mock: MockBedrock, authorization: str, missing: list[str]) -> None:
    headers = {"Content-Type": "application/json", "X-Amz-Date": "20240101T000000Z", "Authorization": authorization}
    status, kind, message = (await send(mock, ask(), headers=headers)).error()
    assert (status, kind) == (403, "IncompleteSignatureException")
    expected = [f"Authorization header requires '{name}' parameter." for name in missing]
    assert message == " ".join([*expected, f"Authorization={authorization}"])


@pytest.mark.parametrize(("offset_min", "words"), [(-6, "Signature expired: "), (6, "Signature not yet current: ")])
async def test_signing_time_must_be_within_five_minutes(mock: MockBedrock, offset_min: int, words: str) -> None:
    at = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=offset_min)
    stamp = at.strftime("%Y%m%dT%H%M%SZ")
    status, kind, message = (await send(mock, ask(), timestamp=stamp)).error()
    assert (status, kind) == (403, "InvalidSignatureException")
    assert message.startswith(words + stamp)
    assert message.endswith("- 5 min.)" if offset_min < 0 else "+ 5 min.)")
    # Within the window it is fine.
    near = (datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=4)).strftime("%Y%m%dT%H%M%SZ")
    assert (await send(mock, ask(), timestamp=near)).status == 200


async def test_scope_must_name_the_region_and_service(mock: MockBedrock) -> None:
    status, kind, message = (await send(mock, ask(), region="us-west-2")).error()
    assert (status, kind, message) == (
        403,
        "InvalidSignatureException",
        "Credential should be scoped to a valid region, not 'us-west-2'. ",
    )
    other = await MockBedrock(region="eu-west-1").start()
    try:
        assert (await send(other, ask(), region="eu-west-1")).status == 200
    finally:
        await other.stop()


async def test_yarl_re_encoding_breaks_the_signature(mock: MockBedrock) -> None:
    """aiohttp (yarl) sends `%3A` as `:` unless the URL is marked encoded: then the path signed is not the path
    sent, as AWS would see it too."""
    url = mock.base_url + operation_path()
    data = json.dumps(ask()).encode()
    headers = sign("POST", url, {"Content-Type": "application/json"}, data)
    async with aiohttp.ClientSession() as session, session.post(url, data=data, headers=headers) as response:
        assert response.status == 403
        assert response.headers["x-amzn-ErrorType"].startswith("InvalidSignatureException:")
    # Signing the path yarl sends works.
    sent = URL(url).raw_path
    assert ":" in sent
    headers = sign("POST", mock.base_url + sent, {"Content-Type": "application/json"}, data)
    async with aiohttp.ClientSession() as session, session.post(url, data=data, headers=headers) as response:
        assert response.status == 200
    assert mock.model_ids == [MODEL]


async def test_unknown_operations_are_not_found(mock: MockBedrock) -> None:
    for method, path in (("POST", f"/model/{MODEL}/invoke-x"), ("GET", operation_path()), ("POST", "/other")):
        answer = await send(mock, ask(), path=path, method=method)
        assert answer.error() == (404, "UnknownOperationException", "Unknown operation")
    assert (await send(mock, ask(), path="/other", headers={})).error()[1] == "MissingAuthenticationTokenException"


async def test_models_limit_the_model_ids() -> None:
    server = await MockBedrock(models={MODEL}).start()
    try:
        assert (await send(server, ask())).status == 200
        answer = await send(server, ask(), model="anthropic.claude-nope-v1:0")
        assert answer.error() == (400, "ValidationException", "The provided model identifier is invalid.")
        assert answer.headers["x-amzn-ErrorType"] == VALIDATION
    finally:
        await server.stop()


# Validation.


def first(body: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """`body` with the first message's first block replaced by `changes` (or the message by `message=`)."""
    messages = json.loads(json.dumps(body["messages"]))
    if "message" in changes:
        messages[0] = changes["message"]
    else:
        messages[0]["content"][0] = changes["block"]
    return {**body, "messages": messages}


def constraint(value: str, path: str, rule: str) -> str:
    return f"1 validation error detected: Value {value} at '{path}' failed to satisfy constraint: Member must {rule}"


BLOCKS = (
    "text, image, document, video, audio, toolUse, toolResult, guardContent, cachePoint, reasoningContent, "
    "citationsContent, searchResult, toolAddition, toolRemoval"
)
CALLED = assistant(tool_use("t1"))
INVALID: list[tuple[Any, str, str]] = [
    (
        [user("hi")],
        "SerializationException",
        'Invalid type for parameter input, value: [{"role":"user","content":[{"text":"hi"}]}], expected: object',
    ),
    (ask(foo=1), "ValidationException", "The model returned the following errors: foo: Extra inputs are not permitted"),
    (
        ask(modelId=MODEL),
        "ValidationException",
        "The model returned the following errors: modelId: Extra inputs are not permitted",
    ),
    ({"messages": "hi"}, "SerializationException", 'Invalid type for parameter messages, value: "hi", expected: list'),
    (
        first(ask(), message={"content": [text("x")]}),
        "ValidationException",
        constraint("null", "messages.1.member.role", "not be null"),
    ),
    (
        first(ask(), message={"role": "system", "content": [text("x")]}),
        "ValidationException",
        constraint("'system'", "messages.1.member.role", "satisfy enum value set: [user, assistant]"),
    ),
    (
        first(ask(), message={"role": "user"}),
        "ValidationException",
        constraint("null", "messages.1.member.content", "not be null"),
    ),
    (
        first(ask(), message={"role": "user", "content": [text("x")], "name": "bob"}),
        "ValidationException",
        'Unknown parameter in messages[0]: "name", must be one of: role, content',
    ),
    (
        first(ask(), message={"role": "user", "content": "hi"}),
        "SerializationException",
        'Invalid type for parameter messages[0].content, value: "hi", expected: list',
    ),
    (
        first(ask(), block={"text": "a", "cachePoint": {"type": "default"}}),
        "ValidationException",
        "Invalid number of parameters set for tagged union structure messages[0].content[0]. Can only "
        f"set one of the following keys: {BLOCKS}.",
    ),
    (
        first(ask(), block={}),
        "ValidationException",
        f"Must set one of the following keys for tagged union structure messages[0].content[0]: {BLOCKS}.",
    ),
    (
        first(ask(), block={"type": "text", "text": "x"}),
        "ValidationException",
        f'Unknown parameter in messages[0].content[0]: "type", must be one of: {BLOCKS}',
    ),
    (
        first(ask(), block={"text": 5}),
        "SerializationException",
        "Invalid type for parameter messages[0].content[0].text, value: 5, expected: string",
    ),
    (
        first(ask(), block={"image": {"format": "bmp", "source": {"bytes": PNG}}}),
        "ValidationException",
        constraint(
            "'bmp'", "messages.1.member.content.1.member.image.format", "satisfy enum value set: [png, jpeg, gif, webp]"
        ),
    ),
    (
        first(ask(), block={"image": {"format": "png"}}),
        "ValidationException",
        constraint("null", "messages.1.member.content.1.member.image.source", "not be null"),
    ),
    (
        first(ask(), block={"image": {"format": "png", "source": {"bytes": "not base64!"}}}),
        "SerializationException",
        "Invalid base64 at messages[0].content[0].image.source.bytes",
    ),
    (
        first(ask(), block={"image": {"format": "png", "source": {"bytes": ""}}}),
        "ValidationException",
        "1 validation error detected: Value at 'messages.1.member.content.1.member.image.source.bytes' "
        "failed to satisfy constraint: Member must have length greater than or equal to 1",
    ),
    (
        turns(user("x"), assistant({"toolUse": {"toolUseId": "t1", "name": "lookup"}}), toolConfig=TOOLS),
        "ValidationException",
        constraint("null", "messages.2.member.content.1.member.toolUse.input", "not be null"),
    ),
    (
        turns(user("x"), assistant({"toolUse": {"toolUseId": "t1", "name": "look up", "input": {}}}), toolConfig=TOOLS),
        "ValidationException",
        constraint(
            "'look up'",
            "messages.2.member.content.1.member.toolUse.name",
            "satisfy regular expression pattern: [a-zA-Z0-9_-]+",
        ),
    ),
    (
        turns(
            user("x"), assistant({"toolUse": {"toolUseId": "t" * 65, "name": "lookup", "input": {}}}), toolConfig=TOOLS
        ),
        "ValidationException",
        constraint(
            f"'{'t' * 65}'",
            "messages.2.member.content.1.member.toolUse.toolUseId",
            "have length less than or equal to 64",
        ),
    ),
    (
        turns(user("x"), CALLED, user(tool_result("t1", status="failed")), toolConfig=TOOLS),
        "ValidationException",
        constraint(
            "'failed'",
            "messages.3.member.content.1.member.toolResult.status",
            "satisfy enum value set: [success, error]",
        ),
    ),
    (
        turns(user("x"), CALLED, user({"toolResult": {"toolUseId": "t1"}}), toolConfig=TOOLS),
        "ValidationException",
        constraint("null", "messages.3.member.content.1.member.toolResult.content", "not be null"),
    ),
    (
        ask(system=[text("")]),
        "ValidationException",
        constraint("''", "system.1.member.text", "have length greater than or equal to 1"),
    ),
    (
        ask(system="be brief"),
        "SerializationException",
        'Invalid type for parameter system, value: "be brief", expected: list',
    ),
    (
        ask(inferenceConfig={"maxTokens": 0}),
        "ValidationException",
        constraint("'0'", "inferenceConfig.maxTokens", "have value greater than or equal to 1"),
    ),
    (
        ask(inferenceConfig={"maxTokens": "10"}),
        "SerializationException",
        'Invalid type for parameter inferenceConfig.maxTokens, value: "10", expected: integer',
    ),
    (
        ask(inferenceConfig={"temperature": 2}),
        "ValidationException",
        constraint("'2.0'", "inferenceConfig.temperature", "have value less than or equal to 1"),
    ),
    (
        ask(inferenceConfig={"temperature": -0.5}),
        "ValidationException",
        constraint("'-0.5'", "inferenceConfig.temperature", "have value greater than or equal to 0"),
    ),
    (
        ask(inferenceConfig={"topP": 1.5}),
        "ValidationException",
        constraint("'1.5'", "inferenceConfig.topP", "have value less than or equal to 1"),
    ),
    (
        ask(inferenceConfig={"stopSequences": [""]}),
        "ValidationException",
        constraint("''", "inferenceConfig.stopSequences.1.member", "have length greater than or equal to 1"),
    ),
    (
        ask(inferenceConfig={"stopSequences": ["x"] * 2501}),
        "ValidationException",
        constraint(f"'{['x'] * 2501}'", "inferenceConfig.stopSequences", "have length less than or equal to 2500"),
    ),
    (
        ask(inferenceConfig={"topK": 5}),
        "ValidationException",
        'Unknown parameter in inferenceConfig: "topK", must be one of: maxTokens, temperature, topP, stopSequences',
    ),
    (
        ask(toolConfig={"toolChoice": {"auto": {}}}),
        "ValidationException",
        constraint("null", "toolConfig.tools", "not be null"),
    ),
    (
        ask(toolConfig={"tools": []}),
        "ValidationException",
        constraint("'[]'", "toolConfig.tools", "have length greater than or equal to 1"),
    ),
    (
        ask(toolConfig={"tools": [{"toolSpec": {"name": "look up", "inputSchema": {"json": {}}}}]}),
        "ValidationException",
        constraint(
            "'look up'", "toolConfig.tools.1.member.toolSpec.name", "satisfy regular expression pattern: [a-zA-Z0-9_-]+"
        ),
    ),
    (
        ask(toolConfig={"tools": [LOOKUP, {"toolSpec": {"name": "n" * 65, "inputSchema": {"json": {}}}}]}),
        "ValidationException",
        constraint(f"'{'n' * 65}'", "toolConfig.tools.2.member.toolSpec.name", "have length less than or equal to 64"),
    ),
    (
        ask(toolConfig={"tools": [{"toolSpec": {"name": "lookup"}}]}),
        "ValidationException",
        constraint("null", "toolConfig.tools.1.member.toolSpec.inputSchema", "not be null"),
    ),
    (
        ask(toolConfig={"tools": [{"toolSpec": {"name": "lookup", "description": "", "inputSchema": {"json": {}}}}]}),
        "ValidationException",
        constraint("''", "toolConfig.tools.1.member.toolSpec.description", "have length greater than or equal to 1"),
    ),
    (
        ask(toolConfig={"tools": [{"name": "lookup", "input_schema": {}}]}),
        "ValidationException",
        'Unknown parameter in toolConfig.tools[0]: "name", must be one of: toolSpec, systemTool, cachePoint',
    ),
    (
        ask(toolConfig={**TOOLS, "toolChoice": {"none": {}}}),
        "ValidationException",
        'Unknown parameter in toolConfig.toolChoice: "none", must be one of: auto, any, tool',
    ),
    (
        ask(toolConfig={**TOOLS, "toolChoice": {"auto": {}, "any": {}}}),
        "ValidationException",
        "Invalid number of parameters set for tagged union structure toolConfig.toolChoice. Can only "
        "set one of the following keys: auto, any, tool.",
    ),
    (
        ask(toolConfig={**TOOLS, "toolChoice": {"tool": {"name": "missing"}}}),
        "ValidationException",
        "The tool missing in toolChoice is not defined in tools.",
    ),
    (
        ask(guardrailConfig={"guardrailIdentifier": "abc", "guardrailVersion": "1", "trace": "on"}),
        "ValidationException",
        constraint("'on'", "guardrailConfig.trace", "satisfy enum value set: [enabled, disabled, enabled_full]"),
    ),
    (
        ask(guardrailConfig={"guardrailIdentifier": "abc", "guardrailVersion": "1", "streamProcessingMode": "sync"}),
        "ValidationException",
        'Unknown parameter in guardrailConfig: "streamProcessingMode", must be one of: '
        "guardrailIdentifier, guardrailVersion, trace",
    ),
    (
        ask(performanceConfig={"latency": "fast"}),
        "ValidationException",
        constraint("'fast'", "performanceConfig.latency", "satisfy enum value set: [standard, optimized]"),
    ),
    (
        ask(requestMetadata={}),
        "ValidationException",
        "1 validation error detected: Value at 'requestMetadata' failed to satisfy constraint: Member "
        "must have length greater than or equal to 1",
    ),
    (
        ask(additionalModelResponseFieldPaths=["/a"] * 11),
        "ValidationException",
        constraint(f"'{['/a'] * 11}'", "additionalModelResponseFieldPaths", "have length less than or equal to 10"),
    ),
    (ask(serviceTier={}), "ValidationException", constraint("null", "serviceTier.type", "not be null")),
    (
        ask(additionalModelRequestFields=[1]),
        "SerializationException",
        "Invalid type for parameter additionalModelRequestFields, value: [1], expected: object",
    ),
    # Bedrock's own rules.
    (
        {},
        "ValidationException",
        "A conversation must start with a user message. Try again with a conversation that starts with a user message.",
    ),
    (
        turns(assistant("hi"), user("x")),
        "ValidationException",
        "A conversation must start with a user message. Try again with a conversation that starts with a user message.",
    ),
    (
        turns(user("x"), {"role": "assistant", "content": []}),
        "ValidationException",
        "The content field in the Message object at messages.1 is empty. Add a ContentBlock object to "
        "the content field and try again.",
    ),
    (
        turns(user("x"), user("y")),
        "ValidationException",
        "A conversation must alternate between user and assistant roles. Make sure the conversation "
        "alternates between user and assistant roles and try again.",
    ),
    (
        turns(user("x", "  ")),
        "ValidationException",
        "The text field in the ContentBlock object at messages.0.content.1 is blank. Add text to the "
        "text field, and try again.",
    ),
    (
        turns(user("x"), CALLED, user(tool_result("t1"))),
        "ValidationException",
        "The toolConfig field must be defined when using toolUse and toolResult content blocks.",
    ),
    (
        turns(user("x"), CALLED, user(tool_result("t1"), tool_result("t2")), toolConfig=TOOLS),
        "ValidationException",
        "The number of toolResult blocks at messages.2.content exceeds the number of toolUse blocks of previous turn.",
    ),
    (
        turns(user(tool_result("t1")), toolConfig=TOOLS),
        "ValidationException",
        "The number of toolResult blocks at messages.0.content exceeds the number of toolUse blocks of previous turn.",
    ),
    (
        turns(user("x"), assistant(tool_use("t1"), tool_use("t2")), user(tool_result("t1")), toolConfig=TOOLS),
        "ValidationException",
        "Expected toolResult blocks at messages.2.content for the following Ids: t2",
    ),
    (
        turns(user("x"), CALLED, user("never mind"), toolConfig=TOOLS),
        "ValidationException",
        "Expected toolResult blocks at messages.2.content for the following Ids: t1",
    ),
    (
        turns(user("x"), CALLED, user(tool_result("t1", {"json": [1, 2]})), toolConfig=TOOLS),
        "ValidationException",
        "The format of the value at messages.2.content.0.toolResult.content.0.json is invalid. Provide "
        "a json object for the field and try again.",
    ),
    (
        turns(
            user("x"),
            CALLED,
            user({"toolResult": {"toolUseId": "t1", "content": [], "status": "error"}}),
            toolConfig=TOOLS,
        ),
        "ValidationException",
        "The content field at messages.2.content.0.toolResult cannot be empty when status value is error.",
    ),
    (
        ask(system=[text("be brief")], additionalModelRequestFields={"system": "other"}),
        "ValidationException",
        "The additional field system conflicts with an existing field.",
    ),
    (
        ask(inferenceConfig={"maxTokens": 5}, additionalModelRequestFields={"max_tokens": 9}),
        "ValidationException",
        "The additional field max_tokens conflicts with an existing field.",
    ),
]


@pytest.mark.parametrize(("body", "kind", "message"), INVALID)
@pytest.mark.parametrize("stream", [False, True], ids=["converse", "converse-stream"])
async def test_invalid_requests_are_refused(
    mock: MockBedrock, body: Any, kind: str, message: str, stream: bool
) -> None:
    if stream and "streamProcessingMode" in json.dumps(body):
        pytest.skip("ConverseStream's guardrailConfig has streamProcessingMode")
    answer = await send(mock, body, stream=stream)
    assert answer.error() == (400, kind, message)
    assert answer.headers["x-amzn-ErrorType"] == f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"
    assert answer.headers["Content-Type"] == "application/json"


async def test_body_that_is_not_json(mock: MockBedrock) -> None:
    answer = await send(mock, b"{not json")
    assert answer.error() == (400, "SerializationException", "The request body is not valid JSON.")
    assert mock.requests == []


async def test_stream_guardrail_processing_mode_is_accepted(mock: MockBedrock) -> None:
    guardrail = {"guardrailIdentifier": "abc", "guardrailVersion": "1", "streamProcessingMode": "async"}
    assert (await send(mock, ask(guardrailConfig=guardrail), stream=True)).status == 200


async def test_additional_fields_that_do_not_clash_are_accepted(mock: MockBedrock) -> None:
    body = ask(
        additionalModelRequestFields={"system": "x", "max_tokens": 9, "top_k": 3, "thinking": {"type": "disabled"}}
    )
    assert (await send(mock, body)).status == 200


# Faults.


@pytest.mark.parametrize(("status", "kind"), sorted(EXCEPTIONS.items()))
@pytest.mark.parametrize("stream", [False, True], ids=["converse", "converse-stream"])
async def test_fault_status_has_the_matching_exception(mock: MockBedrock, status: int, kind: str, stream: bool) -> None:
    mock.fault = Fault(status=status, message="Too many requests", headers={"Retry-After": "3"})
    answer = await send(mock, ask(), stream=stream)
    assert answer.error() == (status, kind, "Too many requests")
    assert answer.headers["x-amzn-ErrorType"] == f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"
    assert answer.headers["Retry-After"] == "3"
    assert answer.headers["x-amzn-RequestId"]


async def test_fault_error_type_overrides_and_other_statuses(mock: MockBedrock) -> None:
    mock.fault = Fault(status=429, error_type="ModelNotReadyException")
    assert (await send(mock, ask())).error() == (429, "ModelNotReadyException", "mock failure")
    mock.fault = Fault(status=502)
    assert (await send(mock, ask())).error()[:2] == (502, "InternalServerException")
    mock.fault = Fault(status=409)
    assert (await send(mock, ask())).error()[:2] == (409, "ValidationException")


async def test_botocore_reads_fault_codes(mock: MockBedrock) -> None:
    mock.fault = Fault(status=429, message="Too many requests, please wait before trying again.")

    def call() -> Any:
        with pytest.raises(ClientError) as refused:
            client(mock).converse(modelId=MODEL, messages=[user("x")])
        return refused.value.response

    response = await asyncio.to_thread(call)
    assert response["Error"] == {
        "Code": "ThrottlingException",
        "Message": "Too many requests, please wait before trying again.",
    }
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 429


async def test_prompt_too_long(mock: MockBedrock) -> None:
    mock.fault = Fault(prompt_too_long=True)
    for stream in (False, True):
        answer = await send(mock, ask(), stream=stream)
        assert answer.error() == (400, "ValidationException", "Input is too long for requested model.")


async def test_validation_and_authentication_come_before_faults(mock: MockBedrock) -> None:
    mock.fault = Fault(status=500)
    assert (await send(mock, ask(inferenceConfig={"maxTokens": 0}))).status == 400
    assert (await send(mock, ask(), secret_key="wrong")).status == 403


async def test_hang_delays_the_answer(mock: MockBedrock) -> None:
    mock.fault = Fault(hang_s=0.3)
    started = time.monotonic()
    assert (await send(mock, ask())).status == 200
    assert time.monotonic() - started >= 0.3
    with pytest.raises(TimeoutError):
        await send(mock, ask(), timeout_s=0.1)


async def test_cut_stream_ends_without_message_stop(mock: MockBedrock) -> None:
    mock.fault = Fault(cut_after=1)
    answer = await send(mock, ask("a b c"), stream=True)
    assert answer.status == 200
    assert answer.events() == [
        ("messageStart", {"role": "assistant"}),
        ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "mock:"}}),
    ]


async def test_cut_tool_stream_after_fragments(mock: MockBedrock) -> None:
    mock.fault = Fault(cut_after=1)
    events = (await send(mock, ask("cat", toolConfig=TOOLS), stream=True)).events()
    assert [name for name, _ in events] == ["messageStart", "contentBlockStart", "contentBlockDelta"]
    assert streamed_input(events) == '{"text":'


async def test_malformed_frame_with_a_bad_crc(mock: MockBedrock) -> None:
    mock.fault = Fault(malformed_after=1)
    answer = await send(mock, ask("a b c"), stream=True)
    buffer = EventStreamBuffer()
    buffer.add_data(answer.body)
    assert [message.headers[":event-type"] for message in (next(buffer), next(buffer))] == [
        "messageStart",
        "contentBlockDelta",
    ]
    with pytest.raises(ChecksumMismatch):
        next(buffer)


async def test_malformed_frame_with_a_payload_that_is_not_json(mock: MockBedrock) -> None:
    mock.fault = Fault(malformed_after=0, malformed="json")
    frames = (await send(mock, ask("a b c"), stream=True)).frames()
    assert [frame.headers[":event-type"] for frame in frames] == ["messageStart", "contentBlockDelta"]
    assert frames[-1].payload == b"{not json"


@pytest.mark.parametrize("exception", STREAM_EXCEPTIONS)
async def test_exception_frame_mid_stream(mock: MockBedrock, exception: str) -> None:
    mock.fault = Fault(exception_after=1, stream_exception=exception, message="slow down")
    frames = (await send(mock, ask("a b c"), stream=True)).frames()
    assert [frame.headers[":message-type"] for frame in frames] == ["event", "event", "exception"]
    assert frames[-1].headers == {
        ":exception-type": exception,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    assert json.loads(frames[-1].payload) == {"message": "slow down"}


async def test_botocore_raises_the_exception_frame(mock: MockBedrock) -> None:
    mock.fault = Fault(exception_after=1, message="Too many tokens, please wait before trying again.")

    def call() -> tuple[list[str], Any]:
        stream = client(mock).converse_stream(modelId=MODEL, messages=[user("a b c")])["stream"]
        seen: list[str] = []
        with pytest.raises(EventStreamError) as raised:
            for event in stream:
                seen.extend(event)
        return seen, raised.value.response["Error"]

    seen, error = await asyncio.to_thread(call)
    assert seen == ["messageStart", "contentBlockDelta"]
    assert error == {"Code": "throttlingException", "Message": "Too many tokens, please wait before trying again."}
