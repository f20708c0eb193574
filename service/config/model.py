"""The config as the service uses it: every deployment with how to reach it and what routing
knows of it, the model groups, the policies, and the document the Rust core routes on."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import router_core
from service.config.schema import (
    AnyProvider,
    AuthSettings,
    LedgerSettings,
    RetrySettings,
    ServerSettings,
    ServiceSections,
    StateSettings,
    StoreSettings,
    TelemetrySettings,
    TenantSettings,
)


class ConfigError(Exception):
    """The configuration cannot be used; the message says where and why."""


@dataclass(frozen=True, slots=True)
class Deployment:
    """One deployment: how to reach its provider (checked by the service) and its routing
    values, as the core checked and defaulted them (`router_core.describe_config`)."""

    provider: AnyProvider
    id: str
    region: str
    context_window: int
    capabilities: tuple[str, ...]
    input_price_per_mtok: float
    output_price_per_mtok: float
    weight: float
    priority: int
    rpm: int | None
    tpm: int | None

    @classmethod
    def of(cls, provider: AnyProvider, routing: dict[str, Any]) -> Deployment:
        return cls(provider, **{**routing, "capabilities": tuple(routing["capabilities"])})

    @property
    def type(self) -> str:
        return self.provider.type

    @property
    def model(self) -> str:
        return self.provider.model

    @property
    def timeout_s(self) -> float:
        return self.provider.timeout_s

    @property
    def first_token_timeout_s(self) -> float | None:
        return self.provider.first_token_timeout_s

    @property
    def stall_timeout_s(self) -> float | None:
        return self.provider.stall_timeout_s


@dataclass(frozen=True, slots=True)
class ModelGroup:
    name: str
    strategy: str
    deployments: tuple[Deployment, ...]


@dataclass(frozen=True)
class Config:
    """A checked config: the service's own sections (`server`, `retries`, `state`, `telemetry`,
    `auth`, `tenants`, `ledger`), and `routing_document`, the JSON the core routes on, with every
    deployment the file defines; `left_out` names those left out of routing (their credentials
    are missing), and `left_out_with` what went with them (groups, policies, fallback tiers)."""

    sections: ServiceSections
    routing_document: str
    providers: dict[str, AnyProvider]
    source: str = "<config>"
    left_out: tuple[str, ...] = ()
    left_out_with: dict[str, list[Any]] = field(default_factory=dict)
    default_group: str | None = None
    routed: tuple[Deployment, ...] = ()
    model_groups: tuple[ModelGroup, ...] = ()
    policies: tuple[dict[str, Any], ...] = ()

    @classmethod
    def compiled(
        cls,
        sections: ServiceSections,
        routing_document: str,
        providers: dict[str, AnyProvider],
        source: str,
        left_out: tuple[str, ...] = (),
        described_text: str | None = None,
    ) -> Config:
        """The config with the core's view of it (`described_text`, when the caller already asked
        `router_core.describe_config` for it): raises router_core.ConfigError when the routing
        document is invalid, or leaving `left_out` out empties the default group."""
        if described_text is None:
            described_text = router_core.describe_config(routing_document, without=left_out)
        described = json.loads(described_text)
        compiled = described["config"]
        deployments = {d["id"]: Deployment.of(providers[d["id"]], d) for d in compiled["deployments"]}
        groups = tuple(
            ModelGroup(g["name"], g["strategy"], tuple(deployments[d] for d in g["deployments"]))
            for g in compiled["model_groups"]
        )
        return cls(
            sections,
            routing_document,
            providers,
            source,
            left_out,
            described["left_out"],
            compiled["default_group"],
            tuple(deployments.values()),
            groups,
            tuple(compiled["policies"]),
        )

    @property
    def server(self) -> ServerSettings:
        return self.sections.server

    @property
    def retries(self) -> RetrySettings:
        return self.sections.retries

    @property
    def state(self) -> StateSettings:
        return self.sections.state

    @property
    def telemetry(self) -> TelemetrySettings:
        return self.sections.telemetry

    @property
    def auth(self) -> AuthSettings:
        return self.sections.auth

    @property
    def tenants(self) -> dict[str, TenantSettings]:
        return self.sections.tenants

    @property
    def store(self) -> StoreSettings:
        return self.sections.store

    @property
    def ledger(self) -> LedgerSettings:
        return self.sections.ledger

    def deployments(self) -> list[Deployment]:
        """The deployments routing uses, in the order the file defines them."""
        return list(self.routed)

    def new_router(self, *, manual_clock: bool = False, shared_state: Path | None = None) -> router_core.Router:
        return router_core.Router(
            self.routing_document, manual_clock=manual_clock, without=self.left_out, shared_state=shared_state
        )

    def leaving_out(self, left_out: tuple[str, ...]) -> Config:
        return Config.compiled(self.sections, self.routing_document, self.providers, self.source, left_out)
