"""What the mock upstreams share: an aiohttp app served on a free loopback port; and a free
port for servers the tests start as processes."""

from __future__ import annotations

import socket
from typing import Self

from aiohttp import web


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class LoopbackServer:
    """Serves the routes a subclass adds in `routes` on 127.0.0.1, on a port the kernel picks."""

    def __init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self.port = 0

    def routes(self, router: web.UrlDispatcher) -> None:
        raise NotImplementedError

    async def start(self) -> Self:
        app = web.Application()
        self.routes(app.router)
        # Hanging handlers are cancelled at once on stop instead of being awaited.
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()
