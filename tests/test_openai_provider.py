"""The OpenAI-compatible adapter against the mock upstream: wire format both ways and error classes."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest

from service.api.switchboard.v1 import gateway_pb2 as pb
from service.config import AzureOpenAIDeployment, OpenAICompatibleDeployment
from service.outcomes import Delta, StreamFinished, UpstreamError
from service.providers.openai_compat import OpenAICompatibleProvider
from tests.adapters import failures
from tests.mock_openai import Fault, MockOpenAI


def deployment(base_url: str, timeout_s: float = 5.0) -> OpenAICompatibleDeployment:
    return OpenAICompatibleDeployment.model_validate(
        {
            "type": "openai_compatible",
            "model": "gpt-test",
            "base_url": base_url,
            "timeout_s": timeout_s,
        }
    )


@pytest.fixture
async def provider(upstream: MockOpenAI) -> AsyncIterator[OpenAICompatibleProvider]:
    upstream.api_key = "sk-right"
    adapter = OpenAICompatibleProvider.for_deployment(deployment(upstream.base_url), api_key="sk-right")
    yield adapter
    await adapter.aclose()


def request(text: str = "hi", **params: object) -> pb.ChatRequest:
    return pb.ChatRequest(
        model="g",
        messages=[
            pb.Message(role=pb.ROLE_SYSTEM, content=[pb.ContentPart(text="be brief")]),
            pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text=text)], name="ann"),
        ],
        params=pb.GenerationParams(**params),  # type: ignore[arg-type]
    )


async def test_unary_translates_both_ways(provider: OpenAICompatibleProvider, upstream: MockOpenAI) -> None:
    completion = await provider.complete(request("say hi", seed=7, top_p=0.9))
    assert completion.text == "mock: say hi"
    assert completion.finish_reason == pb.FINISH_REASON_STOP
    assert completion.usage.output_tokens == 3 and completion.usage.input_tokens > 0
    assert completion.provider_request_id == "chatcmpl-mock1"
    assert upstream.requests[-1] == {
        "model": "gpt-test",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "say hi", "name": "ann"}],
        "top_p": 0.9,
        "seed": 7,
    }


async def test_images_become_content_parts(provider: OpenAICompatibleProvider, upstream: MockOpenAI) -> None:
    message = pb.Message(
        role=pb.ROLE_USER,
        content=[
            pb.ContentPart(text="what is this?"),
            pb.ContentPart(image=pb.ImagePart(url="https://example.com/cat.png")),
            pb.ContentPart(image=pb.ImagePart(data=b"\x89PNG", mime_type="image/png")),
        ],
    )
    await provider.complete(pb.ChatRequest(model="g", messages=[message]))
    assert upstream.requests[-1]["messages"][0]["content"] == [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw=="}},
    ]


async def test_stream_yields_deltas_then_usage(provider: OpenAICompatibleProvider, upstream: MockOpenAI) -> None:
    events = [event async for event in provider.stream(request("a b", max_tokens=2))]
    deltas = events[:-1]
    assert all(isinstance(d, Delta) and d.text for d in deltas)
    assert "".join(d.text for d in deltas if isinstance(d, Delta)) == "mock: a"
    finished = events[-1]
    assert isinstance(finished, StreamFinished)
    assert finished.finish_reason == pb.FINISH_REASON_LENGTH
    assert finished.usage.output_tokens == 2
    assert finished.provider_request_id == "chatcmpl-mock2"
    sent = upstream.requests[-1]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    ("fault", "outcome", "status"),
    [
        (Fault(status=429, headers={"Retry-After": "7"}), pb.OUTCOME_RATE_LIMITED, 429),
        (Fault(status=500), pb.OUTCOME_SERVER_ERROR, 500),
        (Fault(status=503), pb.OUTCOME_OVERLOADED, 503),
        (Fault(status=404, message="The model `x` does not exist"), pb.OUTCOME_SERVER_ERROR, 404),
        (Fault(status=400, code="context_length_exceeded"), pb.OUTCOME_CONTEXT_WINDOW_EXCEEDED, 400),
        (Fault(status=400, code="content_policy_violation"), pb.OUTCOME_CONTENT_FILTERED, 400),
        (Fault(status=422, message="bad thing"), pb.OUTCOME_BAD_REQUEST, 422),
        # A billing stop, not a rate limit: no wait brings the account back.
        (Fault(status=429, code="insufficient_quota"), pb.OUTCOME_AUTH_ERROR, 429),
    ],
    ids=["429", "500", "503", "404", "context", "content-filter", "422", "insufficient-quota"],
)
async def test_http_errors_are_classified(
    provider: OpenAICompatibleProvider, upstream: MockOpenAI, fault: Fault, outcome: int, status: int
) -> None:
    upstream.fault = fault
    for error in await failures(provider, request()):
        assert (error.outcome, error.status) == (outcome, status)
        if outcome == pb.OUTCOME_RATE_LIMITED:
            assert error.retry_after_s == 7.0


async def test_wrong_key_is_auth_error(upstream: MockOpenAI) -> None:
    upstream.api_key = "sk-right"
    adapter = OpenAICompatibleProvider.for_deployment(deployment(upstream.base_url), api_key="sk-wrong")
    with pytest.raises(UpstreamError) as caught:
        await adapter.complete(request())
    assert caught.value.outcome == pb.OUTCOME_AUTH_ERROR
    await adapter.aclose()


async def test_upstream_rejects_what_the_api_rejects(provider: OpenAICompatibleProvider) -> None:
    # The gateway validates before calling, so this only shows the mock is faithful.
    with pytest.raises(UpstreamError) as caught:
        await provider.complete(request(temperature=3.0))
    assert caught.value.outcome == pb.OUTCOME_BAD_REQUEST
    assert "temperature" in caught.value.message


async def test_paced_chunks_pass_one_by_one_and_bursts_are_merged(
    provider: OpenAICompatibleProvider, upstream: MockOpenAI
) -> None:
    upstream.chunk_delay_s = 0.05
    paced = [e.text async for e in provider.stream(request("a b c")) if isinstance(e, Delta)]
    assert paced == ["mock:", " a", " b", " c"]
    upstream.chunk_delay_s = 0.0
    burst = [e.text async for e in provider.stream(request("a b c")) if isinstance(e, Delta)]
    assert "".join(burst) == "mock: a b c"
    assert len(burst) < len(paced)


@pytest.mark.parametrize(
    ("fault", "outcome"),
    [
        (Fault(cut_after=1), pb.OUTCOME_PROTOCOL_ERROR),
        (Fault(malformed_after=1), pb.OUTCOME_PROTOCOL_ERROR),
        (Fault(error_event_after=1), pb.OUTCOME_SERVER_ERROR),
    ],
    ids=["truncated", "malformed", "error-event"],
)
async def test_broken_streams_fail_after_their_content(
    provider: OpenAICompatibleProvider, upstream: MockOpenAI, fault: Fault, outcome: int
) -> None:
    upstream.fault = fault
    received: list[object] = []
    with pytest.raises(UpstreamError) as caught:
        async for event in provider.stream(request("x y z")):
            received.append(event)
    assert caught.value.outcome == outcome
    assert received == [Delta("mock:")]


async def test_refused_connection_is_connection_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    adapter = OpenAICompatibleProvider.for_deployment(deployment(f"http://127.0.0.1:{port}/v1"), api_key=None)
    with pytest.raises(UpstreamError) as caught:
        await adapter.complete(request())
    assert caught.value.outcome == pb.OUTCOME_CONNECTION_ERROR
    await adapter.aclose()


async def test_slow_upstream_is_timeout(upstream: MockOpenAI) -> None:
    upstream.fault = Fault(hang_s=5)
    adapter = OpenAICompatibleProvider.for_deployment(deployment(upstream.base_url, timeout_s=0.2), api_key=None)
    with pytest.raises(UpstreamError) as caught:
        await adapter.complete(request())
    assert caught.value.outcome == pb.OUTCOME_TIMEOUT
    await adapter.aclose()


async def test_a_burst_of_tool_call_pieces_merges_per_call(provider: OpenAICompatibleProvider) -> None:
    request = pb.ChatRequest(
        model="g", messages=[pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text="call it")])]
    )
    request.tools.add(name="lookup")
    events = [event async for event in provider.stream(request)]
    pieces = [piece for event in events if isinstance(event, Delta) for piece in event.tool_calls]
    assert pieces[0].name == "lookup" and pieces[0].id.startswith("call_mock_")
    assert all(piece.index == 0 for piece in pieces)
    # Pieces that arrived together were joined, so there are fewer than the mock's 8-character fragments.
    arguments = "".join(piece.arguments for piece in pieces)
    assert len(pieces) - 1 < len(arguments) / 8
    assert arguments == '{"text": "call it"}'
    finished = events[-1]
    assert isinstance(finished, StreamFinished) and finished.finish_reason == pb.FINISH_REASON_TOOL_CALLS


def azure(upstream: MockOpenAI, **overrides: object) -> AzureOpenAIDeployment:
    return AzureOpenAIDeployment.model_validate(
        {
            "type": "azure_openai",
            "model": "gpt-4o",
            "endpoint": upstream.azure_endpoint,
            "azure_deployment": "mock-deployment",
        }
        | overrides
    )


async def test_azure_puts_the_deployment_in_the_path_and_the_key_in_api_key(upstream: MockOpenAI) -> None:
    upstream.api_key = "az-key"
    adapter = OpenAICompatibleProvider.for_deployment(azure(upstream), api_key="az-key")
    completion = await adapter.complete(request("hello"))
    events = [event async for event in adapter.stream(request("hello"))]
    await adapter.aclose()
    assert completion.text == "mock: hello"
    assert "".join(e.text for e in events if isinstance(e, Delta)) == "mock: hello"
    assert "model" not in upstream.requests[-1]
    assert upstream.headers[-1]["api-key"] == "az-key" and "Authorization" not in upstream.headers[-1]


@pytest.mark.parametrize(
    ("overrides", "key", "outcome"),
    [
        ({"api_version": "1999-01-01"}, "az-key", pb.OUTCOME_SERVER_ERROR),
        ({"azure_deployment": "other"}, "az-key", pb.OUTCOME_SERVER_ERROR),
        ({}, "wrong", pb.OUTCOME_AUTH_ERROR),
    ],
    ids=["unknown-api-version", "unknown-deployment", "wrong-key"],
)
async def test_azure_misconfigurations_are_classified(
    upstream: MockOpenAI, overrides: dict[str, object], key: str, outcome: int
) -> None:
    upstream.api_key = "az-key"
    adapter = OpenAICompatibleProvider.for_deployment(azure(upstream, **overrides), api_key=key)
    with pytest.raises(UpstreamError) as caught:
        await adapter.complete(request())
    await adapter.aclose()
    assert caught.value.outcome == outcome
    if outcome == pb.OUTCOME_SERVER_ERROR:
        assert "check the deployment's base_url and model" in caught.value.message


async def test_server_differences_are_configuration(upstream: MockOpenAI) -> None:
    """A server with its own auth header, no stream usage, max_completion_tokens and extra headers."""
    dep = OpenAICompatibleDeployment.model_validate(
        {
            "type": "openai_compatible",
            "model": "o-model",
            "base_url": upstream.base_url,
            "api_key_header": "X-Api-Key",
            "api_key_prefix": "",
            "stream_usage": False,
            "max_tokens_field": "max_completion_tokens",
            "extra_headers": {"HTTP-Referer": "https://example.org", "X-Title": "switchboard"},
        }
    )
    adapter = OpenAICompatibleProvider.for_deployment(dep, api_key="k-1")
    events = [event async for event in adapter.stream(request("a b c", max_tokens=2))]
    await adapter.aclose()
    sent, headers = upstream.requests[-1], upstream.headers[-1]
    assert sent["max_completion_tokens"] == 2 and "max_tokens" not in sent
    assert "stream_options" not in sent
    assert headers["X-Api-Key"] == "k-1" and "Authorization" not in headers
    assert headers["HTTP-Referer"] == "https://example.org" and headers["X-Title"] == "switchboard"
    finished = events[-1]
    # Without stream usage the server reports none: zero, not a guess.
    assert isinstance(finished, StreamFinished) and finished.usage.output_tokens == 0
    assert finished.finish_reason == pb.FINISH_REASON_LENGTH
