"""Wiring (Gateway) apart from lifecycle (serve): servicers, health, reflection, reloads, shutdown."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
import uvloop
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from service import threads
from service.admin import ADMIN_SERVICE, AdminServicer, Reloaded
from service.admin_keys import AdminCredential, KeyAdmin, SpendReader
from service.api.switchboard.admin.v1 import admin_pb2_grpc
from service.api.switchboard.v1 import gateway_pb2 as pb
from service.budgets import seed_budgets
from service.cluster import ClusterLink
from service.cluster.dollars import DollarPool
from service.config import Config, ConfigError, load_config
from service.engine import Engine
from service.gateway import GatewayServicer, add_to_server
from service.identity import KeyHasher, KeyRing
from service.ledger import Ledger
from service.metrics import Metrics
from service.runtime import Runtimes, build_runtime
from service.shadows import Shadows
from service.store import StoreThread, open_store
from service.telemetry import Tracing
from service.tls import ServerTls, TlsFiles

log = logging.getLogger(__name__)

GATEWAY_SERVICE = pb.DESCRIPTOR.services_by_name["Gateway"].full_name
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"
# The health status that says whether the cluster's shared state (Redis) is reachable: the
# gateway serves either way, so the overall status ("") does not change with it.
CLUSTER_HEALTH = "switchboard.cluster"


@dataclass(frozen=True)
class Sibling:
    """What a worker of `serve --workers N` shares with the others: their port, and the file
    holding their rate limits (see `router_core.Router`'s shared_state). `on_listening` tells
    the parent that the worker started."""

    shared_state: Path
    on_listening: Callable[[], object]
    # The one worker that serves /metrics, the Admin API and the metrics push for the host: the
    # figures live in the shared state, so its are the host's.
    serves_host: bool = False
    # Has every worker reload the config (SIGHUP through the parent), after an Admin API reload.
    reload_all: Callable[[], object] = lambda: None


def _reloading_all(reload: Callable[[str], Reloaded], reload_all: Callable[[], object]) -> Callable[[str], Reloaded]:
    """`reload` here, then in every worker: the others see the file as this one did (this one
    reads it again, to no change)."""

    def reloaded(why: str) -> Reloaded:
        result = reload(why)
        if result.applied:
            reload_all()
        return result

    return reloaded


def _storage(
    config: Config, config_dir: Path | None, environ: Mapping[str, str]
) -> tuple[StoreThread | None, KeyRing | None, Ledger | None]:
    """The store (opened here, once) when callers present keys or the ledger is on; the keys
    read from it, and the ledger writing to it, when they are."""
    if "keys" not in config.auth.mode and not config.ledger.enabled:
        return None, None, None
    store = StoreThread(open_store(config.store, config_dir, environ))
    keys = KeyRing(store, config.store.refresh_interval_s) if "keys" in config.auth.mode else None
    ledger = Ledger(store, config.ledger) if config.ledger.enabled else None
    return store, keys, ledger


class Gateway:
    """A built, not yet started, gateway server and the resources it owns. `config_path` is
    where `reload` reads the config again (None: the embedded default)."""

    def __init__(
        self,
        config: Config,
        listen: str,
        environ: Mapping[str, str] = os.environ,
        *,
        config_path: Path | None = None,
        sibling: Sibling | None = None,
    ) -> None:
        self.environ = environ
        self.config_path = config_path
        self.server, self.tls, self.port = self._listening(config, listen, sibling)
        self.router = config.new_router(shared_state=sibling.shared_state if sibling else None)
        self.store, self.keys, self.ledger = _storage(config, self.config_dir, environ)
        self.cluster: ClusterLink | None = None
        if config.state.backend == "redis":
            # The workers of a host share their dollar allowances, so they name them alike.
            holder = None if sibling is None else f"{socket.gethostname()}:{sibling.shared_state}"
            self.cluster = ClusterLink(self.router, config.state, on_reachable=self._cluster_reachable, holder=holder)
        self.runtimes = Runtimes(build_runtime(config, self.router, environ, keys=self.keys, pool=self._pool))
        self.tracing = Tracing(config.telemetry)
        serves_host = sibling is None or sibling.serves_host
        telemetry = config.telemetry
        pushed = telemetry.otlp_endpoint is not None and telemetry.metrics_push_interval_s > 0
        self.metrics = (
            Metrics(telemetry, self.router, lambda: self.config.deployments())
            if serves_host and (telemetry.metrics_listen or pushed)
            else None
        )
        self.health = health.aio.HealthServicer()
        self._background: set[asyncio.Future[None]] = set()
        self._stopped = False
        self.shadows = Shadows(self.router, self.runtimes, self.ledger)
        add_to_server(GatewayServicer(self.runtimes, self.router, self.ledger, self.shadows), self.server)
        self.admin: grpc.aio.Server | None = None
        self.admin_port = 0
        if serves_host and config.server.admin_listen is not None:
            self.admin, self.admin_port = self._admin_server(config, config.server.admin_listen, sibling)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        _enable_reflection(self.server, (GATEWAY_SERVICE, health.SERVICE_NAME))

    def _listening(
        self, config: Config, listen: str, sibling: Sibling | None
    ) -> tuple[grpc.aio.Server, ServerTls | None, int]:
        """The gRPC server on `listen`, with TLS when the config has it, and its port."""
        # grpc turns SO_REUSEPORT on by default, which would let a second gateway
        # silently share (and split) a port that is already taken; only the
        # workers of one `serve --workers N` share theirs on purpose.
        server = grpc.aio.server(
            options=[
                ("grpc.so_reuseport", int(sibling is not None)),
                ("grpc.max_concurrent_streams", config.server.clients.max_streams_per_connection),
                # Count the streams open on the connection, as HTTP/2 does and as clients that keep
                # to the limit count them, not those whose memory grpc has not freed yet: a busy
                # worker frees them late, and would refuse (REFUSED_STREAM) streams within the limit.
                ("grpc.http.overload_protection", 0),
            ]
        )
        tls = None if config.server.tls is None else ServerTls(TlsFiles.read(config.server.tls, self.config_dir))
        try:
            if tls is None:
                port = server.add_insecure_port(listen)
            else:
                port = server.add_secure_port(listen, tls.credentials())
        except RuntimeError as error:
            raise OSError(f"cannot listen on {listen}: {error}") from error
        return server, tls, port

    def _admin_server(self, config: Config, listen: str, sibling: Sibling | None) -> tuple[grpc.aio.Server, int]:
        """The Admin API's server on `listen`, behind its credential, and its port."""
        credential = AdminCredential.from_environ(config.auth.admin_key_env, self.environ)
        admin = grpc.aio.server(options=[("grpc.so_reuseport", 0)], interceptors=[credential])
        try:
            port = admin.add_insecure_port(listen)
        except RuntimeError as error:
            raise OSError(f"cannot listen on {listen} (admin): {error}") from error
        reload = self.reloaded if sibling is None else _reloading_all(self.reloaded, sibling.reload_all)
        keys = None
        if self.store is not None and self.keys is not None:
            keys = KeyAdmin(self.store, self.keys, self._hasher)
        spend = None
        if self.store is not None and self.ledger is not None:
            spend = SpendReader(self.store, self.ledger)
        servicer = AdminServicer(self.router, reload, lambda: self.config, keys, spend)
        admin_pb2_grpc.add_AdminServicer_to_server(servicer, admin)
        _enable_reflection(admin, (ADMIN_SERVICE,))
        return admin, port

    @property
    def _pool(self) -> DollarPool | None:
        return None if self.cluster is None else self.cluster.dollars

    def _hasher(self) -> KeyHasher:
        hasher = self.runtimes.current.auth.hasher
        assert hasher is not None, "a gateway that keeps keys hashes them"
        return hasher

    @property
    def config_dir(self) -> Path | None:
        """Where relative paths in the config (TLS files) are taken from."""
        return None if self.config_path is None else self.config_path.parent

    @property
    def config(self) -> Config:
        return self.runtimes.current.config

    @property
    def engine(self) -> Engine:
        return self.runtimes.current.engine

    async def start(self) -> None:
        if self.keys is not None:
            await self.keys.refresh()  # a store that cannot be read stops the start
            self._keep(self.keys.keep_fresh())
        if self.ledger is not None:
            assert self.store is not None
            seeded = await seed_budgets(self.router, self.store, self.config, self.keys)
            if seeded:
                log.info("budgets: what the ledger recorded before this start counted into %d of them", seeded)
            self._keep(self.ledger.run())
        # Budget first (or the fallback, within the link's timeout): the first calls need it.
        if self.cluster is not None:
            await self.cluster.start()
        self.tracing.start()
        if self.metrics is not None:
            await self.metrics.start()
            if self.metrics.where is not None:
                log.info("metrics at http://%s/metrics", self.metrics.where)
        if self.admin is not None:
            await self.admin.start()
        await self.server.start()
        for service in ("", GATEWAY_SERVICE):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)

    def _cluster_reachable(self, reachable: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if reachable else health_pb2.HealthCheckResponse.NOT_SERVING
        self._keep(self.health.set(CLUSTER_HEALTH, status))

    def _keep(self, work: Coroutine[object, object, None]) -> None:
        """Runs `work` in the background until it ends or the gateway stops."""
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def reload(self, why: str = "request") -> bool:
        """Reads the config again (`why`: what asked, for the log), builds a runtime from it and
        swaps it in; calls under way keep the one they started on. On any error the current
        config keeps serving and the reason is logged. True when the new config is in place."""
        return self.reloaded(why).applied

    def reloaded(self, why: str) -> Reloaded:
        """`reload`, saying what changed or why the new config was refused."""
        source = self.config_path or "the embedded default config"
        try:
            config = load_config(self.config_path, self.environ)
            tls = None if config.server.tls is None else TlsFiles.read(config.server.tls, self.config_dir)
            if tls is not None and self.tls is not None and (tls.client_ca is None) == self.tls.mutual:
                raise ConfigError("server.tls.client_ca_file: turning mutual TLS on or off takes a restart")
            runtime = build_runtime(config, self.router, self.environ, self.runtimes.current, self.keys, self._pool)
        except ConfigError as error:
            log.error("config reload (%s) from %s failed, still serving the previous config: %s", why, source, error)
            return Reloaded(applied=False, error=str(error))
        except Exception as error:
            log.exception("config reload (%s) from %s failed, still serving the previous config", why, source)
            return Reloaded(applied=False, error=f"{type(error).__name__}: {error}")
        for section in ("state", "telemetry"):
            if getattr(config, section) != getattr(self.config, section):
                log.warning("config reload (%s): the %s section changed; that takes effect at restart", why, section)
        if (tls is None) != (self.tls is None):
            log.warning("config reload (%s): turning TLS on or off takes effect at restart", why)
        reloaded = Reloaded.between(self.config, config)
        # Both in one step, nothing awaited between: no call sees the new table with the old runtime.
        self.router.reload(config.routing_document, without=config.left_out)
        self.runtimes.swap(runtime)
        if tls is not None and self.tls is not None:
            self.tls.update(tls)
        log.info("config reloaded (%s) from %s: %d deployments", why, source, len(config.deployments()))
        return reloaded

    async def watch_config(self, interval_s: float) -> None:
        """Reloads when the config file changes: its inode (an editor that replaces the file),
        size or modification time, looked at every `interval_s`: a stat a second costs next to
        nothing, where a file-system watcher's thread grew each worker's memory under load."""
        if self.config_path is None or interval_s <= 0:
            return
        seen = _file_state(self.config_path)
        while True:
            await asyncio.sleep(interval_s)
            state = _file_state(self.config_path)
            if state != seen:
                seen = state
                self.reload("file changed")

    async def stop(self, grace_s: float, *, drain_s: float = 0.0) -> None:
        """Reports NOT_SERVING, keeps serving new calls for `drain_s` so that load balancers
        notice, then stops taking calls, lets in-flight ones finish within `grace_s`, and closes
        the upstream clients. Stopping again does nothing."""
        if self._stopped:
            return
        self._stopped = True
        self.shadows.close()
        await self.health.enter_graceful_shutdown()
        if drain_s > 0:
            await asyncio.sleep(drain_s)
        await self.server.stop(grace_s)
        try:
            # Shadow calls are the gateway's own: they do not hold a stop up.
            await self.shadows.aclose()
            if self.admin is not None:
                await self.admin.stop(0)
            if self.cluster is not None:
                await self.cluster.aclose()
            # Exports what is left; off the loop, since the exporter blocks.
            await asyncio.to_thread(self.tracing.shutdown)
            if self.metrics is not None:
                await self.metrics.stop()
            await self.runtimes.aclose()
        finally:
            # Whatever failed above, the calls that drained are written and the store closed.
            for task in self._background:
                task.cancel()
            if self.ledger is not None and not await self.ledger.flush():
                log.error("the ledger could not write its last %d records before stopping", self.ledger.buffered)
            if self.store is not None:
                await asyncio.to_thread(self.store.close)


async def serve(
    config: Config, listen: str, *, config_path: Path | None = None, sibling: Sibling | None = None
) -> None:
    """Run the gateway until SIGTERM or SIGINT, then shut down gracefully; reload the config on
    SIGHUP and whenever its file changes."""
    gateway = Gateway(config, listen, config_path=config_path, sibling=sibling)
    await gateway.start()
    log.info("switchboard listening on %s (port %d, pid %d)", listen, gateway.port, os.getpid())
    if sibling is not None:
        sibling.on_listening()
    stopped: asyncio.Future[signal.Signals] = asyncio.get_running_loop().create_future()
    loop = asyncio.get_running_loop()

    def stop(signum: signal.Signals) -> None:
        if not stopped.done():
            stopped.set_result(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop, signum)
    loop.add_signal_handler(signal.SIGHUP, gateway.reload, "SIGHUP")
    watching = asyncio.ensure_future(gateway.watch_config(config.server.watch_interval_s))
    batching = asyncio.ensure_future(threads.keep_batched(config.server.helper_thread_policy))
    received = await stopped
    watching.cancel()
    batching.cancel()
    settings = gateway.config.server
    # Ctrl-C is someone at a terminal, not a load balancer that needs time to notice.
    drain_s = settings.drain_delay_s if received == signal.SIGTERM else 0.0
    log.info(
        "shutting down: draining for %.1fs, then finishing in-flight calls for up to %.1fs",
        drain_s,
        settings.grace_period_s,
    )
    await gateway.stop(settings.grace_period_s, drain_s=drain_s)
    log.info("stopped")


def _enable_reflection(server: grpc.aio.Server, services: tuple[str, ...]) -> None:
    """Server reflection as grpc.reflection.v1 and as v1alpha: v1 is v1alpha under a new package
    name, field for field, so v1alpha's servicer and messages answer both (grpcio-reflection ships
    only v1alpha), and tools that speak only v1 work too."""
    servicer = reflection.aio.ReflectionServicer((*services, reflection.SERVICE_NAME, REFLECTION_V1))
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        tuple(
            grpc.method_handlers_generic_handler(name, {"ServerReflectionInfo": handler})
            for name in (REFLECTION_V1, reflection.SERVICE_NAME)
        )
    )


def _file_state(path: Path) -> tuple[int, int, int] | None:
    try:
        found = os.stat(path)
    except OSError:  # being replaced, or gone: the next look decides
        return None
    return found.st_ino, found.st_size, found.st_mtime_ns


def run_gateway(
    config: Config, listen: str, *, config_path: Path | None = None, sibling: Sibling | None = None
) -> None:
    """Serve until stopped, on uvloop, which costs the worker much less CPU per call than
    asyncio's own loop (measured with benches/chat.py)."""
    uvloop.run(serve(config, listen, config_path=config_path, sibling=sibling))
