"""Policies over gRPC: code tasks to the coder group, long prompts to the long-context model,
residency never violated, and the decision explained by Route."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import error_details_pb2

from service.api.switchboard.v1 import gateway_pb2 as pb
from tests.conftest import StartGateway, status_details
from tests.mock_openai import MockOpenAI


def config(coder: MockOpenAI, long_context: MockOpenAI, general: MockOpenAI) -> str:
    def deployment(id_: str, mock: MockOpenAI, region: str, window: int) -> str:
        return f"""
      - id: {id_}
        type: openai_compatible
        model: {id_}-model
        base_url: {mock.base_url}
        region: {region}
        context_window: {window}"""

    return f"""
default_group: general
model_groups:
  - name: general
    deployments:{deployment("general-eu", general, "eu", 16000)}
  - name: coder
    deployments:{deployment("coder-us", coder, "us", 16000)}
  - name: long
    deployments:{deployment("long-us", long_context, "us", 1000000)}
policies:
  - id: long-prompts
    when: {{field: input_tokens, gt: 8000}}
    route_to: {{groups: [long]}}
    fallback: [{{groups: [general]}}]
  - id: code
    when: {{field: task, eq: code}}
    route_to: {{groups: [coder]}}
    fallback: [{{groups: [general]}}]
"""


@pytest.fixture
async def mocks() -> AsyncIterator[list[MockOpenAI]]:
    started = [await MockOpenAI(reply_prefix=f"{name}: ").start() for name in ("coder", "long", "general")]
    yield started
    for mock in started:
        await mock.stop()


def chat(text: str, task: str = "", regions: tuple[str, ...] = ()) -> pb.ChatRequest:
    return pb.ChatRequest(
        model="auto",
        messages=[pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text=text)])],
        routing=pb.RoutingHints(task=task, allowed_regions=regions),
    )


async def test_policies_route_by_task_and_prompt_length(start_gateway: StartGateway, mocks: list[MockOpenAI]) -> None:
    coder, long_context, general = mocks
    stub = await start_gateway(config(coder, long_context, general))

    code = await stub.Chat(chat("write a parser", task="code"))
    assert code.served.deployment == "coder-us"
    assert code.message.content[0].text == "coder: write a parser"

    long_prompt = "word " * 10_000  # about 12.5k tokens by the gateway's estimate
    long = await stub.Chat(chat(long_prompt, task="code"))
    assert long.served.deployment == "long-us", "the earlier long-prompts rule wins over code"

    plain = await stub.Chat(chat("hello"))
    assert plain.served.deployment == "general-eu"

    explained = await stub.Route(pb.RouteRequest(model="auto", routing=pb.RoutingHints(task="code")))
    assert explained.policy == "code" and explained.strategy == "weighted"
    assert [(c.deployment, c.tier) for c in explained.candidates] == [("coder-us", 0), ("general-eu", 1)]


async def test_residency_is_never_violated_even_by_fallback(
    start_gateway: StartGateway, mocks: list[MockOpenAI]
) -> None:
    coder, long_context, general = mocks
    stub = await start_gateway(config(coder, long_context, general))

    code_in_eu = await stub.Chat(chat("write a parser", task="code", regions=("eu",)))
    assert code_in_eu.served.deployment == "general-eu"
    assert not coder.requests, "the us coder must not see an eu-only request"

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Chat(chat("word " * 20_000, regions=("eu",)))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    (info,) = status_details(caught.value)
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert info.metadata["rejected.long-us"].startswith("region:")
    assert info.metadata["rejected.general-eu"].startswith("context_window:")
    assert not long_context.requests
    assert len(general.requests) == 1, "only the first (eu) request reached general"
