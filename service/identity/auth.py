"""Who is calling (`auth.mode`), and what they may use. Every Gateway call is authenticated before
its request is read: by its `authorization: Bearer <key>`, its client certificate's common name,
or both, each naming a tenant of the config. A peer address whose credentials keep failing has
its failures refused as RESOURCE_EXHAUSTED for the rest of the minute; a good one still passes.
Keys never appear in an error or a log line: only a key's id does, and only once the key was
shown to be its holder's."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import grpc

from service.api.switchboard.v1 import gateway_pb2 as pb
from service.config.schema import AuthSettings, TenantSettings
from service.identity.errors import PermissionDenied, TooManyFailures, Unauthenticated
from service.identity.keys import KeyHasher, KeyRecord, bearer, key_id
from service.peers import peer_address
from service.redaction import bounded
from service.store import Store, StoreThread

log = logging.getLogger(__name__)

# Peer addresses whose failures are remembered; the oldest is forgotten past this.
MAX_TRACKED_PEERS = 10_000
# Keys checked lately are known again without their HMAC while their record is unchanged; past
# this many, the memory starts afresh.
MAX_VERIFIED_KEYS = 4096
# A budget's owner as the router names it: (key, daily, monthly, total USD; None: unbounded).
Owner = tuple[str, float | None, float | None, float | None]
_WINDOW_S = 60.0


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a call is from: a tenant of the config (and the key it used), or no one in particular
    when auth is off."""

    tenant: str = ""
    key_id: str = ""
    settings: TenantSettings | None = None
    # The key's own budget, beside its tenant's (daily, monthly, total USD; None: unbounded).
    key_budget: tuple[float | None, float | None, float | None] = (None, None, None)
    # The deployments of the groups it may use (None: every one): a policy's targets and
    # fallbacks outside them are never tried for it.
    deployments: frozenset[str] | None = None

    def allows(self, deployment: str) -> bool:
        return self.deployments is None or deployment in self.deployments

    # The budgets a call of this caller spends from, as the router names them (made once).
    budget_owners: tuple[Owner, ...] = field(init=False, default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        owners: list[Owner] = []
        budget = None if self.settings is None or self.settings.budget is None else self.settings.budget.bounds()
        if budget is not None and any(bound is not None for bound in budget):
            owners.append((f"tenant/{self.tenant}", *budget))
        if self.key_id and any(bound is not None for bound in self.key_budget):
            owners.append((f"key/{self.key_id}", *self.key_budget))
        object.__setattr__(self, "budget_owners", tuple(owners))

    @property
    def groups(self) -> list[str] | None:
        """The model groups it may use (None: every one)."""
        return None if self.settings is None else self.settings.model_groups

    def allow_group(self, group: str) -> None:
        allowed = self.groups
        if allowed is not None and group not in allowed:
            group = bounded(group, 128)
            raise PermissionDenied(
                f"tenant {self.tenant!r} may not use model group {group!r} (allowed: {', '.join(allowed)})"
            )

    def visible_models(self, models: pb.ListModelsResponse) -> pb.ListModelsResponse:
        """The groups it may use, of all of them: others' are not its to see."""
        allowed = self.groups
        if allowed is None:
            return models
        visible = pb.ListModelsResponse(model_groups=[g for g in models.model_groups if g.name in allowed])
        if models.default_group in allowed:
            visible.default_group = models.default_group
        return visible

    def known_groups(self, known: Sequence[str]) -> list[str]:
        """Of the groups an error may list, those it may use."""
        allowed = self.groups
        return list(known) if allowed is None else [name for name in known if name in allowed]

    def regions(self, requested: Sequence[str]) -> list[str]:
        """The regions a call may use: the request's, within the tenant's."""
        allowed = None if self.settings is None else self.settings.regions
        if allowed is None:
            return list(requested)
        if not requested:
            return list(allowed)
        kept = [region for region in requested if region in allowed]
        if not kept:
            asked = ", ".join(bounded(r, 64) for r in requested[:8])
            raise PermissionDenied(
                f"tenant {self.tenant!r} may not use regions {asked} (allowed: {', '.join(allowed)})"
            )
        return kept

    def metadata(self, requested: Mapping[str, str]) -> dict[str, str]:
        """The request's metadata with the tenant's over it: a client cannot claim another's."""
        if self.settings is None or not self.settings.metadata:
            return dict(requested)
        return {**requested, **self.settings.metadata}


ANONYMOUS = Caller()


class KeyRing:
    """The store's keys in memory, read again whenever they change (looked at every
    `interval_s`): a revoked key stops working on every process within that."""

    def __init__(self, store: StoreThread, interval_s: float) -> None:
        self._store = store
        self._interval_s = interval_s
        self._records: dict[str, KeyRecord] = {}
        self._version: tuple[object, ...] | None = None

    def get(self, key_id: str) -> KeyRecord | None:
        return self._records.get(key_id)

    async def refresh(self) -> None:
        store: Store = self._store.store
        version = await self._store.call(store.keys_version)
        if version != self._version:
            records = await self._store.call(store.keys)
            self._records = {record.id: record for record in records}
            self._version = version

    async def keep_fresh(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                # Bounded: a store that hangs is a store that fails, and says so.
                await asyncio.wait_for(self.refresh(), timeout=max(5.0, 10 * self._interval_s))
            except Exception as error:  # a locked, vanished or hung database: keep the keys last read
                if not failing:
                    log.warning("cannot read the keys from the store (%s); using those last read", error)
                failing = True
            else:
                failing = False


class _Failures:
    """Failed attempts per peer address in the current minute, for so many peers at most."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._seen: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def refused_for(self, peer: str, now: float) -> float | None:
        """Seconds until `peer` may try again, or None when it may now."""
        started, count = self._seen.get(peer, (now, 0))
        if now - started >= _WINDOW_S:
            self._seen.pop(peer, None)
            return None
        return started + _WINDOW_S - now if count >= self.per_minute else None

    def add(self, peer: str, now: float) -> None:
        started, count = self._seen.pop(peer, (now, 0))
        if now - started >= _WINDOW_S:
            started, count = now, 0
        self._seen[peer] = (started, count + 1)
        while len(self._seen) > MAX_TRACKED_PEERS:
            self._seen.popitem(last=False)


class Authenticator:
    def __init__(
        self,
        settings: AuthSettings,
        tenants: Mapping[str, TenantSettings],
        hasher: KeyHasher | None = None,
        keys: KeyRing | None = None,
        groups: Mapping[str, Sequence[str]] | None = None,
        previous: Authenticator | None = None,
    ) -> None:
        """`groups`: each model group's deployment ids, for tenants limited to some groups;
        `previous`: the one this replaces on a reload, whose count of failures goes on (a reload
        does not give an address that kept failing a fresh minute)."""
        if "keys" in settings.mode and (hasher is None or keys is None):
            raise ValueError(f"auth.mode {settings.mode} needs the server secret and the store's keys")
        self._mode = settings.mode
        self._tenants = tenants
        self._hasher = hasher
        self._keys = keys
        self._failures = _Failures(settings.max_failures_per_minute)
        if previous is not None and previous._failures.per_minute == settings.max_failures_per_minute:
            self._failures = previous._failures
        # Per presented key that checked out: its record as it was then, and the caller it made.
        self._verified: dict[str, tuple[KeyRecord, Caller]] = {}
        self._deployments = {
            name: frozenset(d for group in tenant.model_groups for d in (groups or {}).get(group, ()))
            for name, tenant in tenants.items()
            if tenant.model_groups is not None
        }

    @property
    def hasher(self) -> KeyHasher | None:
        return self._hasher

    def caller(self, context: grpc.aio.ServicerContext) -> Caller:
        """The call's caller; Unauthenticated, PermissionDenied or TooManyFailures otherwise."""
        if self._mode == "none":
            return ANONYMOUS
        peer, now = peer_address(context.peer()), time.monotonic()
        try:
            return self._identify(context)
        except (Unauthenticated, PermissionDenied):
            # A good credential always passes (many clients may share one address behind a
            # proxy); one that fails again and again from an address is refused unread.
            wait = self._failures.refused_for(peer, now)
            if wait is not None:
                raise TooManyFailures(wait) from None
            self._failures.add(peer, now)
            raise

    def _identify(self, context: grpc.aio.ServicerContext) -> Caller:
        if self._mode == "keys":
            return self._by_key_alone(context)
        by_key = self._by_key(context) if "keys" in self._mode else None
        by_certificate = _certificate_name(context) if "mtls" in self._mode else None
        if by_key is not None and by_certificate is not None and by_key.tenant != by_certificate:
            raise PermissionDenied(
                f"the API key {by_key.id} is tenant {by_key.tenant!r}'s, the client certificate names "
                f"{bounded(by_certificate, 128)!r}"
            )
        tenant = by_key.tenant if by_key is not None else by_certificate
        assert tenant is not None
        return self._caller(tenant, by_key)

    def _by_key_alone(self, context: grpc.aio.ServicerContext) -> Caller:
        """`_identify` in `keys` mode: a key checked lately, whose record has not changed since
        (the key ring replaces a record that changes), is known again without its HMAC."""
        assert self._keys is not None
        presented = _presented(context)
        known = self._verified.get(presented)
        if known is not None:
            record, caller = known
            found_id = key_id(presented)
            if found_id is not None and self._keys.get(found_id) is record:
                _check_state(record)
                return caller
        record = self._by_key(context, presented)
        caller = self._caller(record.tenant, record)
        if len(self._verified) >= MAX_VERIFIED_KEYS:
            self._verified.clear()
        self._verified[presented] = (record, caller)
        return caller

    def _caller(self, tenant: str, record: KeyRecord | None) -> Caller:
        settings = self._tenants.get(tenant)
        if settings is None:
            raise PermissionDenied(f"{bounded(tenant, 128)!r} is no tenant of this gateway")
        deployments = self._deployments.get(tenant)
        if record is None:
            return Caller(tenant, "", settings, deployments=deployments)
        budget = (record.daily_usd, record.monthly_usd, record.total_usd)
        return Caller(tenant, record.id, settings, budget, deployments)

    def _by_key(self, context: grpc.aio.ServicerContext, presented: str | None = None) -> KeyRecord:
        assert self._hasher is not None and self._keys is not None
        presented = presented or _presented(context)
        found_id = key_id(presented)
        record = None if found_id is None else self._keys.get(found_id)
        if not self._hasher.matches(presented, record) or record is None:
            raise Unauthenticated("invalid API key")
        _check_state(record)
        return record


def _presented(context: grpc.aio.ServicerContext) -> str:
    presented = bearer(context.invocation_metadata())
    if presented is None:
        raise Unauthenticated("no API key: send `authorization: Bearer <key>`")
    return presented


def _check_state(record: KeyRecord) -> None:
    state = record.state(time.time())
    if state != "active":
        raise Unauthenticated(f"API key {record.id} is {state}")


def _certificate_name(context: grpc.aio.ServicerContext) -> str:
    names = context.auth_context().get("x509_common_name") or []
    if not names:
        raise Unauthenticated("no client certificate")
    name = names[0]
    return name.decode(errors="replace") if isinstance(name, bytes) else str(name)
