"""Transport failures are classified the same for every provider type: a refused connection is a
connection error, an upstream that does not answer in time is a timeout."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable

import pytest

from service.api.switchboard.v1 import gateway_pb2 as pb
from service.config import (
    AnthropicDeployment,
    AzureOpenAIDeployment,
    BedrockDeployment,
    GeminiDeployment,
    OpenAICompatibleDeployment,
)
from service.config import aws_credentials as credentials
from service.outcomes import UpstreamError
from service.providers import Provider
from service.providers.anthropic import AnthropicProvider
from service.providers.bedrock import BedrockProvider
from service.providers.gemini import GeminiProvider
from service.providers.openai_compat import OpenAICompatibleProvider
from tests.adapters import drain
from tests.mock_anthropic import Fault as AnthropicFault
from tests.mock_anthropic import MockAnthropic
from tests.mock_bedrock import ACCESS_KEY, SECRET_KEY, MockBedrock
from tests.mock_bedrock import Fault as BedrockFault
from tests.mock_gemini import Fault as GeminiFault
from tests.mock_gemini import MockGemini
from tests.mock_openai import Fault as OpenAIFault
from tests.mock_openai import MockOpenAI

TIMEOUT_S = 0.3


def _common(**fields: object) -> dict[str, object]:
    return {"model": "m-1:0", "timeout_s": TIMEOUT_S} | fields


def openai(root: str) -> Provider:
    dep = OpenAICompatibleDeployment.model_validate(_common(type="openai_compatible", base_url=f"{root}/v1"))
    return OpenAICompatibleProvider.for_deployment(dep, "k")


def azure(root: str) -> Provider:
    dep = AzureOpenAIDeployment.model_validate(
        _common(type="azure_openai", endpoint=root, azure_deployment="mock-deployment")
    )
    return OpenAICompatibleProvider.for_deployment(dep, "k")


def anthropic(root: str) -> Provider:
    return AnthropicProvider(AnthropicDeployment.model_validate(_common(type="anthropic", base_url=root)), "k")


def gemini(root: str) -> Provider:
    return GeminiProvider(GeminiDeployment.model_validate(_common(type="gemini", base_url=root)), "k")


def bedrock(root: str) -> Provider:
    dep = BedrockDeployment.model_validate(_common(type="bedrock", aws_region="us-east-1", endpoint_url=root))
    return BedrockProvider(
        dep, credentials(dep, {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY})
    )


async def hanging_openai() -> tuple[str, Callable[[], Awaitable[None]]]:
    mock = await MockOpenAI().start()
    mock.fault = OpenAIFault(hang_s=5)
    return mock.azure_endpoint, mock.stop


async def hanging_anthropic() -> tuple[str, Callable[[], Awaitable[None]]]:
    mock = await MockAnthropic().start()
    mock.fault = AnthropicFault(hang_s=5)
    return mock.base_url, mock.stop


async def hanging_gemini() -> tuple[str, Callable[[], Awaitable[None]]]:
    mock = await MockGemini().start()
    mock.fault = GeminiFault(hang_s=5)
    return mock.base_url, mock.stop


async def hanging_bedrock() -> tuple[str, Callable[[], Awaitable[None]]]:
    mock = await MockBedrock().start()
    mock.fault = BedrockFault(hang_s=5)
    return mock.base_url, mock.stop


PROVIDERS = {
    "openai": (openai, hanging_openai),
    "azure": (azure, hanging_openai),
    "anthropic": (anthropic, hanging_anthropic),
    "gemini": (gemini, hanging_gemini),
    "bedrock": (bedrock, hanging_bedrock),
}
REQUEST = pb.ChatRequest(model="m", messages=[pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text="hi")])])


@pytest.mark.parametrize("kind", PROVIDERS)
async def test_a_refused_connection_is_a_connection_error(kind: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    adapter = PROVIDERS[kind][0](f"http://127.0.0.1:{port}")
    try:
        for call in (adapter.complete(REQUEST), drain(adapter.stream(REQUEST))):
            with pytest.raises(UpstreamError) as caught:
                await call
            assert caught.value.outcome == pb.OUTCOME_CONNECTION_ERROR
    finally:
        await adapter.aclose()


@pytest.mark.parametrize("kind", PROVIDERS)
async def test_an_upstream_that_does_not_answer_is_a_timeout(kind: str) -> None:
    build, hanging = PROVIDERS[kind]
    root, stop = await hanging()
    adapter = build(root)
    try:
        for call in (adapter.complete(REQUEST), drain(adapter.stream(REQUEST))):
            with pytest.raises(UpstreamError) as caught:
                await call
            assert caught.value.outcome == pb.OUTCOME_TIMEOUT
    finally:
        await adapter.aclose()
        await stop()
