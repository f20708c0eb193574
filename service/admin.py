"""The switchboard.admin.v1.Admin servicer: the router's live figures per deployment, and the
config reload as SIGHUP does it, with what it changed. Served on `server.admin_listen` only, a
server of its own apart from the data plane (service/server.py)."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

import router_core
from service.admin_compare import Refused, by_deployments, by_policy, check_deployments, policy_to_compare
from service.admin_keys import DEFAULT_SPAN_S, KeyAdmin, SpendReader, check_new_key, key_budget, key_message
from service.api.switchboard.admin.v1 import admin_pb2 as pb
from service.api.switchboard.admin.v1 import admin_pb2_grpc as pb_grpc
from service.config import Config
from service.identity.keys import key_id as identity_key_id
from service.measured import STATUS_NAMES
from service.redaction import bounded, redact

log = logging.getLogger(__name__)

# CompareDeployments without `since`: this far back.
DEFAULT_COMPARE_SPAN_S = 3600.0

T = TypeVar("T")
ADMIN_SERVICE = pb.DESCRIPTOR.services_by_name["Admin"].full_name


@dataclass(frozen=True)
class Reloaded:
    """What a reload came to."""

    applied: bool
    error: str = ""
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    @classmethod
    def between(cls, old: Config, new: Config) -> Reloaded:
        before = {d.id: d for d in old.deployments()}
        after = {d.id: d for d in new.deployments()}
        return cls(
            applied=True,
            added=[id_ for id_ in after if id_ not in before],
            removed=[id_ for id_ in before if id_ not in after],
            changed=[id_ for id_, d in after.items() if id_ in before and before[id_] != d],
        )


class AdminServicer(pb_grpc.AdminServicer):
    def __init__(
        self,
        router: router_core.Router,
        reload: Callable[[str], Reloaded],
        config: Callable[[], Config],
        keys: KeyAdmin | None = None,
        spend: SpendReader | None = None,
    ) -> None:
        self._router = router
        self._reload = reload
        self._config = config
        self._keys = keys
        self._spend = spend

    async def GetStats(  # noqa: N802
        self, request: pb.GetStatsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetStatsResponse:
        measures = {m.deployment: m for m in self._router.measures()}
        return pb.GetStatsResponse(
            deployments=[_stats(s, measures.get(s.deployment)) for s in self._router.stats()],
            calls=[_calls(c) for c in self._router.call_measures()],
        )

    async def ReloadConfig(  # noqa: N802
        self, request: pb.ReloadConfigRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReloadConfigResponse:
        reloaded = self._reload("admin API")
        return pb.ReloadConfigResponse(
            applied=reloaded.applied,
            error=reloaded.error,
            added=reloaded.added,
            removed=reloaded.removed,
            changed=reloaded.changed,
        )

    async def Drain(self, request: pb.DrainRequest, context: grpc.aio.ServicerContext) -> pb.DrainResponse:  # noqa: N802
        await self._set_drained(request.deployment, True, context)
        return pb.DrainResponse()

    async def Undrain(  # noqa: N802
        self, request: pb.UndrainRequest, context: grpc.aio.ServicerContext
    ) -> pb.UndrainResponse:
        await self._set_drained(request.deployment, False, context)
        return pb.UndrainResponse()

    async def CreateKey(  # noqa: N802
        self, request: pb.CreateKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateKeyResponse:
        keys = await self._key_admin(context)
        refused = check_new_key(request, self._config().tenants)
        if refused is not None:
            await context.abort(*refused)
        expires_at = _seconds(request.expires_at) if request.HasField("expires_at") else None
        if expires_at is None and request.HasField("expires_at"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "expires_at: out of range")
        secret, record = await _from_store(
            context, keys.create(request.tenant, request.name, expires_at, key_budget(request))
        )
        log.info("API key %s made for tenant %s through the admin API", record.id, record.tenant)
        return pb.CreateKeyResponse(key=key_message(record, time.time()), secret=secret)

    async def RevokeKey(  # noqa: N802
        self, request: pb.RevokeKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.RevokeKeyResponse:
        keys = await self._key_admin(context)
        # The id, or a whole key pasted by mistake: never echoed, so a key cannot come back in an error.
        key_id = request.id if re.fullmatch(r"[0-9a-f]{12}", request.id) else identity_key_id(request.id)
        record = None if key_id is None else await _from_store(context, keys.revoke(key_id))
        if record is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no key with that id")
        assert record is not None
        log.info("API key %s (tenant %s) revoked through the admin API", record.id, record.tenant)
        return pb.RevokeKeyResponse(key=key_message(record, time.time()))

    async def ListKeys(  # noqa: N802
        self, request: pb.ListKeysRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListKeysResponse:
        keys = await self._key_admin(context)
        now = time.time()
        records = await _from_store(context, keys.list(request.tenant or None))
        return pb.ListKeysResponse(keys=[key_message(r, now) for r in records])

    async def GetSpend(  # noqa: N802
        self, request: pb.GetSpendRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetSpendResponse:
        spend = await self._spend_reader(context)
        since = await _since(context, request, DEFAULT_SPAN_S)
        rows = await _from_store(context, spend.read(since, request.tenant, request.key_id))
        return pb.GetSpendResponse(
            rows=[pb.SpendRow(**row._asdict()) for row in rows],
            total_cost_usd=sum(row.cost_usd for row in rows if not row.shadow),
            shadow_cost_usd=sum(row.cost_usd for row in rows if row.shadow),
        )

    async def CompareDeployments(  # noqa: N802
        self, request: pb.CompareDeploymentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.CompareDeploymentsResponse:
        spend = await self._spend_reader(context)
        if request.policy and request.deployments:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "name deployments or a policy, not both")
        since = await _since(context, request, DEFAULT_COMPARE_SPAN_S)
        try:
            if request.policy:
                policy = policy_to_compare(self._config().policies, request.policy)
                return await _from_store(context, by_policy(spend, policy, since))
            check_deployments(request.deployments, {stats.deployment for stats in self._router.stats()})
            return await _from_store(context, by_deployments(spend, request.deployments, since))
        except Refused as refused:
            await context.abort(grpc.StatusCode[refused.code], str(refused))
            raise AssertionError("context.abort returned") from refused

    async def _spend_reader(self, context: grpc.aio.ServicerContext) -> SpendReader:
        if self._spend is None:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, "this gateway keeps no ledger: ledger.enabled is off"
            )
        assert self._spend is not None
        return self._spend

    async def _key_admin(self, context: grpc.aio.ServicerContext) -> KeyAdmin:
        if self._keys is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "this gateway keeps no keys: auth.mode uses none")
        assert self._keys is not None
        return self._keys

    async def _set_drained(self, deployment: str, drained: bool, context: grpc.aio.ServicerContext) -> None:
        try:
            self._router.set_drained(deployment, drained)
        except router_core.UnknownDeploymentError:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no deployment {bounded(deployment, 128)!r}")
        log.info("deployment %s %s through the admin API", deployment, "drained" if drained else "undrained")


def _stats(s: router_core.DeploymentStats, measures: router_core.DeploymentMeasures | None) -> pb.DeploymentStats:
    stats = pb.DeploymentStats(
        deployment=s.deployment,
        requests=s.requests,
        failures=s.failures,
        in_flight=s.in_flight,
        input_tokens=s.input_tokens,
        output_tokens=s.output_tokens,
        circuit_state=s.state,
        unavailable_reason=s.unavailable_reason or "",
        unavailable_for_s=s.unavailable_for_s or 0.0,
        consecutive_failures=s.consecutive_failures,
        headroom=s.headroom,
        input_token_ratio=s.input_token_ratio,
    )
    for name in ("error_rate", "ewma_latency_ms", "tail_latency_ms", "ewma_ttft_ms", "tail_ttft_ms"):
        value = getattr(s, name)
        if value is not None:
            setattr(stats, name, value)
    if measures is not None:
        stats.outcomes.update(measures.outcomes)
        stats.cost_usd = measures.cost_usd
        for field_name, distribution in (("latency_ms", measures.latency), ("ttft_ms", measures.first_token)):
            if distribution.count:
                getattr(stats, field_name).CopyFrom(_percentiles_ms(distribution))
    return stats


def _calls(measures: router_core.CallMeasures) -> pb.CallStats:
    return pb.CallStats(
        model_group=measures.model_group,
        method=measures.method,
        statuses={STATUS_NAMES[code]: count for code, count in measures.statuses.items()},
        duration_ms=_percentiles_ms(measures.duration),
        retries=measures.retries,
        fallbacks=measures.fallbacks,
        hedges=measures.hedges,
    )


def _percentiles_ms(distribution: router_core.Distribution) -> pb.Percentiles:
    p50, p95, p99 = (distribution.quantile(q) or 0.0 for q in (0.5, 0.95, 0.99))
    return pb.Percentiles(p50=p50 * 1000, p95=p95 * 1000, p99=p99 * 1000)


def _seconds(stamp: Timestamp) -> float | None:
    """Seconds since the epoch; None for a timestamp outside what protobuf allows."""
    try:
        return stamp.ToNanoseconds() / 1e9
    except ValueError:
        return None


async def _since(
    context: grpc.aio.ServicerContext, request: pb.GetSpendRequest | pb.CompareDeploymentsRequest, span_s: float
) -> float:
    """The request's `since` in seconds since the epoch (unset: `span_s` ago)."""
    since = _seconds(request.since) if request.HasField("since") else time.time() - span_s
    if since is None:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "since: out of range")
    assert since is not None
    return since


async def _from_store(context: grpc.aio.ServicerContext, work: Awaitable[T]) -> T:
    """The store's answer; UNAVAILABLE, with its error redacted and bounded, when it has none
    (not gRPC's UNKNOWN with the raw text)."""
    try:
        return await work
    except Exception as error:  # sqlite3.Error, psycopg.Error, OSError: the store is away
        log.warning("the store did not answer an Admin API call: %s", error)
        await context.abort(
            grpc.StatusCode.UNAVAILABLE, f"the store is unavailable: {bounded(redact(str(error)), 300)}"
        )
        raise AssertionError("context.abort returned") from error
