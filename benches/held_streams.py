"""Memory a client holds in the gateway by opening streams and never reading them.

    .venv/bin/python -m benches.held_streams            # 100 and 200 held streams
    .venv/bin/python -m benches.held_streams --quick    # 20 (a smoke run, CI)

One gateway worker streams endless answers from benches/mockupstream (Go, writing chunks as fast
as TCP takes them, as a fast provider would). A grpc.aio client opens N ChatStreams
over a few connections, reads each one's first event and then reads nothing: the gateway's
writes stall on flow control, as an abuser's would. The write timeout is raised past the run
so that the streams stay held while they are measured. The gateway worker's RSS is read idle
(after a warm-up of complete streams) and once the held streams' memory has settled; memory
per held stream is the difference over N. Results: benches/results/held_streams.json
(held_streams-quick.json with --quick).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import grpc

from benches.harness import (
    RESULTS,
    free_port,
    gateway,
    machine,
    mock_upstream,
    rss_mib,
    timestamp,
)
from benches.mock_upstreams import deployments_yaml
from service.api.switchboard.v1 import gateway_pb2 as pb
from service.api.switchboard.v1 import gateway_pb2_grpc as pb_grpc

STREAMS_PER_CONNECTION = 50
# Chunks of an answer: a held stream never reaches its end; a warm-up one does.
ENDLESS = 1_000_000
WARMUP_CHUNKS = 2_000
WARMUP = 10


def config_yaml(upstream_port: int, streams: int) -> str:
    deployments = deployments_yaml([upstream_port]).replace("context_window: 100000", f"context_window: {2 * ENDLESS}")
    return f"""
server:
  clients: {{write_timeout_s: 600, max_calls_per_peer: {streams + 10}}}
model_groups:
  - name: chat
    deployments:{deployments}
"""


def request(chunks: int) -> pb.ChatRequest:
    message = pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text="go on")])
    return pb.ChatRequest(model="chat", messages=[message], params=pb.GenerationParams(max_tokens=chunks))


async def settled_rss(pid: int, seconds: float = 10.0) -> float:
    """The worker's RSS once it has stopped growing for a second (at most `seconds`)."""
    last, deadline = rss_mib(pid), time.monotonic() + seconds
    while time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        now = rss_mib(pid)
        if abs(now - last) < 0.5:
            return now
        last = now
    return last


async def held(port: int, pid: int, streams: int) -> dict[str, Any]:
    target = f"127.0.0.1:{port}"
    async with grpc.aio.insecure_channel(target) as warm:
        for _ in range(WARMUP):
            async for _event in pb_grpc.GatewayStub(warm).ChatStream(request(WARMUP_CHUNKS)):
                pass
    idle = await settled_rss(pid)
    print(f"idle at {idle:.1f} MiB", file=sys.stderr, flush=True)
    # A client that never reads never grants more than HTTP/2's initial window (64 KiB): no
    # bandwidth-delay probing, which would grow it for a client that does not even read. A
    # subchannel pool of each channel's own: a connection each, not one shared.
    options = [("grpc.http2.bdp_probe", 0), ("grpc.use_local_subchannel_pool", 1)]
    connections = -(-streams // STREAMS_PER_CONNECTION)
    channels = [grpc.aio.insecure_channel(target, options=options) for _ in range(connections)]
    calls = []
    try:
        for i in range(streams):
            call = pb_grpc.GatewayStub(channels[i // STREAMS_PER_CONNECTION]).ChatStream(request(ENDLESS))
            assert (await call.read()).HasField("start")
            calls.append(call)
        print(f"{streams} streams held", file=sys.stderr, flush=True)
        holding = await settled_rss(pid)
        print(f"settled at {holding:.1f} MiB", file=sys.stderr, flush=True)
    finally:
        for call in calls:
            call.cancel()
        for channel in channels:
            await channel.close()
    return {
        "streams": streams,
        "idle_rss_mib": round(idle, 1),
        "held_rss_mib": round(holding, 1),
        "per_stream_kib": round((holding - idle) * 1024 / streams, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20 held streams, as a smoke run")
    args = parser.parse_args()
    counts = [20] if args.quick else [100, 200]
    results = []
    upstream_port = free_port()
    with mock_upstream(upstream_port):
        for streams in counts:
            port = free_port()
            with gateway(config_yaml(upstream_port, streams), port) as pid:
                result = asyncio.run(held(port, pid, streams))
            print(json.dumps(result))
            results.append(result)
    name = "held_streams-quick.json" if args.quick else "held_streams.json"
    (RESULTS / name).write_text(
        json.dumps({"date": timestamp(), "machine": machine(), "runs": results}, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
