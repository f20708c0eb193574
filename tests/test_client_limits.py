"""What one client may hold of the gateway: a stream whose client stops reading ends after the
write timeout, giving back its upstream request and its lease, and one address may have only so
many calls at once, however many connections it opens."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.rpc import error_details_pb2

from service.api.switchboard.v1 import gateway_pb2 as pb
from service.api.switchboard.v1 import gateway_pb2_grpc as pb_grpc
from service.config import parse_config
from service.server import Gateway
from tests.conftest import status_details
from tests.mock_openai import MockOpenAI
from tests.test_e2e import chat_request, config
from tests.test_workers import ECHO_ONLY


async def test_a_client_that_stops_reading_loses_its_stream_and_holds_nothing(upstream: MockOpenAI) -> None:
    """About 1 MB of content, far past HTTP/2's flow-control window: the client reads one
    event and stops. Before: the write waited forever, holding an upstream connection and a
    lease. Now the stream ends after the 0.5 s write timeout."""
    text = "server: {clients: {write_timeout_s: 0.5}}\n" + config(upstream, context_window=1_000_000)
    gateway = Gateway(parse_config(text), "127.0.0.1:0", environ={"MOCK_KEY": "sk-test"})
    await gateway.start()
    try:
        # No bandwidth-delay probing: the client's window stays at HTTP/2's initial 64 KiB.
        options = [("grpc.http2.bdp_probe", 0)]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}", options=options) as channel:
            stream = pb_grpc.GatewayStub(channel).ChatStream(chat_request(text="word " * 200_000))
            first = await stream.read()
            assert first.HasField("start")
            for _ in range(100):  # up to 10 s; the write timeout is 0.5 s
                if not gateway.engine.router.stats()[1].in_flight:
                    break
                await asyncio.sleep(0.1)
            assert [s.in_flight for s in gateway.engine.router.stats()] == [0, 0]
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                while await stream.read() != grpc.aio.EOF:
                    pass
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "read nothing for 0.5s" in (caught.value.details() or "")
    finally:
        await gateway.stop(0)


async def test_one_address_may_hold_only_so_many_calls(upstream: MockOpenAI) -> None:
    upstream.chunk_delay_s = 0.2
    text = "server: {clients: {max_calls_per_peer: 2}}\n" + config(upstream)
    gateway = Gateway(parse_config(text), "127.0.0.1:0", environ={"MOCK_KEY": "sk-test"})
    await gateway.start()
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") for _ in range(3)]
    try:
        stubs = [pb_grpc.GatewayStub(channel) for channel in channels]
        held = [stubs[i].ChatStream(chat_request(text="a b c")) for i in range(2)]
        for stream in held:
            assert (await stream.read()).HasField("start")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stubs[2].Chat(chat_request())
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        (info,) = status_details(caught.value)
        assert isinstance(info, error_details_pb2.ErrorInfo) and info.reason == "TOO_MANY_CALLS"
        for stream in held:
            while await stream.read() != grpc.aio.EOF:
                pass
        assert (await stubs[2].Chat(chat_request(model="echo"))).message.content
    finally:
        for channel in channels:
            await channel.close()
        await gateway.stop(0)


async def test_a_full_connection_pool_is_the_gateways_limit_not_the_deployments_failure(
    upstream: MockOpenAI, second_upstream: MockOpenAI
) -> None:
    """mock-0 has one connection, held by a slow stream. Other calls wait 0.2 s for it, then go
    on to mock-1; mock-0 is charged with no failure, so its circuit never opens over it (before,
    every such wait was a timeout counted against it)."""
    upstream.chunk_delay_s = 0.3
    text = config(upstream, second_upstream).replace(
        "      - id: mock-0\n", "      - id: mock-0\n        max_connections: 1\n        pool_wait_s: 0.2\n"
    )
    gateway = Gateway(parse_config(text), "127.0.0.1:0", environ={"MOCK_KEY": "sk-test"})
    await gateway.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            stub = pb_grpc.GatewayStub(channel)
            holder = stub.ChatStream(chat_request(text="one two three four five six"))
            assert (await holder.read()).start.served.deployment == "mock-0"
            for _ in range(6):  # more than the 5 failures that would open mock-0's circuit
                answer = await stub.Chat(chat_request())
                assert answer.served.deployment == "mock-1"
                assert [(a.deployment, a.outcome) for a in answer.attempts[:1]] == [("mock-0", pb.OUTCOME_OVERLOADED)]
                assert "connections to the deployment stayed busy" in answer.attempts[0].error_message
            mock0 = next(s for s in gateway.engine.router.stats() if s.deployment == "mock-0")
            assert (mock0.failures, mock0.state) == (0, "closed")
            while await holder.read() != grpc.aio.EOF:
                pass
            assert (await stub.Chat(chat_request())).served.deployment == "mock-0"
    finally:
        await gateway.stop(0)


async def test_a_client_within_the_stream_limit_is_never_refused() -> None:
    """A connection may carry max_streams_per_connection calls at once, and a client that keeps
    to that limit (grpc queues its calls beyond it) must get every call through. grpc's default
    counted streams until their memory was freed, which a busy worker does late, and refused
    (REFUSED_STREAM, UNAVAILABLE) calls within the limit."""
    text = "server: {clients: {max_streams_per_connection: 4}}\n" + ECHO_ONLY
    gateway = Gateway(parse_config(text), "127.0.0.1:0", environ={})
    await gateway.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            stub = pb_grpc.GatewayStub(channel)
            request = pb.RouteRequest(model="echo", input_tokens=10)

            async def calls(count: int) -> list[grpc.StatusCode]:
                codes = []
                for _ in range(count):
                    try:
                        await stub.Route(request, timeout=10)
                        codes.append(grpc.StatusCode.OK)
                    except grpc.aio.AioRpcError as error:
                        codes.append(error.code())
                return codes

            results = await asyncio.gather(*(calls(100) for _ in range(16)))
        codes = [code for codes in results for code in codes]
        assert codes.count(grpc.StatusCode.OK) == len(codes) == 1600, {c: codes.count(c) for c in set(codes)}
    finally:
        await gateway.stop(0)
