"""The floor of the stack: a grpc.aio server whose handlers do nothing but return prebuilt
answers of the same size as the gateway's, on the same service.

    .venv/bin/python -m benches.floor_server PORT [RECORDED]

Benchmarks compare the gateway against it: the difference is what the gateway's own work
(validation, the router call, the upstream call, building the answer) costs. Route answers a
fixed RouteResponse; Chat and ChatStream answer what RECORDED holds (a file of length-prefixed
messages: one ChatResponse, then a stream's ChatStreamResponses, as benches/floor.py records
them from the gateway), so their messages are the gateway's own, byte for byte.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import uvloop

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


async def main(port: int, recorded: Path | None) -> None:
    chat, stream = read_recorded(recorded) if recorded else (pb.ChatResponse(), [])
    server = grpc.aio.server()
    pb_grpc.add_GatewayServicer_to_server(Floor(chat, stream), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"floor listening on {port}", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else None))  # the gateway's loop
