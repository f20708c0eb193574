"""Provider adapters, one module per wire protocol, chosen by a deployment's `type`."""

from __future__ import annotations

from collections.abc import Mapping

from service.config import (
    AnthropicDeployment,
    AnyDeployment,
    AzureOpenAIDeployment,
    BedrockDeployment,
    Config,
    EchoDeployment,
    GeminiDeployment,
    OpenAICompatibleDeployment,
    api_key,
)
from service.providers.anthropic import AnthropicProvider
from service.providers.base import Provider
from service.providers.bedrock import BedrockProvider, credentials
from service.providers.echo import EchoProvider
from service.providers.gemini import GeminiProvider
from service.providers.openai_compat import OpenAICompatibleProvider

__all__ = ["Provider", "build_provider", "build_providers"]


def build_provider(deployment: AnyDeployment, environ: Mapping[str, str]) -> Provider:
    match deployment:
        case EchoDeployment():
            return EchoProvider()
        case OpenAICompatibleDeployment() | AzureOpenAIDeployment():
            return OpenAICompatibleProvider.for_deployment(deployment, api_key(deployment, environ))
        case AnthropicDeployment():
            return AnthropicProvider(deployment, api_key(deployment, environ))
        case GeminiDeployment():
            return GeminiProvider(deployment, api_key(deployment, environ))
        case BedrockDeployment():
            return BedrockProvider(deployment, credentials(deployment, environ))


def build_providers(config: Config, environ: Mapping[str, str]) -> dict[str, Provider]:
    """One provider (with its own connection pool) per deployment id."""
    return {dep.id: build_provider(dep, environ) for dep in config.deployments()}
