"""The config's rules for callers: tenants' rate limits handed to the core (as `rate_limits.tenants`
gives them), tenants naming only groups and regions that exist, and auth modes with what they
need. Each problem is a key path and a message, for the reader to place in the file."""

from __future__ import annotations

import json
from typing import Any

from service.config.schema import ServiceSections

Problem = tuple[tuple[str | int, ...], str]


def add_tenant_limits(sections: ServiceSections, routing: dict[str, Any]) -> list[Problem]:
    """Puts each tenant's rpm and tpm into the core's `rate_limits.tenants`, and its priority
    (other than `normal`) into `rate_limits.tenant_priorities`."""
    problems: list[Problem] = []
    limited: dict[str, object] = {
        name: {key: value for key, value in (("rpm", t.rpm), ("tpm", t.tpm)) if value is not None}
        for name, t in sections.tenants.items()
        if t.rpm is not None or t.tpm is not None
    }
    prioritised: dict[str, object] = {
        name: t.priority for name, t in sections.tenants.items() if t.priority != "normal"
    }
    for section, wanted, what in (("tenants", limited, "rpm/tpm"), ("tenant_priorities", prioritised, "priority")):
        if not wanted:
            continue
        rate_limits = routing.setdefault("rate_limits", {})
        given = rate_limits.setdefault(section, {}) if isinstance(rate_limits, dict) else None
        if not isinstance(given, dict):
            continue  # the core names that mistake
        for name, value in wanted.items():
            if name in given:
                problems.append(
                    (("tenants", name), f"its {what} is also given in rate_limits.{section}.{name}: give it once")
                )
            else:
                given[name] = value
    return problems


def check_access(sections: ServiceSections, described_text: str) -> list[Problem]:
    """Tenants' groups and regions exist; each auth mode has what it needs."""
    compiled = json.loads(described_text)["config"]
    groups = {group["name"] for group in compiled["model_groups"]}
    regions = {deployment["region"] for deployment in compiled["deployments"]}
    problems: list[Problem] = []
    for name, tenant in sections.tenants.items():
        for index, group in enumerate(tenant.model_groups or ()):
            if group not in groups:
                problems.append((("tenants", name, "model_groups", index), f"no model group {group!r}"))
        for index, region in enumerate(tenant.regions or ()):
            if region not in regions:
                problems.append((("tenants", name, "regions", index), f"no deployment is in region {region!r}"))
    auth, server = sections.auth, sections.server
    if "mtls" in auth.mode and (server.tls is None or server.tls.client_ca_file is None):
        problems.append((("auth", "mode"), f"{auth.mode} needs server.tls with a client_ca_file"))
    if auth.mode != "none" and server.admin_listen is not None and auth.admin_key_env is None:
        problems.append((("auth", "admin_key_env"), "required with server.admin_listen when auth.mode is not none"))
    if auth.mode != "none" and not sections.tenants:
        problems.append((("tenants",), f"auth.mode {auth.mode} needs at least one tenant"))
    return problems
