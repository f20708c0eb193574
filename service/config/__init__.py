"""Configuration: one YAML file, each rule checked once.

Routing (a deployment's region, context window, capabilities, prices, weight, priority and
budgets; model groups and their strategies; policies, scoring, rate limits, health) is the Rust
core's: it checks those keys and fills in their defaults. How to reach each provider, how to
listen and how to retry are the service's, checked here with pydantic. API keys never appear in
the file, only the names of the environment variables that hold them. Errors name the file,
the line and the key as written.
"""

from service.config.credentials import api_key, aws_credentials, secret_for
from service.config.document import parse_config
from service.config.environment import load_config, resolve_environment
from service.config.model import Config, ConfigError, Deployment, ModelGroup
from service.config.schema import (
    DEFAULT_LISTEN,
    AnthropicDeployment,
    AnyProvider,
    AzureOpenAIDeployment,
    BedrockDeployment,
    EchoDeployment,
    GeminiDeployment,
    OpenAICompatibleDeployment,
    PooledDeployment,
    RequestLimits,
    RetrySettings,
    ServerSettings,
    StateSettings,
    TelemetrySettings,
)

__all__ = [
    "DEFAULT_LISTEN",
    "AnthropicDeployment",
    "AnyProvider",
    "AzureOpenAIDeployment",
    "BedrockDeployment",
    "Config",
    "ConfigError",
    "Deployment",
    "EchoDeployment",
    "GeminiDeployment",
    "ModelGroup",
    "OpenAICompatibleDeployment",
    "PooledDeployment",
    "RequestLimits",
    "RetrySettings",
    "ServerSettings",
    "StateSettings",
    "TelemetrySettings",
    "api_key",
    "aws_credentials",
    "load_config",
    "parse_config",
    "resolve_environment",
    "secret_for",
]
