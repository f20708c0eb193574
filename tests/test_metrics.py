"""/metrics after known traffic, read with Prometheus's own text parser: exact counts per
deployment, outcome, method and status."""

from __future__ import annotations

import aiohttp
import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.api.switchboard.v1 import gateway_pb2_grpc as pb_grpc
from tests.conftest import StartServer
from tests.mock_openai import Fault, MockOpenAI
from tests.otlp_receiver import OtlpReceiver
from tests.test_e2e import chat_request, config

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(port: int) -> Samples:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum over the samples of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, found), v in samples.items() if n == name and wanted <= found)


async def test_metrics_count_calls_and_attempts_exactly(
    upstream: MockOpenAI, second_upstream: MockOpenAI, start_server: StartServer
) -> None:
    gateway = await start_server("telemetry: {metrics_listen: '127.0.0.1:0'}\n" + config(upstream, second_upstream))
    assert gateway.metrics is not None
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            stub = pb_grpc.GatewayStub(channel)
            for _ in range(3):
                await stub.Chat(chat_request())
            upstream.fault = Fault(status=500)
            for _ in range(2):
                await stub.Chat(chat_request())
            upstream.fault = None
            [event async for event in stub.ChatStream(chat_request(text="a b c"))]
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.Chat(chat_request(model="no-such-model"))
        samples = await scrape(gateway.metrics.port)
    finally:
        await gateway.stop(0)

    calls = "switchboard_calls_total"
    assert value(samples, calls, rpc_method="Chat", rpc_grpc_status_code="OK", switchboard_model_group="chat") == 5
    assert value(samples, calls, rpc_method="ChatStream", rpc_grpc_status_code="OK") == 1
    assert value(samples, calls, rpc_method="Chat", rpc_grpc_status_code="INVALID_ARGUMENT") == 1
    chat = {"rpc_method": "Chat", "switchboard_model_group": "chat"}
    assert value(samples, "switchboard_fallbacks_total", **chat) == 2, "mock-0's two 500s fell back to mock-1"
    assert value(samples, "switchboard_retries_total", **chat) == 0
    assert value(samples, "switchboard_hedges_total", **chat) == 0
    assert value(samples, "switchboard_attempts_total", switchboard_outcome="server_error") == 2
    assert value(samples, "switchboard_call_duration_seconds_count", **chat) == 5
    attempts = "gen_ai_client_operation_duration_seconds_count"
    assert value(samples, attempts, switchboard_deployment="mock-0") == 6
    assert value(samples, attempts, switchboard_deployment="mock-0", error_type="server_error") == 2
    assert value(samples, attempts, switchboard_deployment="mock-1", gen_ai_provider_name="openai") == 2
    tokens = "gen_ai_client_token_usage_count"
    assert value(samples, tokens, gen_ai_token_type="output") == 6
    assert value(samples, "switchboard_time_to_first_token_seconds_count", switchboard_deployment="mock-0") == 1
    assert value(samples, "switchboard_cost_USD_total") > 0
    assert value(samples, "switchboard_deployment_in_flight", switchboard_deployment="mock-0") == 0
    assert (
        value(samples, "switchboard_deployment_circuit", switchboard_deployment="mock-0", switchboard_circuit="closed")
        == 1
    )
    assert value(samples, "switchboard_deployment_rate_limit_headroom", switchboard_deployment="mock-1") == 1


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
async def test_metrics_are_pushed_over_otlp_when_asked(
    upstream: MockOpenAI, protocol: str, start_server: StartServer
) -> None:
    receiver = await OtlpReceiver().start()
    port = receiver.port if protocol == "grpc" else receiver.http_port
    telemetry = (
        f"telemetry: {{otlp_endpoint: '127.0.0.1:{port}', otlp_protocol: {protocol}, metrics_push_interval_s: 60}}\n"
    )
    gateway = await start_server(telemetry + config(upstream))
    assert gateway.metrics is not None and gateway.metrics.where is None, "no /metrics unless metrics_listen"
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            for _ in range(4):
                await pb_grpc.GatewayStub(channel).Chat(chat_request())
    finally:
        await gateway.stop(0)  # pushes what is left
        await receiver.stop()
    calls = [m for m in receiver.metrics if m.name == "switchboard.calls"]
    assert sum(point.as_int for m in calls for point in m.sum.data_points) == 4
    durations = [m for m in receiver.metrics if m.name == "gen_ai.client.operation.duration"]
    assert sum(point.count for m in durations for point in m.histogram.data_points) == 4
    assert durations[0].unit == "s"
