"""Mock upstreams for the benchmarks that inject faults or latency (soak, hedging): the tests'
MockOpenAI, served on an asyncio loop of its own in a background thread, so that the client
loop of the benchmark never waits on the mocks' handlers, and the gateway config in front of them."""

from __future__ import annotations

import asyncio
import threading
from typing import Generic, TypeVar

from tests.mock_openai import MockOpenAI

M = TypeVar("M", bound=MockOpenAI)


class BackgroundMocks(Generic[M]):
    """Starts `mocks` on a loop in a background thread; `close` stops them and the thread."""

    def __init__(self, mocks: list[M]) -> None:
        self.mocks = mocks
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        for mock in self.mocks:
            asyncio.run_coroutine_threadsafe(mock.start(), self.loop).result(timeout=10)

    def ports(self) -> list[int]:
        return [mock.port for mock in self.mocks]

    def close(self) -> None:
        for mock in self.mocks:
            asyncio.run_coroutine_threadsafe(mock.stop(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


def deployments_yaml(ports: list[int], settings: str = "") -> str:
    """One openai_compatible deployment per port, mock-0, mock-1, … in priority order, each with
    the extra `settings` (YAML lines indented for a deployment)."""
    return "".join(
        f"""
      - id: mock-{i}
        type: openai_compatible
        model: bench-model
        base_url: http://127.0.0.1:{port}/v1
        context_window: 100000
        max_connections: 200
        priority: {i}{settings}"""
        for i, port in enumerate(ports)
    )
