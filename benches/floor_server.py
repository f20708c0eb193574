"""The floor of the stack: a grpc.aio server whose handlers do nothing but return prebuilt
answers of the same size as the gateway's, on the same service.

    .venv/bin/python -m benches.floor_server PORT [RECORDED [UPSTREAM_PORT UNARY_BODY STREAM_BODY]]
        [--helper-policy batch]

Benchmarks compare the gateway against it: the difference is what the gateway's own work
(validation, the router call, the upstream call, building the answer) costs. Route answers a
fixed RouteResponse; Chat and ChatStream answer what RECORDED holds (a file of length-prefixed
messages: one ChatResponse, then a stream's ChatStreamResponses, as benches/floor.py records
them from the gateway), so their messages are the gateway's own, byte for byte.

Given an upstream, it is the floor of the whole stack in one process: Chat and ChatStream first
POST the upstream's request (UNARY_BODY, STREAM_BODY: the gateway's, as JSON) with an aiohttp
session set up as the gateway's and read its whole answer, then answer the same recorded
messages (a stream's as the upstream's reads arrive, one message a read, as the gateway
forwards a read's batch of deltas). Measured apart, the grpc.aio server and the aiohttp client
each run with the core's caches to themselves; in one process they share them, as the
gateway's two halves do.
"""

from __future__ import annotations

import argparse
import asyncio
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import uvloop

from service import threads
from service.api.switchboard.v1 import gateway_pb2 as pb
from service.api.switchboard.v1 import gateway_pb2_grpc as pb_grpc

# What the gateway answers for the benchmark's Route request (see benches/rpc.py).
ANSWER = pb.RouteResponse(
    model_group="bench",
    strategy="weighted",
    candidates=[
        pb.RouteCandidate(deployment=f"echo-{i}", score=0.5, provider="echo", provider_model="echo", region="local")
        for i in range(4)
    ],
    input_tokens=12,
)


def write_recorded(path: Path, chat: pb.ChatResponse, stream: list[pb.ChatStreamResponse]) -> None:
    pieces = [message.SerializeToString() for message in (chat, *stream)]
    path.write_bytes(b"".join(struct.pack("<I", len(piece)) + piece for piece in pieces))


def read_recorded(path: Path) -> tuple[pb.ChatResponse, list[pb.ChatStreamResponse]]:
    data, pieces, at = path.read_bytes(), [], 0
    while at < len(data):
        (size,) = struct.unpack_from("<I", data, at)
        pieces.append(data[at + 4 : at + 4 + size])
        at += 4 + size
    return pb.ChatResponse.FromString(pieces[0]), [pb.ChatStreamResponse.FromString(p) for p in pieces[1:]]


class Floor(pb_grpc.GatewayServicer):
    def __init__(self, chat: pb.ChatResponse, stream: list[pb.ChatStreamResponse]) -> None:
        self.chat, self.stream = chat, stream

    async def Route(self, request: pb.RouteRequest, context: Any) -> pb.RouteResponse:  # noqa: N802
        return ANSWER

    async def Chat(self, request: pb.ChatRequest, context: Any) -> pb.ChatResponse:  # noqa: N802
        return self.chat

    async def ChatStream(self, request: pb.ChatRequest, context: Any) -> AsyncIterator[pb.ChatStreamResponse]:  # noqa: N802
        for event in self.stream:
            yield event


@dataclass(frozen=True)
class Upstream:
    """Where the relay sends the gateway's upstream requests, and the requests."""

    port: int
    unary: bytes
    streamed: bytes


class Relay(Floor):
    """The floor, with the upstream call the gateway makes for each chat."""

    def __init__(self, chat: pb.ChatResponse, stream: list[pb.ChatStreamResponse], upstream: Upstream) -> None:
        super().__init__(chat, stream)
        self.url = f"http://127.0.0.1:{upstream.port}/v1/chat/completions"
        self.unary, self.streamed = upstream.unary, upstream.streamed
        self.headers = {"Content-Type": "application/json"}
        self.session: aiohttp.ClientSession | None = None

    def client(self) -> aiohttp.ClientSession:
        if self.session is None:  # made on the loop that serves
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=200, limit_per_host=0),
                timeout=aiohttp.ClientTimeout(total=None, connect=60, sock_connect=10, sock_read=60),
                cookie_jar=aiohttp.DummyCookieJar(),
                read_bufsize=8 * 1024,
            )
        return self.session

    async def Chat(self, request: pb.ChatRequest, context: Any) -> pb.ChatResponse:  # noqa: N802
        async with self.client().post(self.url, data=self.unary, headers=self.headers) as response:
            await response.read()
        return self.chat

    async def ChatStream(self, request: pb.ChatRequest, context: Any) -> AsyncIterator[pb.ChatStreamResponse]:  # noqa: N802
        events = iter(self.stream)
        async with self.client().post(self.url, data=self.streamed, headers=self.headers) as response:
            async for _ in response.content.iter_any():
                if (event := next(events, None)) is not None:
                    yield event
        for event in events:
            yield event


async def main(
    port: int,
    recorded: tuple[pb.ChatResponse, list[pb.ChatStreamResponse]],
    upstream: Upstream | None,
    helpers: threads.HelperPolicy,
) -> None:
    server = grpc.aio.server()
    floor = Floor(*recorded) if upstream is None else Relay(*recorded, upstream)
    pb_grpc.add_GatewayServicer_to_server(floor, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"floor listening on {port}", flush=True)
    batching = asyncio.ensure_future(threads.keep_batched(helpers))
    await server.wait_for_termination()
    batching.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("port", type=int)
    parser.add_argument("recorded", type=Path, nargs="?")
    parser.add_argument("upstream", nargs="*", metavar="UPSTREAM_PORT UNARY_BODY STREAM_BODY")
    parser.add_argument(
        "--helper-policy",
        choices=["batch", "normal"],
        default="normal",
        help="schedule grpc's threads as a worker does (service/threads.py)",
    )
    options = parser.parse_args()
    recorded = read_recorded(options.recorded) if options.recorded else (pb.ChatResponse(), [])
    upstream = None
    if options.upstream:
        port, unary, streamed = options.upstream
        upstream = Upstream(int(port), Path(unary).read_bytes(), Path(streamed).read_bytes())
    uvloop.run(main(options.port, recorded, upstream, options.helper_policy))  # the gateway's loop
