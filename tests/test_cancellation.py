"""A client that goes away takes its upstream call with it: the upstream connection closes at once,
no task is left running and the deployment's lease is given back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from service.api.switchboard.v1 import gateway_pb2 as pb
from service.api.switchboard.v1 import gateway_pb2_grpc as pb_grpc
from service.config import parse_config
from service.server import Gateway
from tests.mock_openai import Fault, MockOpenAI


@pytest.fixture
async def gateway(upstream: MockOpenAI) -> AsyncIterator[tuple[Gateway, pb_grpc.GatewayStub]]:
    config = f"""
default_group: chat
model_groups:
  - name: chat
    deployments:
      - id: mock
        type: openai_compatible
        model: m
        base_url: {upstream.base_url}
        context_window: 8192
"""
    server = Gateway(parse_config(config), "127.0.0.1:0", environ={})
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield server, pb_grpc.GatewayStub(channel)
    await server.stop(0)


def chat() -> pb.ChatRequest:
    return pb.ChatRequest(
        model="chat", messages=[pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text="a b c d")])]
    )


def upstream_connections(upstream: MockOpenAI) -> int:
    """Connections to the upstream the gateway still holds open: the upstream's ESTABLISHED
    sockets, read from the kernel (a half-closed one is CLOSE_WAIT until its handler ends)."""
    established = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, _remote, state = line.split()[1:4]
        established += int(local.split(":")[1], 16) == upstream.port and state == "01"
    return established


async def eventually(condition: object, timeout_s: float = 1.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        if condition():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.01)
    return bool(condition())  # type: ignore[operator]


def in_flight(server: Gateway) -> int:
    return sum(stats.in_flight for stats in server.engine.router.stats())


async def test_a_cancelled_unary_call_closes_its_upstream_request(
    gateway: tuple[Gateway, pb_grpc.GatewayStub], upstream: MockOpenAI
) -> None:
    server, stub = gateway
    upstream.fault = Fault(hang_s=5)
    call = stub.Chat(chat())
    assert await eventually(lambda: upstream_connections(upstream) == 1 and in_flight(server) == 1)
    call.cancel()
    assert await eventually(lambda: upstream_connections(upstream) == 0), "the upstream request was left open"
    assert in_flight(server) == 0, "the lease was not given back"


async def test_a_cancelled_stream_closes_its_upstream_stream(
    gateway: tuple[Gateway, pb_grpc.GatewayStub], upstream: MockOpenAI
) -> None:
    server, stub = gateway
    upstream.chunk_delay_s = 0.2
    call = stub.ChatStream(chat())
    async for event in call:
        if event.HasField("delta"):
            break
    assert upstream_connections(upstream) == 1 and in_flight(server) == 1
    call.cancel()
    assert await eventually(lambda: upstream_connections(upstream) == 0), "the upstream stream was left open"
    assert in_flight(server) == 0, "the lease was not given back"
    # Nothing of the cancelled call is still running in the gateway.
    assert await eventually(lambda: not [t for t in asyncio.all_tasks() if "Chat" in repr(t.get_coro())])
