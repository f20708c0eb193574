"""`serve --workers N`: workers that share one port and one set of rate-limit budgets, supervised
by a parent that replaces a worker that dies and stops when they cannot start."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import aiohttp
import grpc
import pytest
from google.rpc import error_details_pb2
from prometheus_client.parser import text_string_to_metric_families

from service.api.switchboard.v1 import gateway_pb2_grpc as pb_grpc
from service.config import parse_config
from tests.conftest import status_details
from tests.loopback import free_port
from tests.mock_openai import Fault, MockOpenAI
from tests.serving import Serve, json_access_lines
from tests.test_cli import grpcurl
from tests.test_e2e import chat_request, config

WORKERS = ("--workers", "2")
ECHO_ONLY = "model_groups: [{name: echo, deployments: [{id: echo, type: echo, model: echo, context_window: 1000}]}]\n"


class Workers(Serve):
    """`serve --workers 2` on a free port, its stderr read line by line."""

    def __init__(
        self,
        tmp_path: Path,
        port: int | None = None,
        *,
        config_yaml: str = ECHO_ONLY,
        server: str = "",
        env: Mapping[str, str] = {},
    ) -> None:
        config = tmp_path / "c.yaml"
        config.write_text(f"server: {{drain_delay_s: 0.2{server}}}\n" + config_yaml)
        super().__init__(config, *WORKERS, port=port, env=env)

    def chat(self) -> None:
        request = {"model": "echo", "messages": [{"role": "ROLE_USER", "content": [{"text": "hi"}]}]}
        answer = json.loads(grpcurl(f"127.0.0.1:{self.port}", "switchboard.v1.Gateway/Chat", data=request))
        assert answer["message"]["content"] == [{"text": "hi"}]

    async def chat_on_a_new_connection(self) -> grpc.aio.AioRpcError | None:
        """A Chat to the upstream group on a connection of its own (a subchannel pool of its own,
        not the last connection again), which the kernel gives to either worker; its error."""
        options = [("grpc.use_local_subchannel_pool", 1)]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self.port}", options=options) as channel:
            try:
                await pb_grpc.GatewayStub(channel).Chat(chat_request(), timeout=10)
            except grpc.aio.AioRpcError as error:
                return error
        return None


def test_workers_share_one_port_and_stop_together(tmp_path: Path) -> None:
    workers = Workers(tmp_path)
    pids = workers.listening(2)
    assert len(set(pids)) == 2
    assert workers.process.pid not in pids, "the parent only supervises"
    for _ in range(6):  # a new connection each time, spread over the workers by the kernel
        workers.chat()
    rest = workers.stop()
    assert rest.count("draining for 0.2s") == 2 and rest.count("stopped") == 2


def test_a_worker_that_dies_is_replaced_while_the_other_serves(tmp_path: Path) -> None:
    """Before: one worker's death stopped the whole service (exit 1)."""
    workers = Workers(tmp_path)
    first, second = workers.listening(2)
    os.kill(first, signal.SIGKILL)
    # Until the kernel has closed its socket, a connection may still be handed to it and reset.
    _wait_until_exited(first)
    workers.chat()  # the other still serves
    (replacement,) = workers.listening(1)
    assert replacement not in (first, second)
    assert any("exited with code -9; replacing it" in line for line in workers.lines)
    for _ in range(4):
        workers.chat()
    rest = workers.stop()
    assert rest.count("stopped") == 2


def _wait_until_exited(pid: int) -> None:
    """Until `pid` is a zombie or gone: its sockets are closed."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            return
        if state in ("Z", "X"):
            return
        time.sleep(0.005)
    raise AssertionError(f"process {pid} did not exit")


def test_workers_that_cannot_listen_stop_the_service(tmp_path: Path) -> None:
    """A port held by another program: starting the workers again cannot help."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        workers = Workers(tmp_path, port=holder.getsockname()[1])
        _, rest = workers.process.communicate(timeout=60)
    assert workers.process.returncode == 1
    assert "before it was listening; stopping the others" in rest
    assert "replacing it" not in rest


def test_workers_need_a_fixed_port() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service", "serve", "--listen", "127.0.0.1:0", "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "needs a fixed port" in result.stderr


def test_workers_stopped_while_starting_up_exit_cleanly(tmp_path: Path) -> None:
    """SIGTERM right after the workers are spawned, before they handle signals themselves: they
    die of the signal passed on to them, which is stopping as asked, not a failure."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "serve", "--listen", f"127.0.0.1:{port}", *WORKERS],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stderr is not None
    for line in process.stderr:
        if "started 2 workers" in line:
            break
    process.send_signal(signal.SIGTERM)
    _, rest = process.communicate(timeout=30)
    assert process.returncode == 0, rest
    assert "stopping the others" not in rest


async def test_workers_admit_one_rpm_budget_between_them(tmp_path: Path, upstream: MockOpenAI) -> None:
    """30 calls, each on a connection of its own (spread over both workers by the kernel), to a
    deployment of rpm 10. Before: each worker admitted 10 of its own, up to 20 in all."""
    deployment_with_rpm = config(upstream).replace("priority: 0", "priority: 0\n        rpm: 10")
    workers = Workers(tmp_path, config_yaml=deployment_with_rpm, env={"MOCK_KEY": "sk-test"})
    try:
        workers.listening(2)
        errors = [await workers.chat_on_a_new_connection() for _ in range(30)]
    finally:
        await asyncio.to_thread(workers.stop)
    codes = [error.code() if error else grpc.StatusCode.OK for error in errors]
    admitted = codes.count(grpc.StatusCode.OK)
    # The test takes a second or two; at 10 a minute, one more may have refilled meanwhile.
    assert 10 <= admitted <= 11, codes
    assert len(upstream.requests) == admitted
    assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}


async def test_workers_share_one_circuit_breaker(tmp_path: Path, upstream: MockOpenAI) -> None:
    """Every upstream call fails. Five consecutive failures open the breaker, counted over both
    workers, so the upstream hears five calls, not five per worker; the rest are refused by the
    gateway without trying it."""
    upstream.fault = Fault(status=500)
    workers = Workers(tmp_path, config_yaml=config(upstream), env={"MOCK_KEY": "sk-test"})
    try:
        workers.listening(2)
        errors = [await workers.chat_on_a_new_connection() for _ in range(16)]
    finally:
        await asyncio.to_thread(workers.stop)
    reasons = []
    for error in errors:
        assert error is not None
        (info,) = [d for d in status_details(error) if isinstance(d, error_details_pb2.ErrorInfo)]
        reasons.append(info.reason)
    assert len(upstream.requests) == 5, reasons
    assert reasons == ["UPSTREAM_FAILED"] * 5 + ["NO_HEALTHY_DEPLOYMENT"] * 11


def region_of(pid: int) -> Path:
    """The shared-state file worker `pid` maps (the one that made it maps it by the temporary
    name it was made under, since removed: the file is its directory's `router-state`)."""
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        if "/router-state" in line:
            return Path(line.split(maxsplit=5)[5]).parent / "router-state"
    raise AssertionError(f"worker {pid} maps no router-state")


def serving(port: int) -> set[int]:
    """The pids holding an established connection on `port` (the gateway's side of it)."""
    listing = subprocess.run(
        ["ss", "-Htnp", "state", "established", f"( sport = :{port} )"], capture_output=True, text=True, check=True
    ).stdout
    return {int(pid) for pid in re.findall(r"pid=(\d+)", listing)}


async def test_a_worker_killed_mid_stream_is_replaced_and_its_attempt_stops_counting(tmp_path: Path) -> None:
    """The attempt in flight of a worker killed with SIGKILL in the middle of a stream stops
    counting (for least_in_flight, balanced and the stats of every worker) once its replacement
    starts, which takes its column of the shared counts back."""
    upstream = await MockOpenAI(chunk_delay_s=0.1).start()
    try:
        config_yaml = config(upstream)
        workers = Workers(tmp_path, config_yaml=config_yaml, env={"MOCK_KEY": "sk-test"})
        try:
            first, second = workers.listening(2)
            # A router of the test's own on the workers' region sees the host's counts.
            routing = parse_config("server: {}\n" + config_yaml)
            observer = routing.new_router(shared_state=region_of(first))

            def in_flight() -> int:
                return next(s.in_flight for s in observer.stats() if s.deployment == "mock-0")

            async with grpc.aio.insecure_channel(f"127.0.0.1:{workers.port}") as channel:
                stream = pb_grpc.GatewayStub(channel).ChatStream(chat_request(text="word " * 60), timeout=30)
                await stream.read()
                assert in_flight() == 1
                (holder,) = serving(workers.port)
                assert holder in (first, second)
                os.kill(holder, signal.SIGKILL)
                with pytest.raises(grpc.aio.AioRpcError):
                    while await stream.read() is not grpc.aio.EOF:
                        pass
            (replacement,) = await asyncio.to_thread(workers.listening, 1)
            assert replacement not in (first, second)
            assert in_flight() == 0
            workers.chat()
        finally:
            await asyncio.to_thread(workers.stop)
    finally:
        await upstream.stop()


async def test_one_worker_serves_the_hosts_metrics_and_admin_api(tmp_path: Path) -> None:
    """Every worker counts into the shared state; the first serves /metrics and the Admin API,
    so a scrape or GetStats shows the host's calls, not one worker's share of them. Before:
    `serve --workers N` refused metrics_listen and admin_listen."""
    metrics_port, admin_port = free_port(), free_port()
    metrics = f"telemetry: {{metrics_listen: '127.0.0.1:{metrics_port}'}}\n"
    workers = Workers(tmp_path, config_yaml=metrics + ECHO_ONLY, server=f", admin_listen: '127.0.0.1:{admin_port}'")
    workers.listening(2)
    chats = 12
    try:
        for _ in range(chats):  # a new connection each, spread over both workers by the kernel
            workers.chat()
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{metrics_port}/metrics") as response,
        ):
            scraped = await response.text()
        stats = json.loads(grpcurl(f"127.0.0.1:{admin_port}", "switchboard.admin.v1.Admin/GetStats"))
    finally:
        rest = workers.stop()
    calls = [
        sample.value
        for family in text_string_to_metric_families(scraped)
        for sample in family.samples
        if sample.name == "switchboard_calls_total" and sample.labels["rpc_grpc_status_code"] == "OK"
    ]
    assert sum(calls) == chats, scraped
    assert stats["deployments"][0]["requests"] == str(chats)
    access = json_access_lines(rest)
    served_by = [line["process"] for line in access if line["method"] == "Chat"]
    assert len(served_by) == chats and len(set(served_by)) == 2, "both workers served some"
