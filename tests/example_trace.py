"""Prints the trace of one Chat that falls back, as an OTLP receiver gets it: the README's example.

    .venv/bin/python -m tests.example_trace

Two mock OpenAI upstreams on loopback, the first answering 500; a gateway exporting to the test
receiver (tests/otlp_receiver.py); one Chat carrying a caller's traceparent."""

from __future__ import annotations

import asyncio

import grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from service.api.switchboard.v1 import gateway_pb2_grpc as pb_grpc
from service.config import parse_config
from service.server import Gateway
from tests.mock_openai import Fault, MockOpenAI
from tests.otlp_receiver import OtlpReceiver, attributes
from tests.test_e2e import chat_request, config

# The caller's trace context (W3C's example ids).
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"


async def main() -> None:
    first, second = await MockOpenAI().start(), await MockOpenAI(reply_prefix="second: ").start()
    receiver = await OtlpReceiver().start()
    first.fault = Fault(status=500)
    traced = f"telemetry: {{otlp_endpoint: '127.0.0.1:{receiver.port}'}}\n" + config(first, second)
    gateway = Gateway(parse_config(traced), "127.0.0.1:0", environ={"MOCK_KEY": "sk-test"})
    await gateway.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            metadata = (("traceparent", f"00-{TRACE_ID}-{CALLER_SPAN}-01"),)
            await pb_grpc.GatewayStub(channel).Chat(chat_request(), metadata=metadata)
    finally:
        await gateway.stop(0)
        for server in (receiver, first, second):
            await server.stop()
    by_parent: dict[bytes, list[trace_pb2.Span]] = {}
    for span in receiver.spans:
        by_parent.setdefault(span.parent_span_id, []).append(span)

    def show(parent: bytes, depth: int) -> None:
        for span in sorted(by_parent.get(parent, []), key=lambda s: s.start_time_unix_nano):
            took_ms = (span.end_time_unix_nano - span.start_time_unix_nano) / 1e6
            kind = "server" if span.kind == trace_pb2.Span.SPAN_KIND_SERVER else "client"
            print(f"{'  ' * depth}{span.name} ({kind}, {took_ms:.1f} ms)")
            for key, value in sorted(attributes(span).items()):
                print(f"{'  ' * depth}    {key} = {value!r}")
            show(span.span_id, depth + 1)

    print(f"trace {TRACE_ID}, under the caller's span {CALLER_SPAN}")
    show(bytes.fromhex(CALLER_SPAN), 0)


if __name__ == "__main__":
    asyncio.run(main())
