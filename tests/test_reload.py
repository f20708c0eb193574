"""Reloading the config while serving: calls under way keep the runtime they began on, new calls
use the new one, deployment state and unchanged providers carry over, removed ones close once
their calls end; a broken file changes nothing; SIGHUP and edits to the file both reload."""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import IO

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.api.switchboard.v1 import gateway_pb2 as pb
from service.api.switchboard.v1 import gateway_pb2_grpc as pb_grpc
from service.config import load_config, parse_config
from service.errors import UpstreamFailed
from service.server import Gateway
from tests.mock_openai import MockOpenAI
from tests.scripted import Fail, gateway
from tests.test_e2e import chat_request, config


class Served:
    """A gateway on a config file in a temp dir, with a stub for it."""

    def __init__(self, path: Path, environ: dict[str, str]) -> None:
        self.path = path
        self.environ = environ
        self.gateway = Gateway(load_config(path, environ), "127.0.0.1:0", environ, config_path=path)
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.gateway.port}")
        self.stub = pb_grpc.GatewayStub(self.channel)

    def write(self, text: str) -> None:
        self.path.write_text(text)

    def in_flight(self) -> dict[str, int]:
        return {s.deployment: s.in_flight for s in self.gateway.router.stats() if s.in_flight}


@pytest.fixture
async def served(tmp_path: Path, upstream: MockOpenAI, second_upstream: MockOpenAI) -> AsyncIterator[Served]:
    path = tmp_path / "switchboard.yaml"
    path.write_text(config(upstream, second_upstream))
    server = Served(path, {"MOCK_KEY": "sk-first"})
    await server.gateway.start()
    yield server
    await server.channel.close()
    await server.gateway.stop(0)


async def test_reloading_under_load_fails_no_call_and_leaks_no_lease(
    served: Served, upstream: MockOpenAI, second_upstream: MockOpenAI
) -> None:
    """Clients call without pause while the config flips between both mocks, the second alone,
    and the first with other settings: every call succeeds, and nothing stays leased."""
    upstream.chunk_delay_s = second_upstream.chunk_delay_s = 0.002
    variants = [
        config(upstream, second_upstream),
        config(second_upstream).replace("mock-0", "mock-1").replace("priority: 0", "priority: 1"),
        config(upstream, second_upstream, strategy="weighted", timeout_s=4),
    ]
    stop = asyncio.Event()
    outcomes: list[str] = []

    async def client(streaming: bool) -> None:
        while not stop.is_set():
            if streaming:
                events = [e async for e in served.stub.ChatStream(chat_request(text="a b c d"))]
                outcomes.append("ok" if events[-1].HasField("end") else "truncated")
            else:
                answer = await served.stub.Chat(chat_request())
                outcomes.append("ok" if answer.message.content else "empty")

    clients = [asyncio.ensure_future(client(streaming=i % 2 == 1)) for i in range(6)]
    reloads = 0
    for round_ in range(12):
        await asyncio.sleep(0.03)
        served.write(variants[round_ % len(variants)])
        assert served.gateway.reload()
        reloads += 1
    stop.set()
    await asyncio.gather(*clients)
    assert reloads == 12 and len(outcomes) > 50
    assert set(outcomes) == {"ok"}
    assert served.in_flight() == {}
    assert all(s.headroom == 1.0 for s in served.gateway.router.stats())


async def test_deployment_state_and_unchanged_providers_carry_over(
    served: Served, upstream: MockOpenAI, second_upstream: MockOpenAI
) -> None:
    for _ in range(3):
        await served.stub.Chat(chat_request())
    before = served.gateway.engine.providers
    served.write(config(upstream, second_upstream, timeout_s=3))  # the same deployments, a new timeout
    assert served.gateway.reload()
    stats = {s.deployment: s.requests for s in served.gateway.router.stats()}
    assert stats["mock-0"] == 3, "the router's state of a surviving deployment survives"
    after = served.gateway.engine.providers
    assert after["echo"] is before["echo"], "an unchanged provider (and its pool) carries over"
    assert after["mock-0"] is not before["mock-0"], "a changed one is built anew"


async def test_a_removed_deployment_serves_its_stream_to_the_end_then_closes(
    served: Served, upstream: MockOpenAI, second_upstream: MockOpenAI
) -> None:
    upstream.chunk_delay_s = 0.05
    old = served.gateway.engine.providers["mock-0"]
    closed = asyncio.Event()
    close = old.aclose

    async def spy() -> None:
        closed.set()
        await close()

    old.aclose = spy  # type: ignore[method-assign]
    stream = served.stub.ChatStream(chat_request(text="one two three four"))
    first = await stream.read()
    assert first.start.served.deployment == "mock-0"
    served.write(config(second_upstream).replace("mock-0", "mock-1"))
    assert served.gateway.reload()
    assert (await served.stub.Chat(chat_request())).served.deployment == "mock-1"
    assert not closed.is_set(), "the stream still runs on the removed deployment's provider"
    rest = []
    while (event := await stream.read()) != grpc.aio.EOF:
        rest.append(event)
    assert rest[-1].HasField("end")
    assert "".join(e.delta.text for e in rest if e.HasField("delta")) == "mock: one two three four"
    await asyncio.wait_for(closed.wait(), 1)
    assert served.in_flight() == {}


async def test_a_broken_file_keeps_the_last_good_config(served: Served, caplog: pytest.LogCaptureFixture) -> None:
    models = await served.stub.ListModels(pb.ListModelsRequest())
    for broken, says in [
        ("model_groups: [", "invalid YAML"),
        ("model_groups:\n  - name: chat\n    deployments: [nowhere]\n", 'unknown deployment "nowhere"'),
    ]:
        served.write(broken)
        with caplog.at_level(logging.ERROR, logger="service.server"):
            assert not served.gateway.reload()
        assert "still serving the previous config" in caplog.text and says in caplog.text
        assert await served.stub.ListModels(pb.ListModelsRequest()) == models
        assert (await served.stub.Chat(chat_request())).served.deployment == "mock-0"


async def test_a_changed_key_is_used_by_new_calls(served: Served, upstream: MockOpenAI) -> None:
    await served.stub.Chat(chat_request())
    assert upstream.headers[-1]["Authorization"] == "Bearer sk-first"
    served.environ["MOCK_KEY"] = "sk-second"
    assert served.gateway.reload()
    await served.stub.Chat(chat_request())
    assert upstream.headers[-1]["Authorization"] == "Bearer sk-second"


async def test_draining_reports_not_serving_and_still_serves_new_calls(served: Served) -> None:
    watch = health_pb2_grpc.HealthStub(served.channel).Watch(health_pb2.HealthCheckRequest())
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
    stopping = asyncio.ensure_future(served.gateway.stop(1, drain_s=0.5))
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
    answer = await served.stub.Chat(chat_request(), timeout=2)
    assert answer.served.deployment == "mock-0"
    assert not stopping.done()
    await stopping
    with pytest.raises(grpc.aio.AioRpcError):
        await served.stub.Chat(chat_request(), timeout=1)


def test_sighup_and_edits_to_the_file_reload_a_running_gateway(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(config())
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "serve", "--config", str(path), "--listen", "127.0.0.1:0"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines = Lines(process)
    try:
        lines.wait_for("switchboard listening on")
        edits = iter(range(1, 1000))
        # The watch starts just after the gateway does: edit until it sees one.
        lines.wait_for(
            "config reloaded (file changed) from", meanwhile=lambda: path.write_text(config() + f"# {next(edits)}\n")
        )
        process.send_signal(signal.SIGHUP)
        lines.wait_for("config reloaded (SIGHUP) from")
        path.write_text("model_groups: [")
        lines.wait_for("still serving the previous config")
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=15)
    assert process.returncode == 0


class Lines:
    """A process's stderr, read line by line in the background."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self._lines: queue.Queue[str] = queue.Queue()
        assert process.stderr is not None
        threading.Thread(target=self._read, args=(process.stderr,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line)

    def wait_for(self, text: str, *, meanwhile: Callable[[], object] = lambda: None, timeout_s: float = 15) -> str:
        """The first line holding `text`, calling `meanwhile` every half second until it comes."""
        ends = time.monotonic() + timeout_s
        while time.monotonic() < ends:
            meanwhile()
            try:
                line = self._lines.get(timeout=0.5)
            except queue.Empty:
                continue
            if text in line:
                return line
        raise AssertionError(f"no {text!r} within {timeout_s}s")


TWO = """
default_group: chat
model_groups:
  - name: chat
    strategy: priority
    deployments:
      - {id: a, type: echo, model: m, context_window: 8192, priority: 0}
      - {id: b, type: echo, model: m, context_window: 8192, priority: 1}
"""


@pytest.mark.virtual_time
async def test_a_call_begun_before_a_reload_passes_over_what_the_reload_changed() -> None:
    """The call decided on a and b; while a fails, a reload removes b and adds c. b is passed
    over (its lease can no longer be had); a call deciding on the new table after a fails passes
    over c, unknown to the runtime it runs on. Both fail cleanly, with no lease left."""
    gw = gateway(TWO, {"a": [Fail(pb.OUTCOME_SERVER_ERROR, delay=0.02)]})
    call = asyncio.ensure_future(gw.engine.chat(chat_request(), lambda: None))
    await asyncio.sleep(0.01)
    changed = parse_config(TWO.replace("id: b,", "id: c,"))
    gw.router.reload(changed.routing_document)
    with pytest.raises(UpstreamFailed) as caught:
        await call
    assert [(r.deployment, r.outcome) for r in caught.value.attempts] == [
        ("a", pb.OUTCOME_SERVER_ERROR),
        ("b", pb.OUTCOME_OUT_OF_ROTATION),
    ]
    assert "config reload" in caught.value.attempts[1].error
    again = gateway(TWO, {"a": [Fail(pb.OUTCOME_SERVER_ERROR)]})
    again.router.reload(changed.routing_document)
    with pytest.raises(UpstreamFailed) as caught:
        await again.engine.chat(chat_request(), lambda: None)
    assert [(r.deployment, r.outcome) for r in caught.value.attempts][-1] == ("c", pb.OUTCOME_OUT_OF_ROTATION)
    for router in (gw.router, again.router):
        assert {s.deployment: s.in_flight for s in router.stats()} == {"a": 0, "c": 0}
