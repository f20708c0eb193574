"""End to end: a real gateway on loopback, called through the generated stubs, against mock upstreams."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.api.switchboard.v1 import gateway_pb2 as pb
from service.api.switchboard.v1 import gateway_pb2_grpc as pb_grpc
from service.config import parse_config
from service.server import Gateway
from tests.conftest import StartGateway, status_details
from tests.mock_openai import Fault, MockOpenAI


def config(*upstreams: MockOpenAI, strategy: str = "priority", context_window: int = 8192, timeout_s: float = 5) -> str:
    """An echo group plus a `chat` group of one OpenAI-compatible deployment per mock, in priority order."""
    deployments = "".join(
        f"""
      - id: mock-{i}
        type: openai_compatible
        model: mock-model-{i}
        base_url: {mock.base_url}
        api_key_env: MOCK_KEY
        region: eu
        context_window: {context_window}
        priority: {i}
        timeout_s: {timeout_s}
        input_price_per_mtok: 1.0
        output_price_per_mtok: 2.0"""
        for i, mock in enumerate(upstreams)
    )
    chat_group = f"""
  - name: chat
    strategy: {strategy}
    deployments:{deployments}
"""
    return f"""
default_group: echo
model_groups:
  - name: echo
    deployments:
      - id: echo
        type: echo
        model: echo
        region: local
        context_window: 100000
{chat_group if upstreams else ""}"""


def user(text: str) -> pb.Message:
    return pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text=text)])


def chat_request(model: str = "chat", text: str = "hello there", **params: object) -> pb.ChatRequest:
    return pb.ChatRequest(model=model, messages=[user(text)], params=pb.GenerationParams(**params))  # type: ignore[arg-type]


async def collect(
    stream: grpc.aio.UnaryStreamCall[pb.ChatRequest, pb.ChatStreamResponse],
) -> list[pb.ChatStreamResponse]:
    return [event async for event in stream]


async def test_echo_answers_offline(start_gateway: StartGateway) -> None:
    stub = await start_gateway(config())
    response = await stub.Chat(chat_request(model="auto", text="ping pong"))
    assert response.message.content[0].text == "ping pong"
    assert response.served.deployment == "echo"
    assert response.served.model_group == "echo"
    assert response.finish_reason == pb.FINISH_REASON_STOP
    assert [a.outcome for a in response.attempts] == [pb.OUTCOME_OK]
    assert len(response.id) == 32


async def test_chat_through_openai_compatible_upstream(start_gateway: StartGateway, upstream: MockOpenAI) -> None:
    stub = await start_gateway(config(upstream))
    response = await stub.Chat(chat_request(text="what is up", temperature=0.5, max_tokens=50, stop=["\n"]))
    assert response.message.role == pb.ROLE_ASSISTANT
    assert response.message.content[0].text == "mock: what is up"
    assert response.served == pb.Served(
        model_group="chat", deployment="mock-0", provider="openai_compatible", provider_model="mock-model-0"
    )
    assert response.usage.output_tokens == 4
    assert response.usage.total_tokens == response.usage.input_tokens + 4
    expected_cost = (response.usage.input_tokens * 1.0 + 4 * 2.0) / 1e6
    assert response.cost_usd == pytest.approx(expected_cost)
    assert response.provider_request_id == "chatcmpl-mock1"
    sent = upstream.requests[-1]
    assert sent["model"] == "mock-model-0"
    assert sent["temperature"] == 0.5 and sent["max_tokens"] == 50 and sent["stop"] == ["\n"]
    assert sent["messages"] == [{"role": "user", "content": "what is up"}]
    assert "stream" not in sent


async def test_max_tokens_truncates_with_length_finish(start_gateway: StartGateway, upstream: MockOpenAI) -> None:
    stub = await start_gateway(config(upstream))
    response = await stub.Chat(chat_request(text="one two three four", max_tokens=2))
    assert response.message.content[0].text == "mock: one"
    assert response.finish_reason == pb.FINISH_REASON_LENGTH


async def test_stream_names_deployment_first_and_usage_last(start_gateway: StartGateway, upstream: MockOpenAI) -> None:
    stub = await start_gateway(config(upstream))
    events = await collect(stub.ChatStream(chat_request(text="stream me please")))
    kinds = [event.WhichOneof("event") for event in events]
    assert kinds[0] == "start" and kinds[-1] == "end"
    assert len(kinds) > 2 and set(kinds[1:-1]) == {"delta"}
    assert events[0].start.served.deployment == "mock-0"
    assert "".join(e.delta.text for e in events[1:-1]) == "mock: stream me please"
    end = events[-1].end
    assert end.finish_reason == pb.FINISH_REASON_STOP
    assert end.usage.output_tokens == 4
    assert end.cost_usd > 0
    assert [a.outcome for a in end.attempts] == [pb.OUTCOME_OK]
    assert upstream.requests[-1]["stream_options"] == {"include_usage": True}


async def test_echo_streams_word_by_word(start_gateway: StartGateway) -> None:
    stub = await start_gateway(config())
    events = await collect(stub.ChatStream(chat_request(model="echo", text="a b c")))
    assert [e.delta.text for e in events[1:-1]] == ["a ", "b ", "c"]
    assert events[-1].end.usage.output_tokens == 3


async def test_unary_falls_back_to_next_deployment(
    start_gateway: StartGateway, upstream: MockOpenAI, second_upstream: MockOpenAI
) -> None:
    upstream.fault = Fault(status=500)
    stub = await start_gateway(config(upstream, second_upstream))
    response = await stub.Chat(chat_request(text="hi"))
    assert response.message.content[0].text == "second: hi"
    assert response.served.deployment == "mock-1"
    assert [(a.deployment, a.outcome) for a in response.attempts] == [
        ("mock-0", pb.OUTCOME_SERVER_ERROR),
        ("mock-1", pb.OUTCOME_OK),
    ]
    assert response.attempts[0].upstream_status == 500


@pytest.mark.parametrize(
    "fault",
    [
        Fault(status=503),
        Fault(status=429, headers={"Retry-After": "3"}),
        Fault(malformed_after=0),
        Fault(cut_after=0),
        Fault(error_event_after=0),
    ],
    # A context-window overflow falls back only to a larger window: tests/test_retries.py.
    ids=["503", "429", "malformed-chunk", "cut-before-content", "error-event"],
)
async def test_stream_falls_back_before_first_content(
    start_gateway: StartGateway, upstream: MockOpenAI, second_upstream: MockOpenAI, fault: Fault
) -> None:
    upstream.fault = fault
    stub = await start_gateway(config(upstream, second_upstream))
    events = await collect(stub.ChatStream(chat_request(text="hi you")))
    start = events[0].start
    assert start.served.deployment == "mock-1"
    assert [a.deployment for a in start.failed_attempts] == ["mock-0"]
    assert "".join(e.delta.text for e in events if e.HasField("delta")) == "second: hi you"
    assert [a.outcome for a in events[-1].end.attempts][-1] == pb.OUTCOME_OK


async def test_stream_cut_after_content_ends_with_error_not_ok(
    start_gateway: StartGateway, upstream: MockOpenAI, second_upstream: MockOpenAI
) -> None:
    upstream.fault = Fault(cut_after=2)
    stub = await start_gateway(config(upstream, second_upstream))
    received: list[pb.ChatStreamResponse] = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for event in stub.ChatStream(chat_request(text="one two three four")):
            received.append(event)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    deltas = [e.delta.text for e in received if e.HasField("delta")]
    assert received[0].HasField("start") and len(received) == 1 + len(deltas)
    assert "".join(deltas) == "mock: one"
    assert f"after {len(deltas)} content deltas" in (caught.value.details() or "")
    info, log = status_details(caught.value)
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert info.reason == "STREAM_INTERRUPTED" and info.metadata["deployment"] == "mock-0"
    assert isinstance(log, pb.AttemptLog)
    assert [(a.deployment, a.outcome) for a in log.attempts] == [("mock-0", pb.OUTCOME_PROTOCOL_ERROR)]
    assert not second_upstream.requests, "a stream must not fall back once content was sent"


async def test_all_deployments_failing_names_every_attempt(
    start_gateway: StartGateway, upstream: MockOpenAI, second_upstream: MockOpenAI
) -> None:
    upstream.fault = Fault(status=502)
    second_upstream.fault = Fault(status=503)
    stub = await start_gateway(config(upstream, second_upstream))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Chat(chat_request())
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    info, log = status_details(caught.value)
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert info.reason == "UPSTREAM_FAILED"
    assert info.metadata == {"attempt.0": "mock-0 OUTCOME_SERVER_ERROR", "attempt.1": "mock-1 OUTCOME_OVERLOADED"}
    assert isinstance(log, pb.AttemptLog)
    assert [(a.deployment, a.upstream_status) for a in log.attempts] == [("mock-0", 502), ("mock-1", 503)]


async def test_rate_limited_everywhere_is_resource_exhausted_with_retry_info(
    start_gateway: StartGateway, upstream: MockOpenAI, second_upstream: MockOpenAI
) -> None:
    upstream.fault = Fault(status=429, headers={"Retry-After": "7"})
    second_upstream.fault = Fault(status=429, headers={"retry-after-ms": "2500"})
    stub = await start_gateway(config(upstream, second_upstream))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Chat(chat_request())
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    retry = next(d for d in status_details(caught.value) if isinstance(d, error_details_pb2.RetryInfo))
    assert retry.retry_delay.ToMilliseconds() == 2500


async def test_bad_request_upstream_fails_without_fallback(
    start_gateway: StartGateway, upstream: MockOpenAI, second_upstream: MockOpenAI
) -> None:
    upstream.fault = Fault(status=400, message="Invalid 'seed'")
    stub = await start_gateway(config(upstream, second_upstream))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Chat(chat_request())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Invalid 'seed'" in (caught.value.details() or "")
    assert not second_upstream.requests


async def test_client_deadline_bounds_a_hanging_upstream(start_gateway: StartGateway, upstream: MockOpenAI) -> None:
    upstream.fault = Fault(hang_s=30)
    stub = await start_gateway(config(upstream))
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Chat(chat_request(), timeout=0.5)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 2.0


async def test_deployment_timeout_falls_back(
    start_gateway: StartGateway, upstream: MockOpenAI, second_upstream: MockOpenAI
) -> None:
    upstream.fault = Fault(hang_s=30)
    stub = await start_gateway(config(upstream, second_upstream, timeout_s=0.3))
    response = await stub.Chat(chat_request(text="late"))
    assert response.served.deployment == "mock-1"
    assert response.attempts[0].outcome == pb.OUTCOME_TIMEOUT


def unknown(number: int) -> Any:
    """An enum number the enum does not name, as a newer (or hostile) client may send."""
    return number


def with_fields(**fields: object) -> pb.ChatRequest:
    request = chat_request()
    for name, value in fields.items():
        getattr(request, name).CopyFrom(value)
    return request


def with_image(url: str) -> pb.ChatRequest:
    request = chat_request()
    request.messages[0].content.add(image=pb.ImagePart(url=url))
    return request


def with_nested_tool_arguments(depth: int) -> pb.ChatRequest:
    """A tool call whose arguments nest deeper than a JSON decoder recurses."""
    call = pb.ToolCall(id="c1", name="lookup", arguments="[" * depth + "]" * depth)
    return pb.ChatRequest(
        model="chat",
        messages=[
            user("look it up"),
            pb.Message(role=pb.ROLE_ASSISTANT, tool_calls=[call]),
            pb.Message(role=pb.ROLE_TOOL, tool_call_id="c1", content=[pb.ContentPart(text="found")]),
        ],
    )


@pytest.mark.parametrize(
    ("request_", "field", "says"),
    [
        (pb.ChatRequest(model="chat"), "messages", "at least one message"),
        (pb.ChatRequest(messages=[user("x")]), "model", "required"),
        (chat_request(max_tokens=-5), "params.max_tokens", "must be positive, got -5"),
        (chat_request(temperature=3.5), "params.temperature", "between 0 and 2"),
        (
            pb.ChatRequest(model="chat", messages=[pb.Message(content=[pb.ContentPart(text="x")])]),
            "messages[0].role",
            "required",
        ),
        (pb.ChatRequest(model="chat", messages=[pb.Message(role=pb.ROLE_USER)]), "messages[0].content", "at least one"),
        (chat_request(model="nope"), "model", "unknown model group 'nope'; known groups: chat, echo"),
        (with_fields(response_format=pb.ResponseFormat(type=unknown(99))), "response_format.type", "unknown value 99"),
        (with_fields(tool_choice=pb.ToolChoice(mode=unknown(42))), "tool_choice.mode", "unknown value 42"),
        (with_fields(routing=pb.RoutingHints(preference=unknown(7))), "routing.preference", "unknown value 7"),
        (with_image("file:///etc/passwd"), "messages[0].content[1].image.url", "http, https or data: URL"),
        (with_image("javascript:alert(1)"), "messages[0].content[1].image.url", "http, https or data: URL"),
        (with_image("data:image/png;base64,%%%"), "messages[0].content[1].image.url", "a data: URL must be"),
        (with_image("data:text/html;base64,AAAA"), "messages[0].content[1].image.url", "a data: URL must be"),
        (with_nested_tool_arguments(100_000), "messages[1].tool_calls[0].arguments", "must be a JSON object"),
    ],
    ids=[
        "no-messages",
        "no-model",
        "negative-max-tokens",
        "temperature",
        "no-role",
        "no-content",
        "unknown-group",
        "unknown-response-format",
        "unknown-tool-choice-mode",
        "unknown-preference",
        "file-url",
        "javascript-url",
        "bad-base64",
        "not-an-image",
        "deeply-nested-arguments",
    ],
)
async def test_bad_input_is_invalid_argument_naming_the_field(
    start_gateway: StartGateway, upstream: MockOpenAI, request_: pb.ChatRequest, field: str, says: str
) -> None:
    stub = await start_gateway(config(upstream))
    for call in (stub.Chat(request_), collect(stub.ChatStream(request_))):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        (bad_request,) = status_details(caught.value)
        assert isinstance(bad_request, error_details_pb2.BadRequest)
        violations = {v.field: v.description for v in bad_request.field_violations}
        assert says in violations[field]
    assert not upstream.requests


async def test_route_explains_candidates_and_rejections(
    start_gateway: StartGateway, upstream: MockOpenAI, second_upstream: MockOpenAI
) -> None:
    stub = await start_gateway(config(upstream, second_upstream))
    decision = await stub.Route(pb.RouteRequest(model="chat", messages=[user("hi")], max_output_tokens=100))
    assert decision.model_group == "chat" and decision.strategy == "priority"
    assert [c.deployment for c in decision.candidates] == ["mock-0", "mock-1"]
    assert decision.candidates[0].score > decision.candidates[1].score
    assert decision.candidates[0].provider == "openai_compatible" and decision.candidates[0].region == "eu"
    assert decision.input_tokens > 0

    too_long = await stub.Route(pb.RouteRequest(model="chat", input_tokens=9000))
    assert not too_long.candidates
    assert {(r.deployment, r.filter) for r in too_long.rejected} == {
        ("mock-0", "context_window"),
        ("mock-1", "context_window"),
    }

    residency = await stub.Route(pb.RouteRequest(model="chat", routing=pb.RoutingHints(allowed_regions=["us"])))
    assert not residency.candidates and {r.filter for r in residency.rejected} == {"region"}
    assert not upstream.requests and not second_upstream.requests


async def test_a_cost_preference_orders_the_cheapest_first(
    start_gateway: StartGateway, upstream: MockOpenAI, second_upstream: MockOpenAI
) -> None:
    """mock-0 comes first by priority; made the dearer one, it comes last when the client
    prefers cost, for Route and for Chat alike."""
    text = config(upstream, second_upstream).replace("input_price_per_mtok: 1.0", "input_price_per_mtok: 9.0", 1)
    stub = await start_gateway(text)
    cost = pb.RoutingHints(preference=pb.PREFERENCE_COST)
    decision = await stub.Route(pb.RouteRequest(model="chat", input_tokens=1000, routing=cost))
    assert decision.strategy == "lowest_cost"
    assert [c.deployment for c in decision.candidates] == ["mock-1", "mock-0"]
    request = chat_request()
    request.routing.CopyFrom(cost)
    assert (await stub.Chat(request)).served.deployment == "mock-1"
    assert (await stub.Chat(chat_request())).served.deployment == "mock-0"


async def test_no_eligible_deployment_is_failed_precondition(start_gateway: StartGateway, upstream: MockOpenAI) -> None:
    stub = await start_gateway(config(upstream))
    request = chat_request()
    request.routing.required_capabilities.append("vision")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Chat(request)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    (info,) = status_details(caught.value)
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert info.reason == "NO_ELIGIBLE_DEPLOYMENT" and "vision" in info.metadata["rejected.mock-0"]


async def test_list_models(start_gateway: StartGateway, upstream: MockOpenAI) -> None:
    stub = await start_gateway(config(upstream))
    models = await stub.ListModels(pb.ListModelsRequest())
    assert models.default_group == "echo"
    groups = {g.name: g for g in models.model_groups}
    assert set(groups) == {"echo", "chat"}
    (mock,) = groups["chat"].deployments
    assert mock.id == "mock-0" and mock.provider == "openai_compatible" and mock.provider_model == "mock-model-0"
    assert mock.context_window == 8192 and mock.price.output_per_mtok == 2.0 and mock.region == "eu"


async def test_graceful_shutdown_finishes_in_flight_calls(upstream: MockOpenAI) -> None:
    upstream.chunk_delay_s = 0.1
    gateway = Gateway(parse_config(config(upstream)), "127.0.0.1:0", environ={"MOCK_KEY": "k"})
    await gateway.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}")
    stub = pb_grpc.GatewayStub(channel)
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
    in_flight = asyncio.ensure_future(collect(stub.ChatStream(chat_request(text="a b c d e"))))
    await asyncio.sleep(0.15)
    stopping = asyncio.ensure_future(gateway.stop(5))
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
    events = await in_flight
    assert events[-1].HasField("end"), "the in-flight stream must complete during the grace period"
    assert "".join(e.delta.text for e in events if e.HasField("delta")) == "mock: a b c d e"
    await stopping
    await channel.close()


async def test_a_taken_port_is_an_error_not_a_shared_listener() -> None:
    first = Gateway(parse_config(config()), "127.0.0.1:0", environ={})
    await first.start()
    with pytest.raises(OSError, match="cannot listen on"):
        Gateway(parse_config(config()), f"127.0.0.1:{first.port}", environ={})
    await first.stop(0)


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
async def test_server_reflection_answers_in_both_versions(version: str) -> None:
    """Tools that speak only grpc.reflection.v1 (or only v1alpha) list and describe the services."""
    from grpc_reflection.v1alpha import reflection_pb2

    gateway = Gateway(parse_config(config()), "127.0.0.1:0", environ={})
    await gateway.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            info = channel.stream_stream(
                f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
                request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
            )
            requests = [
                reflection_pb2.ServerReflectionRequest(list_services=""),
                reflection_pb2.ServerReflectionRequest(file_containing_symbol="switchboard.v1.Gateway"),
            ]
            listed, described = [answer async for answer in info(iter(requests))]
    finally:
        await gateway.stop(0)
    names = {service.name for service in listed.list_services_response.service}
    assert {"switchboard.v1.Gateway", "grpc.reflection.v1.ServerReflection"} <= names
    assert described.file_descriptor_response.file_descriptor_proto


async def test_the_gateways_deadline_error_reaches_the_client_before_its_own_timer(
    start_gateway: StartGateway, upstream: MockOpenAI
) -> None:
    """With the default 50 ms margin the client gets the gateway's DEADLINE_EXCEEDED, with the
    attempt log, rather than its own timer's bare one."""
    upstream.fault = Fault(hang_s=30)
    stub = await start_gateway(config(upstream))
    for _ in range(5):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Chat(chat_request(), timeout=0.4)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        log = [d for d in status_details(caught.value) if isinstance(d, pb.AttemptLog)]
        assert [a.outcome for a in log[0].attempts] == [pb.OUTCOME_TIMEOUT]
