"""Shared fixtures: a mock OpenAI-compatible upstream and an in-process gateway on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import grpc
import pytest
import uvloop
from google.protobuf.message import Message
from google.rpc import status_pb2

from service.api.switchboard.v1 import gateway_pb2 as pb
from service.api.switchboard.v1 import gateway_pb2_grpc as pb_grpc
from service.config import load_config, parse_config
from service.server import Gateway
from tests.mock_openai import MockOpenAI
from tests.postgres_server import PostgresServer
from tests.redis_server import RedisServer
from tests.virtual_time import new_virtual_time_loop

if TYPE_CHECKING:
    from tests.keyed import Keyed, StartKeyed

StartGateway = Callable[[str], Awaitable[pb_grpc.GatewayStub]]


def pytest_asyncio_loop_factories(item: pytest.Item) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """The tests run on the loop the gateway runs on in production; those marked `virtual_time`
    on a loop whose time moves only when every task waits (tests/virtual_time.py)."""
    if item.get_closest_marker("virtual_time"):
        return {"virtual_time": new_virtual_time_loop}
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server of the test's own, on a free loopback port."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server of the test's own, on a free loopback port."""
    server = PostgresServer()
    server.start()
    yield server
    server.remove()


@pytest.fixture
async def upstream() -> AsyncIterator[MockOpenAI]:
    mock = await MockOpenAI().start()
    yield mock
    await mock.stop()


@pytest.fixture
async def second_upstream() -> AsyncIterator[MockOpenAI]:
    mock = await MockOpenAI(reply_prefix="second: ").start()
    yield mock
    await mock.stop()


class StartServer(Protocol):
    def __call__(self, config: str | Path, environ: Mapping[str, str] = ...) -> Awaitable[Gateway]: ...


MOCK_ENVIRON = {"MOCK_KEY": "sk-test"}


@pytest.fixture
async def start_server() -> AsyncIterator[StartServer]:
    """Start a gateway on a free loopback port and return it (the server, for tests that look
    inside or stop it themselves): from YAML text, or from a file it reloads from. Whatever the
    test left running is stopped at the end."""
    started: list[Gateway] = []

    async def start(config: str | Path, environ: Mapping[str, str] = MOCK_ENVIRON) -> Gateway:
        if isinstance(config, Path):
            gateway = Gateway(load_config(config, environ), "127.0.0.1:0", environ, config_path=config)
        else:
            gateway = Gateway(parse_config(config), "127.0.0.1:0", environ=environ)
        await gateway.start()
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        await gateway.stop(0)


@pytest.fixture
async def start_gateway(start_server: StartServer) -> AsyncIterator[StartGateway]:
    """Start a gateway from YAML text on a free loopback port and return a stub for it."""
    channels: list[grpc.aio.Channel] = []

    async def start(config_yaml: str) -> pb_grpc.GatewayStub:
        gateway = await start_server(config_yaml)
        channels.append(grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}"))
        return pb_grpc.GatewayStub(channels[-1])

    yield start
    for channel in channels:
        await channel.close()


@pytest.fixture
async def start_keyed(start_server: StartServer) -> AsyncIterator[StartKeyed]:
    """Starts a gateway from YAML text (with ENVIRON), with channels to its data plane and admin."""
    from tests.keyed import ENVIRON, Keyed  # it imports the end-to-end tests, which import this

    channels: list[grpc.aio.Channel] = []

    async def start(yaml: str) -> Keyed:
        gateway = await start_server(yaml, ENVIRON)
        data = grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}")
        admin = grpc.aio.insecure_channel(f"127.0.0.1:{gateway.admin_port}")
        channels.extend((data, admin))
        return Keyed(gateway, data, admin)

    yield start
    for channel in channels:
        await channel.close()


def status_details(error: grpc.aio.AioRpcError) -> list[Message]:
    """The google.rpc details attached to a failed call, unpacked."""
    from google.rpc import error_details_pb2

    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert raw, f"no rich status details on {error.code()}: {error.details()}"
    status = status_pb2.Status.FromString(raw)
    assert status.code == error.code().value[0]
    kinds = [error_details_pb2.BadRequest, error_details_pb2.ErrorInfo, error_details_pb2.RetryInfo, pb.AttemptLog]
    details: list[Message] = []
    for packed in status.details:
        for kind in kinds:
            if packed.Is(kind.DESCRIPTOR):
                detail = kind()
                packed.Unpack(detail)
                details.append(detail)
    return details
