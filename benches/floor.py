"""The gateway worker's CPU per call against the floor of its stack, per core.

    .venv/bin/python -m benches.floor            # 5 000 calls per point, 3 rounds
    .venv/bin/python -m benches.floor --quick    # 400 calls, 1 round (CI)

A call through the gateway is a gRPC call served by grpc.aio plus an HTTP call to the upstream
made with aiohttp; what the gateway adds of its own is the rest. Four processes are measured
the same way, each on CPU 0 with benches/mockupstream (Go, answering at once; streams of 50
chunks) and the load generator on CPU 1, and each one's CPU time per call read from /proc:

- the floor: benches/floor_server.py, a grpc.aio server whose Chat and ChatStream return the
  gateway's own answer to the same request, recorded byte for byte (benches/loadgen drives it);
- a bare aiohttp client (a session set up as the gateway's), POSTing the same request to the same
  upstream at the same concurrency and reading the whole answer;
- both floors in one process: benches/floor_server.py given the upstream, making the gateway's
  upstream call with aiohttp before each answer, its threads other than the event loop's
  scheduled as a worker's are by default (service/threads.py). Apart, each floor has the core's
  caches to itself; together they share them, as the gateway's two halves do;
- one gateway worker, driven by benches/loadgen.

The target: gateway ≤ floor + aiohttp + 0.15 ms per call. Rounds are taken in turn and each
figure is the median over rounds. Results: benches/results/floor.json (floor-quick.json with --quick).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import uvloop

from benches.chat import gateway_config, loadgen, request_bodies
from benches.floor_server import write_recorded
from benches.harness import (
    RESULTS,
    cpu_seconds,
    free_port,
    gateway,
    machine,
    mock_upstream,
    pinned,
    running,
    timestamp,
)
from service.api.switchboard.v1 import gateway_pb2 as pb
from service.api.switchboard.v1 import gateway_pb2_grpc as pb_grpc
from service.config.schema import ServerSettings

CONCURRENCY = (1, 16)
# What is measured: the two floors apart, the two in one process, and the gateway.
MEASURED = ("grpc floor", "aiohttp", "both in one", "gateway")
# Both floors in one process schedule their helper threads as a gateway worker does by default.
HELPERS: str = ServerSettings.model_fields["helper_thread_policy"].default
# Per call beyond the two floors, the target for the gateway's own work.
ALLOWANCE_MS = 0.15


async def aiohttp_calls(port: int, body: bytes, stream: bool, concurrency: int, total: int) -> float:
    """CPU ms per call of this process POSTing `body` `total` times, `concurrency` at once."""
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=200, limit_per_host=0),
        cookie_jar=aiohttp.DummyCookieJar(),
        read_bufsize=16 * 1024,
    )
    headers = {"Content-Type": "application/json"}

    async def one() -> None:
        async with session.post(url, data=body, headers=headers) as response:
            if stream:
                async for _ in response.content.iter_chunked(16 * 1024):
                    pass
            else:
                await response.read()

    async def worker(calls: int) -> None:
        for _ in range(calls):
            await one()

    async def run(calls: int) -> None:
        share, extra = divmod(calls, concurrency)
        await asyncio.gather(*(worker(share + (i < extra)) for i in range(concurrency)))

    async with session:
        await run(max(total // 10, 50))  # warm up: connections, caches
        started = time.process_time()
        await run(total)
        return (time.process_time() - started) / total * 1000


def aiohttp_cpu(port: int, body: Path, stream: bool, concurrency: int, total: int) -> float:
    """The bare aiohttp client's CPU per call, in a process of its own on CPU 0."""
    command = [sys.executable, "-m", "benches.floor", "--aiohttp", str(port), str(body), str(int(stream))]
    command += [str(concurrency), str(total)]
    done = subprocess.run(pinned(command, 0), capture_output=True, text=True, check=True)
    return float(done.stdout.strip())


async def record(port: int) -> tuple[pb.ChatResponse, list[pb.ChatStreamResponse]]:
    """The gateway's answer to the benchmark's request, unary and streamed."""
    message = pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text="Say fifty tokens, please.")])
    request = pb.ChatRequest(model="bench", messages=[message])
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.GatewayStub(channel)
        chat = await stub.Chat(request)
        stream = [event async for event in stub.ChatStream(request)]
    return chat, stream


def served_cpu(pid: int, port: int, mode: str, body: Path, concurrency: int, total: int) -> dict[str, float]:
    loadgen(mode, port, body, concurrency, max(total // 10, 50))  # warm up
    before = cpu_seconds(pid)
    run = loadgen(mode, port, body, concurrency, total)
    run["cpu_per_call_ms"] = (cpu_seconds(pid) - before) / total * 1000
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="400 calls, one round (smoke test)")
    parser.add_argument("--calls", type=int, help="calls per point (default 5 000, 400 with --quick)")
    parser.add_argument("--rounds", type=int, help="rounds (default 3, 1 with --quick)")
    parser.add_argument("--aiohttp", nargs=5, metavar=("PORT", "BODY", "STREAM", "C", "N"), help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.aiohttp:
        port, body, stream, concurrency, total = options.aiohttp
        cpu = uvloop.run(aiohttp_calls(int(port), Path(body).read_bytes(), stream == "1", int(concurrency), int(total)))
        print(f"{cpu:.6f}")
        return
    total, rounds = (400, 1) if options.quick else (5_000, 3)
    total, rounds = options.calls or total, options.rounds or rounds
    upstream_port = free_port()
    samples: dict[tuple[str, int, str], list[float]] = {}
    with (
        tempfile.TemporaryDirectory() as folder,
        request_bodies() as bodies,
        mock_upstream(upstream_port),
    ):
        recorded = Path(folder) / "recorded.bin"
        for _ in range(rounds):
            port = free_port()
            with gateway(gateway_config(upstream_port), port) as worker:
                if not recorded.exists():
                    write_recorded(recorded, *asyncio.run(record(port)))
                for mode in ("unary", "stream"):
                    for c in CONCURRENCY:
                        run = served_cpu(worker, port, f"grpc-{mode}", bodies["grpc"], c, total)
                        samples.setdefault((mode, c, "gateway"), []).append(run["cpu_per_call_ms"])
            relay = [str(upstream_port), str(bodies["http-unary"]), str(bodies["http-stream"])]
            relay += ["--helper-policy", HELPERS]
            for who, upstream in (("grpc floor", []), ("both in one", relay)):
                port = free_port()
                floor = pinned([sys.executable, "-m", "benches.floor_server", str(port), str(recorded), *upstream], 0)
                with running(floor, "floor listening", port) as pid:
                    for mode in ("unary", "stream"):
                        for c in CONCURRENCY:
                            run = served_cpu(pid, port, f"grpc-{mode}", bodies["grpc"], c, total)
                            samples.setdefault((mode, c, who), []).append(run["cpu_per_call_ms"])
            for mode in ("unary", "stream"):
                for c in CONCURRENCY:
                    cpu = aiohttp_cpu(upstream_port, bodies[f"http-{mode}"], mode == "stream", c, total)
                    samples.setdefault((mode, c, "aiohttp"), []).append(cpu)
    rows = summarise(samples)
    name = "floor-quick.json" if options.quick else "floor.json"
    document = {"date": timestamp(), "machine": machine(), "calls_per_round": total, "rounds": rounds, "rows": rows}
    (RESULTS / name).write_text(json.dumps(document, indent=2) + "\n")


def summarise(samples: dict[tuple[str, int, str], list[float]]) -> list[dict[str, Any]]:
    rows = []
    for mode in ("unary", "stream"):
        for c in CONCURRENCY:
            grpc_floor, bare, both, worker = (statistics.median(samples[(mode, c, who)]) for who in MEASURED)
            floor = grpc_floor + bare
            row = {
                "mode": mode,
                "concurrency": c,
                "grpc_floor_ms": round(grpc_floor, 4),
                "aiohttp_ms": round(bare, 4),
                "gateway_ms": round(worker, 4),
                "ours_ms": round(worker - floor, 4),
                "both_in_one_ms": round(both, 4),
                "ours_over_both_ms": round(worker - both, 4),
                "gateway_over_floor": round(worker / floor, 3),
                "target_ms": round(floor + ALLOWANCE_MS, 4),
                "met": worker <= floor + ALLOWANCE_MS,
                "samples": {who: samples[(mode, c, who)] for who in MEASURED},
            }
            rows.append(row)
            print(
                f"{mode:6} c={c:<3} worker CPU per call: gRPC floor {grpc_floor:.3f} ms + aiohttp {bare:.3f} ms"
                f" = {floor:.3f} ms; gateway {worker:.3f} ms ({worker / floor:.2f}x, ours {worker - floor:+.3f} ms;"
                f" target ≤ {floor + ALLOWANCE_MS:.3f} ms: {'met' if row['met'] else 'NOT met'});"
                f" both floors in one process {both:.3f} ms (ours {worker - both:+.3f} ms)",
                flush=True,
            )
    return rows


if __name__ == "__main__":
    main()
