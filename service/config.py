"""Configuration: YAML validated by pydantic, then checked against the environment.

The file names model groups and their deployments; API keys never appear in
it, only the names of the environment variables that hold them. Errors name
the offending key and its line in the file.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    model_validator,
)

import router_core

DEFAULT_LISTEN = "127.0.0.1:50051"
EMBEDDED_DEFAULT = "default_config.yaml"

Identifier = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@-]*$")]


class ConfigError(Exception):
    """The configuration cannot be used; the message says where and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Strict):
    """How the gRPC server listens and shuts down."""

    listen: str = DEFAULT_LISTEN
    grace_period_s: PositiveFloat = 10.0


class _DeploymentBase(_Strict):
    """What every deployment declares, whatever its provider."""

    id: Identifier
    model: str = Field(min_length=1)
    region: str = "unspecified"
    context_window: PositiveInt
    capabilities: list[str] = Field(default_factory=lambda: ["streaming"])
    input_price_per_mtok: NonNegativeFloat = 0.0
    output_price_per_mtok: NonNegativeFloat = 0.0
    weight: PositiveFloat = 1.0
    priority: NonNegativeInt = 0
    # This gateway's budget for the deployment, enforced by the router.
    rpm: PositiveInt | None = None
    tpm: PositiveInt | None = None
    timeout_s: PositiveFloat = 60.0
    # Streams: a first token later than this, or a pause between chunks longer than this, is a
    # timeout (before the first token the call falls over to the next candidate). Unset: timeout_s.
    first_token_timeout_s: PositiveFloat | None = None
    stall_timeout_s: PositiveFloat | None = None


class EchoDeployment(_DeploymentBase):
    """A built-in deterministic model that repeats the last user message (offline use, tests)."""

    type: Literal["echo"]


class _HttpDeployment(_DeploymentBase):
    """A deployment reached over HTTP with an API key."""

    api_key_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    # Leave the deployment out, instead of failing, when its key is not set.
    skip_without_key: bool = False
    max_connections: PositiveInt = 100


class OpenAICompatibleDeployment(_HttpDeployment):
    """Any server speaking the OpenAI chat completions protocol. The servers differ in small
    ways, which these settings absorb rather than copies of the adapter."""

    type: Literal["openai_compatible"]
    base_url: HttpUrl
    # The key goes in this header after this prefix ("Authorization: Bearer sk-…" for most).
    api_key_header: str = Field(default="Authorization", min_length=1)
    api_key_prefix: str = "Bearer "
    # Ask for usage in the last stream chunk (stream_options.include_usage); some servers reject it.
    stream_usage: bool = True
    # OpenAI's reasoning models take max_completion_tokens instead of max_tokens.
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    # Sent with every request, e.g. OpenRouter's HTTP-Referer and X-Title.
    extra_headers: dict[str, str] = Field(default_factory=dict)


class AzureOpenAIDeployment(_HttpDeployment):
    """Azure OpenAI: the model deployment is in the URL, the key in an `api-key` header."""

    type: Literal["azure_openai"]
    # https://<resource>.openai.azure.com
    endpoint: HttpUrl
    # The name of the deployment in the Azure resource (`model` names the model it serves).
    azure_deployment: str = Field(min_length=1)
    api_version: str = "2024-10-21"
    stream_usage: bool = True


class AnthropicDeployment(_HttpDeployment):
    """Anthropic's Messages API."""

    type: Literal["anthropic"]
    base_url: HttpUrl = HttpUrl("https://api.anthropic.com")
    anthropic_version: str = "2023-06-01"
    # The API requires max_tokens; this is sent when the request does not set one.
    default_max_tokens: PositiveInt = 4096


class GeminiDeployment(_HttpDeployment):
    """Google's Gemini API (Generative Language API), key in `x-goog-api-key`."""

    type: Literal["gemini"]
    base_url: HttpUrl = HttpUrl("https://generativelanguage.googleapis.com")
    api_version: str = "v1beta"


class BedrockDeployment(_DeploymentBase):
    """Amazon Bedrock's Converse API, signed with SigV4 from credentials in the environment."""

    type: Literal["bedrock"]
    # The AWS region the model runs in (`region` is the routing label, as for every deployment).
    aws_region: str = Field(min_length=1)
    # Default: https://bedrock-runtime.<aws_region>.amazonaws.com
    endpoint_url: HttpUrl | None = None
    access_key_env: str = "AWS_ACCESS_KEY_ID"
    secret_key_env: str = "AWS_SECRET_ACCESS_KEY"
    session_token_env: str = "AWS_SESSION_TOKEN"
    # Leave the deployment out, instead of failing, when its credentials are not set.
    skip_without_key: bool = False
    max_connections: PositiveInt = 100


AnyDeployment = (
    EchoDeployment
    | OpenAICompatibleDeployment
    | AzureOpenAIDeployment
    | AnthropicDeployment
    | GeminiDeployment
    | BedrockDeployment
)
Deployment = Annotated[AnyDeployment, Field(discriminator="type")]
_DEPLOYMENT_TYPES = frozenset({"echo", "openai_compatible", "azure_openai", "anthropic", "gemini", "bedrock"})


class ModelGroup(_Strict):
    """A name clients ask for, served by interchangeable deployments."""

    name: Identifier
    strategy: Literal["weighted", "priority"] = "weighted"
    deployments: list[Deployment] = Field(min_length=1)


RetryableOutcome = Literal[
    "rate_limited", "overloaded", "server_error", "timeout", "connection_error", "protocol_error"
]
_RETRIED_BY_DEFAULT: list[RetryableOutcome] = ["rate_limited", "overloaded", "server_error", "connection_error"]


class RetrySettings(_Strict):
    """Retrying a failed attempt on the same deployment before falling back to the next one."""

    # Extra attempts on the same deployment (0: fall back at once).
    same_deployment: NonNegativeInt = 0
    # The outcome classes retried in place; the others fall back (or fail) as before.
    # (Not `on`: YAML reads that key as true.)
    retry_on: list[RetryableOutcome] = Field(default_factory=lambda: list(_RETRIED_BY_DEFAULT))
    # Exponential backoff with full jitter: a random wait up to initial * 2^n, capped at max.
    # A Retry-After longer than backoff_max_s is not waited for: the call falls back instead.
    backoff_initial_s: PositiveFloat = 0.1
    backoff_max_s: PositiveFloat = 2.0
    # No attempt, retry or fallback, starts later than this after the call began (and never
    # past the client's deadline).
    total_budget_s: PositiveFloat | None = None
    # When every candidate is rate limited (a provider's Retry-After, or out of this gateway's
    # rpm/tpm budget) with a known wait, wait up to this long in all and route again, instead
    # of failing at once with RESOURCE_EXHAUSTED. 0: fail at once.
    wait_for_capacity_s: NonNegativeFloat = 0.0


class Config(_Strict):
    """The whole configuration file."""

    server: ServerSettings = ServerSettings()
    retries: RetrySettings = RetrySettings()
    default_group: str | None = None
    model_groups: list[ModelGroup] = Field(min_length=1)
    # Routing rules and the balanced strategy's weights belong to the Rust
    # core, which validates them (with key paths this module turns into lines).
    policies: list[dict[str, Any]] = Field(default_factory=list)
    scoring: dict[str, Any] | None = None
    rate_limits: dict[str, Any] | None = None
    health: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _names_are_consistent(self) -> Config:
        groups = [group.name for group in self.model_groups]
        if len(set(groups)) != len(groups):
            raise ValueError(f"model group names must be unique, got {groups}")
        ids = [dep.id for group in self.model_groups for dep in group.deployments]
        duplicated = sorted({dep for dep in ids if ids.count(dep) > 1})
        if duplicated:
            raise ValueError(f"deployment ids must be unique, repeated: {duplicated}")
        if "auto" in groups:
            raise ValueError('"auto" is reserved for the default group and cannot name a model group')
        if self.default_group is not None and self.default_group not in groups:
            raise ValueError(f"default_group {self.default_group!r} is not a model group; known: {groups}")
        return self

    def deployments(self) -> list[AnyDeployment]:
        return [dep for group in self.model_groups for dep in group.deployments]

    def routing_json(self) -> str:
        """The routing table handed to router_core: what routing needs, no secrets."""
        deployments = [
            {
                "id": dep.id,
                "region": dep.region,
                "context_window": dep.context_window,
                "capabilities": dep.capabilities,
                "input_price_per_mtok": dep.input_price_per_mtok,
                "output_price_per_mtok": dep.output_price_per_mtok,
                "weight": dep.weight,
                "priority": dep.priority,
                "rpm": dep.rpm,
                "tpm": dep.tpm,
            }
            for dep in self.deployments()
        ]
        groups = [
            {"name": g.name, "strategy": g.strategy, "deployments": [d.id for d in g.deployments]}
            for g in self.model_groups
        ]
        routing: dict[str, Any] = {
            "default_group": self.default_group,
            "deployments": deployments,
            "model_groups": groups,
            "policies": self.policies,
        }
        for section in ("scoring", "rate_limits", "health"):
            if getattr(self, section) is not None:
                routing[section] = getattr(self, section)
        return json.dumps(routing)


def api_key(deployment: _HttpDeployment, environ: Mapping[str, str]) -> str | None:
    return environ.get(deployment.api_key_env) if deployment.api_key_env else None


def _missing_credentials(dep: AnyDeployment, environ: Mapping[str, str]) -> str | None:
    if isinstance(dep, _HttpDeployment) and dep.api_key_env and not api_key(dep, environ):
        return dep.api_key_env
    if isinstance(dep, BedrockDeployment):
        return next((name for name in (dep.access_key_env, dep.secret_key_env) if not environ.get(name)), None)
    return None


def load_config(path: Path | None = None, environ: Mapping[str, str] = os.environ) -> Config:
    """Read, validate and resolve a config file, or the embedded default when `path` is None."""
    if path is None:
        source = "<embedded default>"
        text = resources.files("service").joinpath(EMBEDDED_DEFAULT).read_text()
    else:
        source = str(path)
        try:
            text = path.read_text()
        except OSError as error:
            raise ConfigError(f"cannot read config {source}: {error.strerror}") from error
    return resolve_environment(parse_config(text, source), environ)


def parse_config(text: str, source: str = "<config>") -> Config:
    try:
        document = yaml.safe_load(text)
        lines = _line_numbers(yaml.compose(text))
    except yaml.YAMLError as error:
        raise ConfigError(f"{source}: invalid YAML: {error}") from error
    if not isinstance(document, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    try:
        config = Config.model_validate(document)
    except ValidationError as error:
        problems = [_describe(issue["loc"], issue["msg"], lines, source) for issue in error.errors()]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems)) from None
    try:
        router_core.Router(config.routing_json())
    except router_core.ConfigError as error:
        key, _, message = str(error).partition(": ")
        raise ConfigError("invalid configuration:\n  " + _describe(_key_path(key), message, lines, source)) from None
    return config


def _key_path(key: str) -> KeyPath:
    """`policies[0].when.all[1]` → ("policies", 0, "when", "all", 1)."""
    return tuple(int(index) if index else name for name, index in re.findall(r"(\w+)|\[(\d+)\]", key))


def resolve_environment(config: Config, environ: Mapping[str, str]) -> Config:
    """Check that every deployment's API key is set, leaving out those that may be skipped."""
    groups = []
    for group in config.model_groups:
        kept = []
        for dep in group.deployments:
            missing = _missing_credentials(dep, environ)
            if missing:
                if getattr(dep, "skip_without_key", False):
                    continue
                raise ConfigError(
                    f"deployment {dep.id!r}: environment variable {missing} is not set "
                    "(set it, or mark the deployment skip_without_key: true)"
                )
            kept.append(dep)
        if kept:
            groups.append(group.model_copy(update={"deployments": kept}))
    if config.default_group and config.default_group not in {g.name for g in groups}:
        raise ConfigError(f"default_group {config.default_group!r} has no deployment with its API key set")
    if not groups:
        raise ConfigError("no deployment is usable: every one is missing its API key")
    kept_groups = {g.name for g in groups}
    kept_ids = {d.id for g in groups for d in g.deployments}
    policies = [p for p in (_without_skipped(p, kept_groups, kept_ids) for p in config.policies) if p]
    return config.model_copy(update={"model_groups": groups, "policies": policies})


def _without_skipped(policy: dict[str, Any], groups: set[str], ids: set[str]) -> dict[str, Any] | None:
    """A policy minus the skipped groups and deployments it names; None if its own target is gone."""

    def prune(target: Any) -> Any:
        if not isinstance(target, dict):
            return target
        pruned = {
            **target,
            "groups": [g for g in target.get("groups", []) if g in groups],
            "deployments": [d for d in target.get("deployments", []) if d in ids],
        }
        return pruned if pruned["groups"] or pruned["deployments"] else None

    route_to = prune(policy.get("route_to"))
    if route_to is None:
        return None
    fallback = [t for t in (prune(t) for t in policy.get("fallback", [])) if t is not None]
    return {**policy, "route_to": route_to, "fallback": fallback}


KeyPath = tuple[str | int, ...]


def _line_numbers(node: yaml.Node | None, path: KeyPath = ()) -> dict[KeyPath, int]:
    """Map each key path of a YAML document to its 1-based line."""
    if node is None:
        return {}
    lines = {path: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            lines[(*path, key.value)] = key.start_mark.line + 1
            lines.update({p: n for p, n in _line_numbers(value, (*path, key.value)).items() if p not in lines})
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines.update(_line_numbers(item, (*path, index)))
    return lines


def _describe(loc: tuple[str | int, ...], message: str, lines: dict[KeyPath, int], source: str) -> str:
    found: KeyPath = ()
    named: KeyPath = ()
    for part in loc:
        if (*found, part) in lines:
            found = (*found, part)
        elif part in _DEPLOYMENT_TYPES:
            # The discriminated union puts its tag in the location; it is not a key of the file.
            continue
        named = (*named, part)
    dotted = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in named).lstrip(".") or "(top level)"
    line = lines.get(found)
    where = f"{source}:{line}" if line else source
    return f"{where}: {dotted}: {message}"
