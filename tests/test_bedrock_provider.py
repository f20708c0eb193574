"""The Bedrock adapter against the Converse mock: SigV4 signing, wire format both ways, event-stream
frames, tools and error classes."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from service.api.switchboard.v1 import gateway_pb2 as pb
from service.config import BedrockDeployment
from service.config import aws_credentials as credentials
from service.outcomes import Delta, StreamFinished, UpstreamError
from service.providers.bedrock import BedrockProvider
from tests.adapters import LOOKUP, failures, request, text
from tests.mock_bedrock import ACCESS_KEY, REGION, SECRET_KEY, Fault, MockBedrock, encode_event

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
ENVIRON = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}


@pytest.fixture
async def bedrock() -> AsyncIterator[MockBedrock]:
    mock = await MockBedrock().start()
    yield mock
    await mock.stop()


def deployment(endpoint: str, **overrides: object) -> BedrockDeployment:
    return BedrockDeployment.model_validate(
        {
            "type": "bedrock",
            "model": MODEL,
            "aws_region": REGION,
            "endpoint_url": endpoint,
        }
        | overrides
    )


@pytest.fixture
async def provider(bedrock: MockBedrock) -> AsyncIterator[BedrockProvider]:
    dep = deployment(bedrock.base_url)
    adapter = BedrockProvider(dep, credentials(dep, ENVIRON))
    yield adapter
    await adapter.aclose()


async def test_signed_unary_translates_both_ways(provider: BedrockProvider, bedrock: MockBedrock) -> None:
    bedrock.cached_tokens = 4
    completion = await provider.complete(request(max_tokens=100, temperature=0.5, stop=["zzz"]))
    assert completion.text == "mock: hi there"
    assert completion.finish_reason == pb.FINISH_REASON_STOP
    assert completion.usage.cached_input_tokens == 4 and completion.usage.output_tokens > 0
    assert completion.provider_request_id.startswith("00000000-")
    assert bedrock.model_ids[-1] == MODEL
    sent = bedrock.requests[-1]
    assert sent["system"] == [{"text": "be brief"}]
    assert sent["messages"] == [{"role": "user", "content": [{"text": "hi there"}]}]
    assert sent["inferenceConfig"] == {"maxTokens": 100, "temperature": 0.5, "stopSequences": ["zzz"]}
    assert bedrock.headers[-1]["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/")


async def test_stream_frames_match_the_unary_answer(provider: BedrockProvider) -> None:
    events = [event async for event in provider.stream(request())]
    assert "".join(e.text for e in events if isinstance(e, Delta)) == "mock: hi there"
    finished = events[-1]
    assert isinstance(finished, StreamFinished) and finished.finish_reason == pb.FINISH_REASON_STOP
    assert finished.usage.output_tokens > 0 and finished.provider_request_id


async def test_tool_use_unary_streamed_and_answered(provider: BedrockProvider, bedrock: MockBedrock) -> None:
    bedrock.chunk_delay_s = 0.005
    chat = request(text(pb.ROLE_USER, "define cat"))
    chat.tools.append(LOOKUP)
    chat.tool_choice.tool_name = "lookup"
    completion = await provider.complete(chat)
    (call,) = completion.tool_calls
    assert completion.finish_reason == pb.FINISH_REASON_TOOL_CALLS
    assert call.name == "lookup" and json.loads(call.arguments) == {"text": "define cat"}
    assert bedrock.requests[-1]["toolConfig"] == {
        "tools": [
            {
                "toolSpec": {
                    "name": "lookup",
                    "description": "Look a word up",
                    "inputSchema": {"json": {"type": "object", "properties": {}}},
                }
            }
        ],
        "toolChoice": {"tool": {"name": "lookup"}},
    }
    events = [event async for event in provider.stream(chat)]
    pieces = [piece for e in events if isinstance(e, Delta) for piece in e.tool_calls]
    assert pieces[0].name == "lookup" and pieces[0].id and len(pieces) > 2
    assert json.loads("".join(p.arguments for p in pieces)) == {"text": "define cat"}

    answered = request(
        text(pb.ROLE_USER, "define cat"),
        pb.Message(role=pb.ROLE_ASSISTANT, tool_calls=[call]),
        pb.Message(role=pb.ROLE_TOOL, tool_call_id=call.id, content=[pb.ContentPart(text="a feline")]),
    )
    answered.tools.append(LOOKUP)
    final = await provider.complete(answered)
    assert final.text == "mock: tool said: a feline"
    assert bedrock.requests[-1]["messages"][2] == {
        "role": "user",
        "content": [{"toolResult": {"toolUseId": call.id, "content": [{"text": "a feline"}]}}],
    }


async def test_wrong_credentials_are_auth_errors(bedrock: MockBedrock) -> None:
    dep = deployment(bedrock.base_url)
    adapter = BedrockProvider(dep, credentials(dep, {**ENVIRON, "AWS_SECRET_ACCESS_KEY": "wrong"}))
    with pytest.raises(UpstreamError) as caught:
        await adapter.complete(request())
    await adapter.aclose()
    assert caught.value.outcome == pb.OUTCOME_AUTH_ERROR
    assert "InvalidSignatureException" in caught.value.message


@pytest.mark.parametrize(
    ("fault", "outcome"),
    [
        (Fault(status=429), pb.OUTCOME_RATE_LIMITED),
        (Fault(status=503), pb.OUTCOME_OVERLOADED),
        (Fault(status=500), pb.OUTCOME_SERVER_ERROR),
        (Fault(status=408), pb.OUTCOME_TIMEOUT),
        (Fault(status=403), pb.OUTCOME_AUTH_ERROR),
        (Fault(status=400), pb.OUTCOME_BAD_REQUEST),
        (Fault(prompt_too_long=True), pb.OUTCOME_CONTEXT_WINDOW_EXCEEDED),
    ],
    ids=["throttled", "unavailable", "internal", "model-timeout", "denied", "validation", "prompt-too-long"],
)
async def test_http_errors_are_classified(
    provider: BedrockProvider, bedrock: MockBedrock, fault: Fault, outcome: int
) -> None:
    bedrock.fault = fault
    unary, stream = await failures(provider, request())
    assert (unary.outcome, stream.outcome) == (outcome, outcome)


@pytest.mark.parametrize(
    ("fault", "outcome"),
    [
        (Fault(cut_after=1), pb.OUTCOME_PROTOCOL_ERROR),
        (Fault(malformed_after=1, malformed="crc"), pb.OUTCOME_PROTOCOL_ERROR),
        (Fault(malformed_after=1, malformed="json"), pb.OUTCOME_PROTOCOL_ERROR),
        (Fault(exception_after=1, stream_exception="throttlingException"), pb.OUTCOME_RATE_LIMITED),
        (Fault(exception_after=1, stream_exception="modelStreamErrorException"), pb.OUTCOME_SERVER_ERROR),
    ],
    ids=["truncated", "bad-crc", "bad-json", "throttled-mid-stream", "model-stream-error"],
)
async def test_broken_streams_fail_after_their_content(
    provider: BedrockProvider, bedrock: MockBedrock, fault: Fault, outcome: int
) -> None:
    bedrock.fault = fault
    received: list[str] = []
    with pytest.raises(UpstreamError) as caught:
        async for event in provider.stream(request(text(pb.ROLE_USER, "x y z"))):
            if isinstance(event, Delta):
                received.append(event.text)
    assert caught.value.outcome == outcome
    assert "".join(received) == "mock:"


async def test_content_filtered_answers(provider: BedrockProvider, bedrock: MockBedrock) -> None:
    bedrock.content_filtered = True
    with pytest.raises(UpstreamError) as caught:
        await provider.complete(request())
    assert caught.value.outcome == pb.OUTCOME_CONTENT_FILTERED
    bedrock.content_filtered = False
    bedrock.guardrail = True
    completion = await provider.complete(request())
    assert completion.finish_reason == pb.FINISH_REASON_CONTENT_FILTER and completion.text


@pytest.mark.parametrize(
    ("chat", "named"),
    [
        (request(seed=1), "params.seed"),
        (request(temperature=1.2), "temperature above 1"),
        (
            pb.ChatRequest(
                model="g",
                messages=[
                    pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(image=pb.ImagePart(url="https://x/y.png"))])
                ],
            ),
            "image URLs",
        ),
        (
            pb.ChatRequest(
                model="g",
                messages=[text(pb.ROLE_USER, "hi")],
                tools=[LOOKUP],
                tool_choice=pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_NONE),
            ),
            "tool_choice NONE",
        ),
    ],
    ids=["seed", "hot-temperature", "image-url", "no-tools"],
)
async def test_what_converse_cannot_do_is_refused(
    provider: BedrockProvider, bedrock: MockBedrock, chat: pb.ChatRequest, named: str
) -> None:
    with pytest.raises(UpstreamError) as caught:
        await provider.complete(chat)
    assert caught.value.outcome == pb.OUTCOME_BAD_REQUEST and named in caught.value.message
    assert not bedrock.requests


FIXTURES = Path(__file__).parent / "fixtures" / "bedrock"


async def test_the_documented_tool_stream() -> None:
    """The documented ConverseStream events, framed as AWS event-stream messages, byte for byte."""
    frames = b"".join(
        encode_event(
            {":event-type": name, ":content-type": "application/json", ":message-type": "event"},
            json.dumps(payload).encode(),
        )
        for name, payload in json.loads((FIXTURES / "documented_tool_stream.json").read_text())
    )

    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=frames, content_type="application/vnd.amazon.eventstream")

    app = web.Application()
    app.router.add_post("/model/{model}/converse-stream", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    dep = deployment(f"http://127.0.0.1:{port}")
    adapter = BedrockProvider(dep, credentials(dep, ENVIRON))
    try:
        events = [event async for event in adapter.stream(request())]
    finally:
        await adapter.aclose()
        await runner.cleanup()
    pieces = [piece for e in events if isinstance(e, Delta) for piece in e.tool_calls]
    assert pieces[0].id == "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q" and pieces[0].name == "lookup"
    assert json.loads("".join(p.arguments for p in pieces)) == {"word": "cat"}
    finished = events[-1]
    assert isinstance(finished, StreamFinished) and finished.finish_reason == pb.FINISH_REASON_TOOL_CALLS
    assert finished.usage.input_tokens == 380 and finished.usage.output_tokens == 41


CREDENTIAL_PROCESS = """
import datetime, json, pathlib, sys
counter = pathlib.Path(sys.argv[1])
n = int(counter.read_text()) + 1 if counter.exists() else 1
counter.write_text(str(n))
expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=2)
print(json.dumps({"Version": 1, "AccessKeyId": f"ASIATEST{n}", "SecretAccessKey": f"secret-{n}",
                  "SessionToken": f"token-{n}", "Expiration": expires.isoformat()}))
"""


async def test_temporary_credentials_from_the_chain_are_refreshed_before_they_expire(
    bedrock: MockBedrock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A profile whose credential process hands out credentials that expire in 2 minutes, inside
    botocore's refresh window: every request is signed with fresh ones (the process's next), and
    the mock accepts only those, as AWS would once the old ones expired."""
    script = tmp_path / "issue.py"
    script.write_text(CREDENTIAL_PROCESS)
    aws_config = tmp_path / "config"
    aws_config.write_text(
        f"[profile rotating]\ncredential_process = {sys.executable} {script} {tmp_path / 'counter'}\n"
    )
    monkeypatch.setenv("AWS_CONFIG_FILE", str(aws_config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    dep = deployment(bedrock.base_url, aws_profile="rotating")
    found = credentials(dep, {})
    assert found is not None and found.method == "custom-process"
    adapter = BedrockProvider(dep, found)
    try:
        for _ in range(2):
            n = int((tmp_path / "counter").read_text()) + 1
            bedrock.access_key, bedrock.secret_key, bedrock.session_token = f"ASIATEST{n}", f"secret-{n}", f"token-{n}"
            assert (await adapter.complete(request())).text == "mock: hi there"
            assert f"Credential=ASIATEST{n}/" in bedrock.headers[-1]["authorization"]
    finally:
        await adapter.aclose()


def test_the_chain_finds_nothing_without_a_profile_and_the_instance_role_is_opt_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    for name in ("AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"):
        monkeypatch.delenv(name, raising=False)
    # The metadata endpoint would be asked, and answer nothing, only if the deployment opted in.
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    assert credentials(deployment("http://127.0.0.1:9"), {}) is None
    assert credentials(deployment("http://127.0.0.1:9", aws_profile="nowhere"), {}) is None
    assert credentials(deployment("http://127.0.0.1:9", instance_metadata=True), {}) is None
