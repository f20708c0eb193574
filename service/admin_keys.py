"""The Admin API's side of the store and of its own credential: making, revoking and listing API
keys, reading the ledger's spend, and the check every admin call passes first."""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
from collections.abc import Awaitable, Callable, Mapping

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from service.api.switchboard.admin.v1 import admin_pb2 as pb
from service.comparison import Served, served_calls
from service.config import ConfigError
from service.config.schema import TenantSettings
from service.identity import KeyHasher, KeyRecord, KeyRing
from service.identity.keys import bearer
from service.ledger import Ledger
from service.redaction import SECRETS, bounded
from service.store import StoreThread
from service.store.records import Spend

log = logging.getLogger(__name__)

MAX_NAME_CHARS = 128
# The Admin API's credential: long enough not to be guessed, short enough for one header.
MIN_CREDENTIAL_CHARS = 32
MAX_CREDENTIAL_CHARS = 200
BUDGET_FIELDS = ("daily_usd", "monthly_usd", "total_usd")
# GetSpend without `since`: this far back.
DEFAULT_SPAN_S = 30 * 86400
# What CompareDeployments reads of each deployment at most: its latest calls.
MAX_COMPARED_CALLS = 50_000


class AdminCredential(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc is untyped
    """The Admin API's Bearer credential, checked (in constant time) before any admin method
    runs; reflection stays open. No credential configured: none is asked for."""

    def __init__(self, credential: str | None) -> None:
        self._digest = None if not credential else hashlib.sha256(credential.encode()).digest()
        self._refusal = grpc.unary_unary_rpc_method_handler(_refuse)

    @classmethod
    def from_environ(cls, env: str | None, environ: Mapping[str, str]) -> AdminCredential:
        """The credential the variable `env` holds (none asked for when `env` is None); ConfigError
        unless it holds MIN_CREDENTIAL_CHARS to MAX_CREDENTIAL_CHARS characters. It is redacted
        from every log line from now on."""
        if env is None:
            return cls(None)
        credential = environ.get(env) or ""
        if not MIN_CREDENTIAL_CHARS <= len(credential) <= MAX_CREDENTIAL_CHARS:
            raise ConfigError(
                f"auth.admin_key_env: {env} must hold {MIN_CREDENTIAL_CHARS} to {MAX_CREDENTIAL_CHARS} characters"
            )
        SECRETS.add([credential])
        return cls(credential)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if self._digest is None or details.method.startswith("/grpc.reflection.") or self._holds(details):
            return await continuation(details)
        return self._refusal

    def _holds(self, details: grpc.HandlerCallDetails) -> bool:
        presented = bearer(details.invocation_metadata) or ""
        assert self._digest is not None
        return hmac.compare_digest(hashlib.sha256(presented.encode()).digest(), self._digest)


async def _refuse(request: bytes, context: grpc.aio.ServicerContext) -> None:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, "the Admin API needs its credential (auth.admin_key_env)")


class KeyAdmin:
    """Keys in the store, for a gateway whose auth mode uses them."""

    def __init__(self, store: StoreThread, keys: KeyRing, hasher: Callable[[], KeyHasher]) -> None:
        self._store = store
        self._keys = keys
        self._hasher = hasher

    async def create(
        self, tenant: str, name: str, expires_at: float | None, budget: tuple[float | None, float | None, float | None]
    ) -> tuple[str, KeyRecord]:
        secret, record = self._hasher().new_key(tenant, name, expires_at, budget)
        await self._store.call(self._store.store.add_key, record)
        await self._refresh()  # works here at once; on the other workers within the refresh interval
        return secret, record

    async def revoke(self, key_id: str) -> KeyRecord | None:
        record = await self._store.call(self._store.store.revoke_key, key_id)
        await self._refresh()
        return record

    async def _refresh(self) -> None:
        """Best effort: the write is done; the key ring reads it again on its own otherwise."""
        try:
            await self._keys.refresh()
        except Exception as error:  # the store answered the write; a read failing now changes nothing
            log.warning("cannot read the keys again after a change (%s); they are read again shortly", error)

    async def list(self, tenant: str | None) -> list[KeyRecord]:
        return await self._store.call(self._store.store.keys, tenant)


class SpendReader:
    """The ledger's sums, this process's latest records written first."""

    def __init__(self, store: StoreThread, ledger: Ledger) -> None:
        self._store = store
        self._ledger = ledger

    async def read(self, since: float, tenant: str, key_id: str) -> list[Spend]:
        await self._ledger.flush()
        return await self._store.call(self._store.store.spend, since, tenant, key_id)

    async def served(self, deployments: list[str], since: float) -> list[list[Served]]:
        """Each deployment's latest calls since `since` (`MAX_COMPARED_CALLS` at most)."""
        await self._ledger.flush()
        store = self._store.store
        return [
            served_calls(await self._store.call(store.served, deployment, since, MAX_COMPARED_CALLS))
            for deployment in deployments
        ]

    async def variants_served(
        self, policy: str, experiment: str, variants: list[str], since: float
    ) -> list[list[Served]]:
        """The latest calls `policy` routed to each variant of `experiment` since `since`."""
        await self._ledger.flush()
        store = self._store.store
        return [
            served_calls(
                await self._store.call(store.variant_served, policy, experiment, variant, since, MAX_COMPARED_CALLS)
            )
            for variant in variants
        ]

    async def shadowed(self, policy: str, deployment: str, since: float) -> tuple[list[Served], list[Served]]:
        """The latest shadow calls `policy` sent to `deployment` since `since`, and the calls
        they copied, in the same order."""
        await self._ledger.flush()
        store = self._store.store
        pairs = await self._store.call(store.shadow_pairs, policy, deployment, since, MAX_COMPARED_CALLS)
        return served_calls([copied for copied, _ in pairs]), served_calls([shadow for _, shadow in pairs])


def check_new_key(
    request: pb.CreateKeyRequest, tenants: Mapping[str, TenantSettings]
) -> tuple[grpc.StatusCode, str] | None:
    """Why a CreateKey request cannot be served, if it cannot."""
    if request.tenant not in tenants:
        known = ", ".join(sorted(tenants)) or "none"
        return grpc.StatusCode.NOT_FOUND, f"no tenant {bounded(request.tenant, 128)!r} (known: {known})"
    if len(request.name) > MAX_NAME_CHARS:
        return grpc.StatusCode.INVALID_ARGUMENT, f"name: at most {MAX_NAME_CHARS} characters"
    for field in BUDGET_FIELDS:
        if request.HasField(field) and not 0 < getattr(request, field) < math.inf:
            return grpc.StatusCode.INVALID_ARGUMENT, f"{field}: must be more than 0"
    return None


def key_budget(request: pb.CreateKeyRequest) -> tuple[float | None, float | None, float | None]:
    daily, monthly, total = (getattr(request, f) if request.HasField(f) else None for f in BUDGET_FIELDS)
    return daily, monthly, total


def key_message(record: KeyRecord, now: float) -> pb.Key:
    key = pb.Key(id=record.id, tenant=record.tenant, name=record.name, state=record.state(now))
    key.created_at.CopyFrom(_timestamp(record.created_at))
    if record.expires_at is not None:
        key.expires_at.CopyFrom(_timestamp(record.expires_at))
    if record.revoked_at is not None:
        key.revoked_at.CopyFrom(_timestamp(record.revoked_at))
    for field in BUDGET_FIELDS:
        if getattr(record, field) is not None:
            setattr(key, field, getattr(record, field))
    return key


def _timestamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp
