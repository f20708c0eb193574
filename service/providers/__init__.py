"""Provider adapters, one module per wire protocol, chosen by a deployment's `type`."""

from __future__ import annotations

from collections.abc import Mapping

from service.config import (
    AnthropicDeployment,
    AzureOpenAIDeployment,
    BedrockDeployment,
    Config,
    Deployment,
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


def build_provider(deployment: Deployment, environ: Mapping[str, str]) -> Provider:
    settings = deployment.provider
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
            return BedrockProvider(settings, credentials(settings, environ))


def build_providers(config: Config, environ: Mapping[str, str]) -> dict[str, Provider]:
    """One provider (with its own connection pool) per deployment id."""
    return {dep.id: build_provider(dep, environ) for dep in config.deployments()}
