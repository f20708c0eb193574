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
)
from service.providers.anthropic import AnthropicProvider
from service.providers.base import Provider
from service.providers.bedrock import BedrockProvider, credentials
from service.providers.echo import EchoProvider
from service.providers.gemini import GeminiProvider
from service.providers.openai_compat import OpenAICompatibleProvider

__all__ = ["Provider", "build_provider", "secret_for"]


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
            return BedrockProvider(settings, credentials(settings, environ))


def secret_for(settings: AnyProvider, environ: Mapping[str, str]) -> object:
    """What `build_provider` takes from the environment for these settings: a provider built
    from equal settings and an equal secret is the same provider."""
    match settings:
        case EchoDeployment():
            return None
        case BedrockDeployment():
            return tuple(
                environ.get(name)
                for name in (settings.access_key_env, settings.secret_key_env, settings.session_token_env)
            )
        case _:
            return api_key(settings, environ)
