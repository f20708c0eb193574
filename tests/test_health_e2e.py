"""Health and budgets over gRPC: a failing deployment's circuit opens and traffic goes around it,
a provider's 429 cools a deployment down for its Retry-After, and the gateway's own rpm budget
sends requests elsewhere, or back to the client as RESOURCE_EXHAUSTED with RetryInfo."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2

from service.api.switchboard.v1 import gateway_pb2 as pb
from tests.conftest import StartGateway, status_details
from tests.mock_openai import Fault, MockOpenAI
from tests.test_e2e import chat_request, config


def with_rpm(config_yaml: str, deployment: str, rpm: int) -> str:
    return config_yaml.replace(f"      - id: {deployment}\n", f"      - id: {deployment}\n        rpm: {rpm}\n")


async def test_consecutive_failures_open_the_circuit(
    start_gateway: StartGateway, upstream: MockOpenAI, second_upstream: MockOpenAI
) -> None:
    upstream.fault = Fault(status=500)
    stub = await start_gateway(config(upstream, second_upstream))
    for _ in range(5):
        answer = await stub.Chat(chat_request())
        assert [a.deployment for a in answer.attempts] == ["mock-0", "mock-1"]
    assert len(upstream.requests) == 5

    answer = await stub.Chat(chat_request())
    assert [a.deployment for a in answer.attempts] == ["mock-1"], "the open circuit is not tried"
    assert len(upstream.requests) == 5
    explained = await stub.Route(pb.RouteRequest(model="chat"))
    (rejection,) = explained.rejected
    assert (rejection.deployment, rejection.filter) == ("mock-0", "health")
    assert rejection.detail.startswith("circuit open for another")


async def test_a_429_cools_the_deployment_down_for_its_retry_after(
    start_gateway: StartGateway, upstream: MockOpenAI, second_upstream: MockOpenAI
) -> None:
    upstream.fault = Fault(status=429, headers={"Retry-After": "30"})
    stub = await start_gateway(config(upstream, second_upstream))
    first = await stub.Chat(chat_request())
    assert [a.outcome for a in first.attempts] == [pb.OUTCOME_RATE_LIMITED, pb.OUTCOME_OK]
    second = await stub.Chat(chat_request())
    assert [a.deployment for a in second.attempts] == ["mock-1"]
    assert len(upstream.requests) == 1

    second_upstream.fault = Fault(status=429, headers={"Retry-After": "12"})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Chat(chat_request())
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(grpc.aio.AioRpcError) as cooling:
        await stub.Chat(chat_request())
    assert cooling.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    info, retry = status_details(cooling.value)
    assert isinstance(info, error_details_pb2.ErrorInfo) and info.reason == "RATE_LIMITED"
    assert isinstance(retry, error_details_pb2.RetryInfo)
    assert 11_000 < retry.retry_delay.ToMilliseconds() <= 12_000, "the earlier of the two cool-downs"
    assert (len(upstream.requests), len(second_upstream.requests)) == (1, 3)


async def test_the_gateway_s_own_budget_moves_traffic_then_refuses_it(
    start_gateway: StartGateway, upstream: MockOpenAI, second_upstream: MockOpenAI
) -> None:
    limited = with_rpm(with_rpm(config(upstream, second_upstream), "mock-0", 1), "mock-1", 1)
    stub = await start_gateway(limited)
    assert (await stub.Chat(chat_request())).served.deployment == "mock-0"
    assert (await stub.Chat(chat_request())).served.deployment == "mock-1"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Chat(chat_request())
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    _, retry = status_details(caught.value)
    assert isinstance(retry, error_details_pb2.RetryInfo)
    assert 59_000 < retry.retry_delay.ToMilliseconds() <= 60_000
    assert (len(upstream.requests), len(second_upstream.requests)) == (1, 1)
