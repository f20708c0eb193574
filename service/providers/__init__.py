"""Provider adapters, one module per wire protocol, chosen by a deployment's `type`."""

from __future__ import annotations

from collections.abc import Mapping

from service.config import (
    AnthropicDeployment,
    AnyProvider,
    AzureOpenAIDeployment,
    BedrockDeployment,
    EchoDeployment,
    GeminiDeployment,
    OpenAICompatibleDeployment,
    api_key,
    aws_credentials,
)
from service.providers.anthropic import AnthropicProvider
from service.providers.base import Provider
from service.providers.bedrock import BedrockProvider
from service.providers.echo import EchoProvider
from service.providers.gemini import GeminiProvider
from service.providers.openai_compat import OpenAICompatibleProvider

__all__ = ["Provider", "build_provider"]


def build_provider(settings: AnyProvider, environ: Mapping[str, str]) -> Provider:
    match settings:
        case EchoDeployment():
            return EchoProvider()
        case OpenAICompatibleDeployment() | AzureOpenAIDeployment():
            return OpenAICompatibleProvider.for_deployment(settings, api_key(settings, environ))
        case AnthropicDeployment():
            return AnthropicProvider(settings, api_key(settings, environ))
        case GeminiDeployment():
            return GeminiProvider(settings, api_key(settings, environ))
        case BedrockDeployment():
            return BedrockProvider(settings, aws_credentials(settings, environ))
