"""Wiring (build_server) apart from lifecycle (serve): servicers, health, reflection, shutdown."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Mapping

import grpc
import uvloop
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from service.api.switchboard.v1 import gateway_pb2 as pb
from service.api.switchboard.v1 import gateway_pb2_grpc as pb_grpc
from service.config import Config
from service.engine import Engine
from service.gateway import GatewayServicer
from service.providers import build_providers

log = logging.getLogger(__name__)

GATEWAY_SERVICE = pb.DESCRIPTOR.services_by_name["Gateway"].full_name


class Gateway:
    """A built, not yet started, gateway server and the resources it owns."""

    def __init__(
        self,
        config: Config,
        listen: str,
        environ: Mapping[str, str] = os.environ,
        *,
        share_port: bool = False,
    ) -> None:
        self.config = config
        # grpc turns SO_REUSEPORT on by default, which would let a second gateway
        # silently share (and split) a port that is already taken; only the
        # workers of one `serve --workers N` share theirs on purpose.
        self.server = grpc.aio.server(options=[("grpc.so_reuseport", int(share_port))])
        try:
            self.port = self.server.add_insecure_port(listen)
        except RuntimeError as error:
            raise OSError(f"cannot listen on {listen}: {error}") from error
        self.engine = Engine(config, config.new_router(), build_providers(config, environ))
        self.health = health.aio.HealthServicer()
        pb_grpc.add_GatewayServicer_to_server(GatewayServicer(self.engine), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (GATEWAY_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )

    async def start(self) -> None:
        await self.server.start()
        for service in ("", GATEWAY_SERVICE):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace_s: float) -> None:
        """Stop taking calls, let in-flight ones finish within `grace_s`, then release upstream clients."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)
        await self.engine.aclose()


async def serve(config: Config, listen: str, *, share_port: bool = False) -> None:
    """Run the gateway until SIGTERM or SIGINT, then shut down gracefully."""
    gateway = Gateway(config, listen, share_port=share_port)
    await gateway.start()
    log.info("switchboard listening on %s (port %d, pid %d)", listen, gateway.port, os.getpid())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("shutting down: finishing in-flight calls for up to %.1fs", config.server.grace_period_s)
    await gateway.stop(config.server.grace_period_s)
    log.info("stopped")


def run_gateway(config: Config, listen: str, *, share_port: bool = False) -> None:
    """Serve until stopped, on uvloop: with asyncio's own loop a unary chat cost the worker
    1.66 ms of CPU, with uvloop 0.99 ms (benches/chat.py, Go load generator, c=1)."""
    uvloop.run(serve(config, listen, share_port=share_port))
