"""What a call runs on: the config, its providers and the engine over them, as one immutable
snapshot. A call takes the current runtime at its start and keeps it to its end; a reload
builds the next one and swaps it in at once, so no call ever sees half of a change.

The router is one for the process: `Router.reload` swaps its table in the same step, and the
state of every deployment whose id survives (health, budgets, latencies, calibration) carries
over. A provider whose settings and credentials did not change carries over too, with its
connection pool; one that was removed or changed is closed once the last call of the runtime
that used it has ended.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import router_core
from service import responses
from service.api.switchboard.v1 import gateway_pb2 as pb
from service.cluster.dollars import DollarPool
from service.config import AnyProvider, Config, ConfigError, secret_for
from service.engine import Engine
from service.identity import Authenticator, KeyHasher, KeyRing
from service.providers import Provider, build_provider
from service.redaction import SECRETS

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Runtime:
    config: Config
    engine: Engine
    models: pb.ListModelsResponse
    # What each provider was built from (settings and secret), to tell whether a reload changed it.
    recipes: dict[str, tuple[AnyProvider, tuple[str | None, ...]]]
    auth: Authenticator

    @property
    def providers(self) -> dict[str, Provider]:
        return self.engine.providers


def build_runtime(
    config: Config,
    router: router_core.Router,
    environ: Mapping[str, str],
    previous: Runtime | None = None,
    keys: KeyRing | None = None,
    pool: DollarPool | None = None,
) -> Runtime:
    """The runtime for `config`, reusing the providers of `previous` that did not change;
    `keys`: the store's, when the gateway keeps them; `pool`: the cluster's dollar budgets, when
    it shares them."""
    providers: dict[str, Provider] = {}
    recipes: dict[str, tuple[AnyProvider, tuple[str | None, ...]]] = {}
    for deployment in config.deployments():
        recipe = (deployment.provider, secret_for(deployment.provider, environ))
        recipes[deployment.id] = recipe
        SECRETS.add(recipe[1])
        if previous is not None and previous.recipes.get(deployment.id) == recipe:
            providers[deployment.id] = previous.providers[deployment.id]
        else:
            providers[deployment.id] = build_provider(deployment.provider, environ)
    auth = _authenticator(config, environ, keys, None if previous is None else previous.auth)
    return Runtime(config, Engine(config, router, providers, pool=pool), responses.model_list(config), recipes, auth)


def _authenticator(
    config: Config, environ: Mapping[str, str], keys: KeyRing | None, previous: Authenticator | None
) -> Authenticator:
    settings = config.auth
    groups = {group.name: [d.id for d in group.deployments] for group in config.model_groups}
    if "keys" not in settings.mode:
        return Authenticator(settings, config.tenants, groups=groups, previous=previous)
    if keys is None:
        raise ConfigError(
            f"auth.mode {settings.mode}: keys are read from the store opened at start; restart to use them"
        )
    secret = environ.get(settings.secret_env, "")
    SECRETS.add([secret])
    try:
        hasher = KeyHasher(secret.encode())
    except ValueError as error:
        raise ConfigError(f"auth.secret_env: {settings.secret_env} must hold the server secret: {error}") from error
    return Authenticator(settings, config.tenants, hasher, keys, groups, previous)


class Runtimes:
    """The current runtime, and those a reload retired whose calls are still running. A provider
    is closed once no runtime that still has calls, nor the current one, uses it."""

    def __init__(self, runtime: Runtime) -> None:
        self._current = runtime
        self._calls: dict[Runtime, int] = {runtime: 0}  # the current runtime and the retired ones still in use
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def current(self) -> Runtime:
        return self._current

    @contextmanager
    def hold(self, runtime: Runtime | None = None) -> Iterator[Runtime]:
        """The current runtime (or `runtime`, one still held by another block), kept for as long
        as the call inside this block runs."""
        runtime = runtime or self._current
        self._calls[runtime] += 1
        try:
            yield runtime
        finally:
            self._calls[runtime] -= 1
            if not self._calls[runtime] and runtime is not self._current:
                self._retire(runtime)

    def swap(self, runtime: Runtime) -> None:
        """Makes `runtime` the current one. The router must already route on its config: call
        this in the same step as `Router.reload`, with nothing awaited in between."""
        retired, self._current = self._current, runtime
        self._calls[runtime] = 0
        if not self._calls[retired]:
            self._retire(retired)

    def _retire(self, retired: Runtime) -> None:
        del self._calls[retired]
        in_use = {id(p) for live in self._calls for p in live.providers.values()}
        unused = [p for p in retired.providers.values() if id(p) not in in_use]
        if unused:
            task = asyncio.ensure_future(_close_all(unused))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        """Closes every provider still open, once the closings under way have ended."""
        if self._closing:
            await asyncio.wait(self._closing)
        providers = {id(p): p for live in self._calls for p in live.providers.values()}
        await _close_all(list(providers.values()))


async def _close_all(providers: list[Provider]) -> None:
    results = await asyncio.gather(*(provider.aclose() for provider in providers), return_exceptions=True)
    for result in results:
        if isinstance(result, Exception):
            log.warning("closing a provider failed: %s", result)
