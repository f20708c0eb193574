"""The floor of the stack: a grpc.aio server whose Route handler does nothing but
return a prebuilt answer of the same size as the gateway's, on the same service.

    .venv/bin/python -m benches.floor_server PORT

Benchmarks compare the gateway's Route against it: the difference is what the
gateway's own work (validation, the router call, building the answer) costs.
"""

from __future__ import annotations

import sys
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


class Floor(pb_grpc.GatewayServicer):
    async def Route(self, request: pb.RouteRequest, context: Any) -> pb.RouteResponse:  # noqa: N802
        return ANSWER


async def main(port: int) -> None:
    server = grpc.aio.server()
    pb_grpc.add_GatewayServicer_to_server(Floor(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"floor listening on {port}", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1])))  # the gateway's loop
