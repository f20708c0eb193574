"""Traces exported over OTLP to a real receiver: one server span per call, one client span per
attempt under it, the caller's trace context continued and sent on to the provider."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from opentelemetry.proto.trace.v1 import trace_pb2

from service.api.switchboard.v1 import gateway_pb2_grpc as pb_grpc
from tests import example_trace
from tests.conftest import StartServer
from tests.example_trace import CALLER_SPAN, TRACE_ID
from tests.mock_openai import Fault, MockOpenAI
from tests.otlp_receiver import OtlpReceiver, attributes
from tests.test_e2e import chat_request, config

PROMPT = "the quarterly numbers, privately"


@pytest.fixture
async def receiver() -> AsyncIterator[OtlpReceiver]:
    receiver = await OtlpReceiver().start()
    yield receiver
    await receiver.stop()


async def traced_chat(
    start_server: StartServer, yaml: str, receiver: OtlpReceiver, *, stream: bool = False, http: bool = False
) -> tuple[list[trace_pb2.Span], str]:
    """One call through a gateway exporting to `receiver` (over OTLP/gRPC, or HTTP), with the
    caller's traceparent; the spans it exported (the gateway stopped, so all of them) and the
    response id."""
    if http:
        telemetry = f"{{otlp_endpoint: '127.0.0.1:{receiver.http_port}', otlp_protocol: http/protobuf}}"
    else:
        telemetry = f"{{otlp_endpoint: '127.0.0.1:{receiver.port}'}}"
    gateway = await start_server(f"telemetry: {telemetry}\n" + yaml)
    metadata = (("traceparent", f"00-{TRACE_ID}-{CALLER_SPAN}-01"),)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            stub = pb_grpc.GatewayStub(channel)
            if stream:
                events = [e async for e in stub.ChatStream(chat_request(text=PROMPT), metadata=metadata)]
                request_id = events[0].start.id
            else:
                request_id = (await stub.Chat(chat_request(text=PROMPT), metadata=metadata)).id
    finally:
        await gateway.stop(0)
    return receiver.spans, request_id


async def test_a_fallback_is_one_server_span_over_one_client_span_per_attempt(
    upstream: MockOpenAI, second_upstream: MockOpenAI, receiver: OtlpReceiver, start_server: StartServer
) -> None:
    upstream.fault = Fault(status=500)
    spans, request_id = await traced_chat(start_server, config(upstream, second_upstream), receiver)
    (server,) = [s for s in spans if s.kind == trace_pb2.Span.SPAN_KIND_SERVER]
    attempts = sorted(
        (s for s in spans if s.kind == trace_pb2.Span.SPAN_KIND_CLIENT), key=lambda s: s.start_time_unix_nano
    )
    assert len(spans) == 3 and len(attempts) == 2
    assert (server.trace_id.hex(), server.parent_span_id.hex()) == (TRACE_ID, CALLER_SPAN), "the caller's trace"
    assert all(a.trace_id == server.trace_id and a.parent_span_id == server.span_id for a in attempts)
    assert server.name == "chat chat"
    call = attributes(server)
    assert {k: call[k] for k in ("gen_ai.operation.name", "gen_ai.request.model", "gen_ai.response.model")} == {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "chat",
        "gen_ai.response.model": "mock-model-1",
    }
    assert call["switchboard.request_id"] == request_id
    assert (call["switchboard.deployment"], call["switchboard.attempts"]) == ("mock-1", 2)
    assert call["switchboard.route.candidates"] == ["mock-0", "mock-1"]
    assert call["gen_ai.response.finish_reasons"] == ["stop"]
    assert call["gen_ai.usage.output_tokens"] > 0  # type: ignore[operator]
    assert "error.type" not in call and server.status.code != trace_pb2.Status.STATUS_CODE_ERROR
    first, second = (attributes(a) for a in attempts)
    assert (first["gen_ai.provider.name"], first["gen_ai.request.model"], first["server.address"]) == (
        "openai",
        "mock-model-0",
        "127.0.0.1",
    )
    assert first["error.type"] == "server_error" and attempts[0].status.code == trace_pb2.Status.STATUS_CODE_ERROR
    assert "error.type" not in second and second["gen_ai.usage.output_tokens"] == call["gen_ai.usage.output_tokens"]
    # Each provider got the trace context of its own attempt.
    for mock, attempt in ((upstream, attempts[0]), (second_upstream, attempts[1])):
        (sent,) = [h["traceparent"] for h in mock.headers if "traceparent" in h]
        assert sent.split("-")[1:3] == [TRACE_ID, attempt.span_id.hex()]
    assert all(PROMPT not in str(value) for span in spans for value in attributes(span).values())


async def test_a_failed_stream_says_why_on_its_span(
    upstream: MockOpenAI, receiver: OtlpReceiver, start_server: StartServer
) -> None:
    upstream.fault = Fault(status=503)
    with pytest.raises(grpc.aio.AioRpcError):
        await traced_chat(start_server, config(upstream), receiver, stream=True)
    (server,) = [s for s in receiver.spans if s.kind == trace_pb2.Span.SPAN_KIND_SERVER]
    assert attributes(server)["error.type"] == "UNAVAILABLE"
    assert server.status.code == trace_pb2.Status.STATUS_CODE_ERROR
    assert receiver.resources[0]["service.name"] == "switchboard"


async def test_spans_go_over_otlp_http_as_well(
    upstream: MockOpenAI, receiver: OtlpReceiver, start_server: StartServer
) -> None:
    spans, request_id = await traced_chat(start_server, config(upstream), receiver, http=True)
    kinds = sorted(span.kind for span in spans)
    assert kinds == sorted([trace_pb2.Span.SPAN_KIND_SERVER, trace_pb2.Span.SPAN_KIND_CLIENT])
    assert {span.trace_id.hex() for span in spans} == {TRACE_ID}
    (server,) = [s for s in spans if s.kind == trace_pb2.Span.SPAN_KIND_SERVER]
    assert attributes(server)["switchboard.request_id"] == request_id


async def test_without_an_endpoint_nothing_is_traced_or_sent_upstream(
    upstream: MockOpenAI, start_server: StartServer
) -> None:
    gateway = await start_server(config(upstream))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            metadata = (("traceparent", f"00-{TRACE_ID}-{CALLER_SPAN}-01"),)
            await pb_grpc.GatewayStub(channel).Chat(chat_request(), metadata=metadata)
    finally:
        await gateway.stop(0)
    assert all("traceparent" not in h for h in upstream.headers)


async def test_a_sample_ratio_of_zero_traces_only_what_the_caller_sampled(
    upstream: MockOpenAI, receiver: OtlpReceiver, start_server: StartServer
) -> None:
    sampled_out = f"telemetry: {{trace_sample_ratio: 0, otlp_endpoint: '127.0.0.1:{receiver.port}'}}\n"
    gateway = await start_server(sampled_out + config(upstream))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            stub = pb_grpc.GatewayStub(channel)
            await stub.Chat(chat_request())  # no traceparent: the ratio decides, and says no
            await stub.Chat(chat_request(), metadata=(("traceparent", f"00-{TRACE_ID}-{CALLER_SPAN}-01"),))
            other_trace = "1" * 32
            await stub.Chat(chat_request(), metadata=(("traceparent", f"00-{other_trace}-{CALLER_SPAN}-00"),))
    finally:
        await gateway.stop(0)
    assert {span.trace_id.hex() for span in receiver.spans} == {TRACE_ID}
    assert len(receiver.spans) == 2
    # The decision travels on: the unsampled call's traceparent says "not sampled" (flag bit 0),
    # and a caller's unsampled trace stays that trace upstream.
    sent = [h["traceparent"].split("-") for h in upstream.headers if "traceparent" in h]
    assert [int(flags, 16) & 1 for *_, flags in sent] == [0, 1, 0]
    assert sent[1][1] == TRACE_ID and sent[2][1] == other_trace


async def test_a_long_model_name_is_bounded_on_the_span(
    upstream: MockOpenAI, receiver: OtlpReceiver, start_server: StartServer
) -> None:
    traced = f"telemetry: {{otlp_endpoint: '127.0.0.1:{receiver.port}'}}\n" + config(upstream)
    gateway = await start_server(traced)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError):
                await pb_grpc.GatewayStub(channel).Chat(chat_request(model="m" * 100_000))
    finally:
        await gateway.stop(0)
    (server,) = receiver.spans
    assert len(server.name) < 300 and len(str(attributes(server)["gen_ai.request.model"])) < 300


async def test_the_readme_example_trace_prints_a_fallback(capsys: pytest.CaptureFixture[str]) -> None:
    await example_trace.main()
    printed = capsys.readouterr().out
    assert "chat chat (server" in printed and "  chat mock-model-0 (client" in printed
    assert "error.type = 'server_error'" in printed and "switchboard.fallbacks = 1" in printed
