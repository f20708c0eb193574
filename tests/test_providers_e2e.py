"""One conversation across providers of different types, through the gateway: fallback from one
wire protocol to another gives the same normalised answer, tools included."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import grpc
import pytest

from service.api.switchboard.v1 import gateway_pb2 as pb
from tests.conftest import StartGateway
from tests.mock_anthropic import Fault as AnthropicFault
from tests.mock_anthropic import MockAnthropic
from tests.mock_bedrock import MockBedrock
from tests.mock_gemini import MockGemini
from tests.mock_openai import Fault as OpenAIFault
from tests.mock_openai import MockOpenAI


@pytest.fixture
async def gemini() -> AsyncIterator[MockGemini]:
    mock = await MockGemini(api_key="sk-test").start()
    yield mock
    await mock.stop()


@pytest.fixture
async def bedrock() -> AsyncIterator[MockBedrock]:
    # The gateway's test environment holds one secret, MOCK_KEY=sk-test: both AWS keys here.
    mock = await MockBedrock(access_key="sk-test", secret_key="sk-test").start()
    yield mock
    await mock.stop()


@pytest.fixture
async def anthropic() -> AsyncIterator[MockAnthropic]:
    mock = await MockAnthropic(api_key="sk-test").start()
    yield mock
    await mock.stop()


def config(
    anthropic: MockAnthropic,
    openai: MockOpenAI,
    first: str,
    gemini: MockGemini | None = None,
    bedrock: MockBedrock | None = None,
) -> str:
    deployments = {
        "anthropic": f"""
      - id: claude
        type: anthropic
        model: claude-test
        base_url: {anthropic.base_url}
        api_key_env: MOCK_KEY
        context_window: 200000
        capabilities: [streaming, tools, vision]""",
        "openai": f"""
      - id: gpt
        type: openai_compatible
        model: gpt-test
        base_url: {openai.base_url}
        api_key_env: MOCK_KEY
        context_window: 128000
        capabilities: [streaming, tools, vision]""",
    }
    deployments["azure"] = f"""
      - id: azure-gpt
        type: azure_openai
        model: gpt-4o
        endpoint: {openai.azure_endpoint}
        azure_deployment: {openai.azure_deployment}
        api_key_env: MOCK_KEY
        context_window: 128000
        capabilities: [streaming, tools, vision]"""
    if gemini is not None:
        deployments["gemini"] = f"""
      - id: gemini-flash
        type: gemini
        model: gemini-2.5-flash
        base_url: {gemini.base_url}
        api_key_env: MOCK_KEY
        context_window: 1048576
        capabilities: [streaming, tools, vision, json_mode, json_schema]"""
    if bedrock is not None:
        deployments["bedrock"] = f"""
      - id: bedrock-haiku
        type: bedrock
        model: anthropic.claude-3-haiku-20240307-v1:0
        aws_region: us-east-1
        endpoint_url: {bedrock.base_url}
        access_key_env: MOCK_KEY
        secret_key_env: MOCK_KEY
        context_window: 200000
        capabilities: [streaming, tools, vision]"""
    order = [first, *(name for name in deployments if name != first)]
    listed = "".join(
        deployments[name].replace("context_window", f"priority: {i}\n        context_window")
        for i, name in enumerate(order)
    )
    singles = "".join(
        f"""
  - name: only-{name}
    deployments:{deployments[name].replace("id: ", f"id: {name}-only-", 1)}"""
        for name in deployments
    )
    return f"""
default_group: mixed
model_groups:
  - name: mixed
    strategy: priority
    deployments:{listed}{singles}
"""


def user(text: str) -> pb.Message:
    return pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text=text)])


LOOKUP = pb.Tool(name="lookup", description="Look a word up")


async def test_list_models_names_each_provider_type(
    start_gateway: StartGateway,
    anthropic: MockAnthropic,
    upstream: MockOpenAI,
    gemini: MockGemini,
    bedrock: MockBedrock,
) -> None:
    stub = await start_gateway(config(anthropic, upstream, first="anthropic", gemini=gemini, bedrock=bedrock))
    group = (await stub.ListModels(pb.ListModelsRequest())).model_groups[0]
    assert {d.id: d.provider for d in group.deployments} == {
        "claude": "anthropic",
        "gpt": "openai_compatible",
        "azure-gpt": "azure_openai",
        "gemini-flash": "gemini",
        "bedrock-haiku": "bedrock",
    }


@pytest.mark.parametrize("provider", ["anthropic", "openai", "azure", "gemini", "bedrock"])
async def test_every_provider_type_answers_with_tools_unary_and_streamed(
    start_gateway: StartGateway,
    anthropic: MockAnthropic,
    upstream: MockOpenAI,
    gemini: MockGemini,
    bedrock: MockBedrock,
    provider: str,
) -> None:
    upstream.api_key = "sk-test"
    stub = await start_gateway(config(anthropic, upstream, first="anthropic", gemini=gemini, bedrock=bedrock))
    request = pb.ChatRequest(model=f"only-{provider}", messages=[user("define cat")], tools=[LOOKUP])
    response = await stub.Chat(request)
    assert response.served.deployment.startswith(f"{provider}-only-")
    assert response.finish_reason == pb.FINISH_REASON_TOOL_CALLS
    (call,) = response.message.tool_calls
    assert call.name == "lookup" and call.id and json.loads(call.arguments) == {"text": "define cat"}
    events = [event async for event in stub.ChatStream(request)]
    pieces = [piece for event in events if event.HasField("delta") for piece in event.delta.tool_calls]
    assert pieces[0].name == "lookup" and pieces[0].id
    assert json.loads("".join(piece.arguments for piece in pieces)) == {"text": "define cat"}
    assert events[-1].end.finish_reason == pb.FINISH_REASON_TOOL_CALLS
    plain = await stub.Chat(pb.ChatRequest(model=f"only-{provider}", messages=[user("hello")]))
    assert plain.message.content[0].text == "mock: hello" and plain.usage.output_tokens > 0


@pytest.mark.parametrize("failing", ["anthropic", "openai"])
async def test_a_failing_provider_falls_back_to_the_other_type(
    start_gateway: StartGateway, anthropic: MockAnthropic, upstream: MockOpenAI, failing: str
) -> None:
    anthropic.fault = AnthropicFault(status=529) if failing == "anthropic" else None
    upstream.fault = OpenAIFault(status=503) if failing == "openai" else None
    stub = await start_gateway(config(anthropic, upstream, first=failing))
    request = pb.ChatRequest(model="mixed", messages=[user("hello both")])
    response = await stub.Chat(request)
    answered = "gpt" if failing == "anthropic" else "claude"
    assert response.served.deployment == answered
    assert response.message.content[0].text == "mock: hello both"
    assert response.finish_reason == pb.FINISH_REASON_STOP
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    assert [(a.deployment, a.outcome) for a in response.attempts] == [
        ("claude" if failing == "anthropic" else "gpt", pb.OUTCOME_OVERLOADED),
        (answered, pb.OUTCOME_OK),
    ]
    events = [event async for event in stub.ChatStream(request)]
    assert events[0].start.served.deployment == answered
    assert "".join(e.delta.text for e in events if e.HasField("delta")) == "mock: hello both"
    assert events[-1].end.finish_reason == pb.FINISH_REASON_STOP


async def test_a_tool_conversation_moves_between_providers(
    start_gateway: StartGateway, anthropic: MockAnthropic, upstream: MockOpenAI
) -> None:
    """Anthropic makes the tool call; it then fails, and OpenAI answers the tool result turn."""
    stub = await start_gateway(config(anthropic, upstream, first="anthropic"))
    first = await stub.Chat(pb.ChatRequest(model="mixed", messages=[user("define cat")], tools=[LOOKUP]))
    assert first.served.deployment == "claude"
    (call,) = first.message.tool_calls
    assert call.id.startswith("toolu_") and json.loads(call.arguments) == {"text": "define cat"}

    anthropic.fault = AnthropicFault(status=529)
    result = pb.Message(role=pb.ROLE_TOOL, tool_call_id=call.id, content=[pb.ContentPart(text="a feline")])
    second = await stub.Chat(
        pb.ChatRequest(model="mixed", messages=[user("define cat"), first.message, result], tools=[LOOKUP])
    )
    assert second.served.deployment == "gpt"
    assert second.message.content[0].text == "mock: tool said: a feline"
    sent = upstream.requests[-1]["messages"]
    assert sent[1]["tool_calls"][0]["id"] == call.id and sent[2]["tool_call_id"] == call.id


async def test_what_a_provider_cannot_do_is_invalid_argument(
    start_gateway: StartGateway, anthropic: MockAnthropic, upstream: MockOpenAI
) -> None:
    stub = await start_gateway(config(anthropic, upstream, first="anthropic"))
    request = pb.ChatRequest(model="only-anthropic", messages=[user("hi")], params=pb.GenerationParams(seed=7))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Chat(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "does not support params.seed" in (caught.value.details() or "")
    assert not anthropic.requests
