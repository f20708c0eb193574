"""The Admin API on its own address: live figures per deployment, the config reload with what it
changed or why it was refused, `switchboard stats`, and nothing of it unless asked for."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from service.api.switchboard.admin.v1 import admin_pb2, admin_pb2_grpc
from service.api.switchboard.v1 import gateway_pb2_grpc as pb_grpc
from tests.conftest import StartServer
from tests.mock_openai import Fault, MockOpenAI
from tests.test_cli import grpcurl
from tests.test_e2e import chat_request, config

ADMIN = "server: {admin_listen: '127.0.0.1:0'}\n"


async def test_stats_and_a_reload_through_the_admin_api(
    tmp_path: Path, upstream: MockOpenAI, start_server: StartServer
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(ADMIN + config(upstream))
    gateway = await start_server(path)
    try:
        assert gateway.admin_port not in (0, gateway.port)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as data:
            for _ in range(2):
                await pb_grpc.GatewayStub(data).Chat(chat_request())
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.admin_port}") as channel:
            admin = admin_pb2_grpc.AdminStub(channel)
            stats = {s.deployment: s for s in (await admin.GetStats(admin_pb2.GetStatsRequest())).deployments}
            assert set(stats) == {"echo", "mock-0"}
            mock = stats["mock-0"]
            assert (mock.requests, mock.failures, mock.in_flight, mock.circuit_state) == (2, 0, 0, "closed")
            assert mock.output_tokens > 0 and mock.HasField("ewma_latency_ms") and not mock.HasField("ewma_ttft_ms")

            path.write_text(ADMIN + config(upstream, upstream).replace("priority: 0", "priority: 0\n        rpm: 7"))
            reloaded = await admin.ReloadConfig(admin_pb2.ReloadConfigRequest())
            assert (reloaded.applied, list(reloaded.added), list(reloaded.removed)) == (True, ["mock-1"], [])
            path.write_text(ADMIN + "model_groups: [{name: x, deployments: [{id: x, type: echo, model: x}]}]\n")
            refused = await admin.ReloadConfig(admin_pb2.ReloadConfigRequest())
            assert not refused.applied and "c.yaml:2" in refused.error and "context_window" in refused.error
            after = await admin.GetStats(admin_pb2.GetStatsRequest())
            assert [s.deployment for s in after.deployments] == ["echo", "mock-0", "mock-1"], "still the last good one"
        # The command, and reflection for grpcurl users.
        command = [sys.executable, "-m", "service", "stats", "--admin", f"127.0.0.1:{gateway.admin_port}"]
        # In a thread: the gateway that answers runs on this loop.
        result = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        dumped = json.loads(result.stdout)
        assert [d["deployment"] for d in dumped["deployments"]] == ["echo", "mock-0", "mock-1"]
        assert dumped["deployments"][1]["requests"] == "2"  # uint64, as protobuf's JSON writes it
        services = await asyncio.to_thread(grpcurl, f"127.0.0.1:{gateway.admin_port}", "list")
        assert "switchboard.admin.v1.Admin" in services and "switchboard.v1.Gateway" not in services
    finally:
        await gateway.stop(0)


async def test_stats_give_percentiles_outcomes_cost_and_calls_per_group(
    tmp_path: Path, upstream: MockOpenAI, start_server: StartServer
) -> None:
    """Upstream answers held for 60 ms: the latency percentiles say so, within the histogram's
    quarter octave; failures count per class and calls per group, method and status."""
    path = tmp_path / "c.yaml"
    path.write_text(ADMIN + config(upstream))
    gateway = await start_server(path)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as data:
            stub = pb_grpc.GatewayStub(data)
            upstream.fault = Fault(hang_s=0.06)
            for _ in range(10):
                await stub.Chat(chat_request())
            upstream.fault = Fault(status=500)
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.Chat(chat_request())
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.Chat(chat_request(model="no-such-model"))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.admin_port}") as channel:
            response = await admin_pb2_grpc.AdminStub(channel).GetStats(admin_pb2.GetStatsRequest())
    finally:
        await gateway.stop(0)
    mock = {s.deployment: s for s in response.deployments}["mock-0"]
    assert dict(mock.outcomes) == {"ok": 10, "server_error": 1}
    latency = mock.latency_ms
    assert 55 <= latency.p50 <= 60 * 1.2 and latency.p50 <= latency.p95 <= latency.p99 <= 300, latency
    assert not mock.HasField("ttft_ms"), "no streams"
    assert mock.cost_usd == pytest.approx((mock.input_tokens * 1.0 + mock.output_tokens * 2.0) / 1e6)
    assert [(c.retries, c.fallbacks, c.hedges) for c in response.calls] == [(0, 0, 0)] * 2, "one deployment"
    calls = {(c.model_group, c.method): dict(c.statuses) for c in response.calls}
    assert calls == {("chat", "Chat"): {"OK": 10, "UNAVAILABLE": 1}, ("", "Chat"): {"INVALID_ARGUMENT": 1}}


async def test_no_admin_api_unless_asked_for(tmp_path: Path, start_server: StartServer) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(config())
    gateway = await start_server(path)
    try:
        assert gateway.admin is None and gateway.admin_port == 0
        services = await asyncio.to_thread(grpcurl, f"127.0.0.1:{gateway.port}", "list")
        assert "switchboard.admin.v1.Admin" not in services
    finally:
        await gateway.stop(0)


def test_stats_says_when_it_cannot_reach_the_admin_api() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service", "stats", "--admin", "127.0.0.1:1", "--timeout", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1 and "UNAVAILABLE" in result.stderr


async def test_a_drained_deployment_gets_no_calls_until_undrained(
    tmp_path: Path, upstream: MockOpenAI, second_upstream: MockOpenAI, start_server: StartServer
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(ADMIN + config(upstream, second_upstream))
    gateway = await start_server(path)
    try:
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as data,
            grpc.aio.insecure_channel(f"127.0.0.1:{gateway.admin_port}") as channel,
        ):
            chat, admin = pb_grpc.GatewayStub(data), admin_pb2_grpc.AdminStub(channel)
            assert (await chat.Chat(chat_request())).served.deployment == "mock-0"
            await admin.Drain(admin_pb2.DrainRequest(deployment="mock-0"))
            assert (await chat.Chat(chat_request())).served.deployment == "mock-1"
            stats = {s.deployment: s for s in (await admin.GetStats(admin_pb2.GetStatsRequest())).deployments}
            assert (stats["mock-0"].unavailable_reason, stats["mock-0"].unavailable_for_s) == ("drained", 0)
            await admin.Undrain(admin_pb2.UndrainRequest(deployment="mock-0"))
            assert (await chat.Chat(chat_request())).served.deployment == "mock-0"
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await admin.Drain(admin_pb2.DrainRequest(deployment="nowhere"))
            assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await gateway.stop(0)
    assert len(upstream.requests) == 2 and len(second_upstream.requests) == 1
