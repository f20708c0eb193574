"""Three gateway processes (as three hosts would run them) on one real Redis, in front of one
counting upstream: the rpm limit holds for the three together."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2_grpc
from grpc_health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse

from service.api.switchboard.v1 import gateway_pb2_grpc as pb_grpc
from service.server import CLUSTER_HEALTH
from tests.mock_openai import MockOpenAI
from tests.redis_server import RedisServer
from tests.serving import Serve
from tests.test_e2e import chat_request, config

RPM = 60
HOSTS = 3


async def test_three_gateways_on_one_redis_hold_one_rpm_limit(
    tmp_path: Path, upstream: MockOpenAI, redis_server: RedisServer
) -> None:
    """Demand of 3x the limit, spread over the three. Alone, each would admit the whole limit."""
    with_rpm = config(upstream).replace("priority: 0", f"priority: 0\n        rpm: {RPM}")
    config_path = tmp_path / "c.yaml"
    config_path.write_text(
        f"server: {{drain_delay_s: 0}}\nstate: {{backend: redis, url: '{redis_server.url}'}}\n" + with_rpm
    )
    gateways = [Serve(config_path, env={"MOCK_KEY": "sk-test"}) for _ in range(HOSTS)]
    try:
        for gateway in gateways:
            await asyncio.to_thread(gateway.listening)
        start = time.monotonic()
        codes = []
        channels = [grpc.aio.insecure_channel(f"127.0.0.1:{g.port}") for g in gateways]
        for i in range(3 * RPM):
            try:
                await pb_grpc.GatewayStub(channels[i % HOSTS]).Chat(chat_request(), timeout=10)
                codes.append(grpc.StatusCode.OK)
            except grpc.aio.AioRpcError as error:
                codes.append(error.code())
        elapsed = time.monotonic() - start
        for channel in channels:
            await channel.close()
    finally:
        logs = [await asyncio.to_thread(gateway.stop) for gateway in gateways]
    admitted = codes.count(grpc.StatusCode.OK)
    assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert admitted == len(upstream.requests), "what was admitted reached the upstream, nothing else"
    # At least 95% (each host may end holding a slice unused); at most the limit and its refill.
    assert 0.95 * RPM <= admitted <= RPM + RPM / 60 * elapsed + 1, (admitted, elapsed)
    assert all("unreachable" not in log for log in logs)


async def test_redis_killed_and_restarted_under_three_gateways_fails_no_call(
    tmp_path: Path, upstream: MockOpenAI, redis_server: RedisServer
) -> None:
    """Calls go on all along; `switchboard.cluster` in the health service says where Redis is."""
    with_rpm = config(upstream).replace("priority: 0", "priority: 0\n        rpm: 100000")
    config_path = tmp_path / "c.yaml"
    config_path.write_text(
        "server: {drain_delay_s: 0}\n"
        f"state: {{backend: redis, url: '{redis_server.url}', timeout_s: 0.1}}\n" + with_rpm
    )
    gateways = [Serve(config_path, env={"MOCK_KEY": "sk-test"}) for _ in range(HOSTS)]
    failed: list[grpc.StatusCode] = []
    try:
        for gateway in gateways:
            await asyncio.to_thread(gateway.listening)
        channels = [grpc.aio.insecure_channel(f"127.0.0.1:{g.port}") for g in gateways]

        async def chats(count: int) -> None:
            for i in range(count):
                try:
                    await pb_grpc.GatewayStub(channels[i % HOSTS]).Chat(chat_request(), timeout=10)
                except grpc.aio.AioRpcError as error:
                    failed.append(error.code())

        async def cluster_status() -> set[int]:
            return {
                (await health_pb2_grpc.HealthStub(channel).Check(HealthCheckRequest(service=CLUSTER_HEALTH))).status
                for channel in channels
            }

        await chats(30)
        assert await cluster_status() == {HealthCheckResponse.SERVING}
        redis_server.stop()
        await chats(30)
        await eventually(lambda: cluster_status(), {HealthCheckResponse.NOT_SERVING})
        await chats(30)
        redis_server.start()
        await eventually(lambda: cluster_status(), {HealthCheckResponse.SERVING})
        await chats(30)
        for channel in channels:
            await channel.close()
    finally:
        logs = [await asyncio.to_thread(gateway.stop) for gateway in gateways]
    assert failed == []
    assert len(upstream.requests) == 120
    assert all("is unreachable" in log and "reachable again" in log for log in logs)


async def eventually(probe: Callable[[], Awaitable[object]], expected: object, within_s: float = 15.0) -> None:
    deadline = time.monotonic() + within_s
    while (seen := await probe()) != expected:
        assert time.monotonic() < deadline, f"still {seen}, not {expected}"
        await asyncio.sleep(0.05)
