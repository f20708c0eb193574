"""Chat overhead: the same request sent directly to a fast local upstream and through the gateway.

    .venv/bin/python -m benches.chat            # 2 000 requests per point, then 100 000 for memory
    .venv/bin/python -m benches.chat --quick    # a smoke run (CI)

The upstream is benches/mockupstream (Go, answers at once: unary JSON, or a 50-chunk SSE
stream). One asyncio load generator drives both paths at concurrency 1, 16 and 64: httpx
straight to the upstream, and the gateway's generated stubs through one gateway worker. For
unary calls it measures latency; for streams, time to first token and to last token. The
gateway's RSS is read idle and after the runs. Everything shares the machine's cores with the
load generator. Results: benches/results/chat.json and benches/results/chat.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import httpx

from benches.harness import RESULTS, ROOT, free_port, machine, rss_mib, running
from service.api.switchboard.v1 import gateway_pb2 as pb
from service.api.switchboard.v1 import gateway_pb2_grpc as pb_grpc

CONCURRENCY = (1, 16, 64)
PROMPT = "Say fifty tokens, please."
Sample = tuple[float, float]  # (time to first token, time to last token), seconds


def gateway_config(upstream_port: int) -> str:
    return f"""
default_group: bench
model_groups:
  - name: bench
    deployments:
      - id: mock
        type: openai_compatible
        model: bench-model
        base_url: http://127.0.0.1:{upstream_port}/v1
        context_window: 100000
        max_connections: 200
"""


async def direct_call(client: httpx.AsyncClient, stream: bool) -> Sample:
    body: dict[str, Any] = {"model": "bench-model", "messages": [{"role": "user", "content": PROMPT}]}
    started = time.perf_counter()
    if not stream:
        response = await client.post("/v1/chat/completions", json=body)
        response.raise_for_status()
        response.json()
        elapsed = time.perf_counter() - started
        return elapsed, elapsed
    body |= {"stream": True, "stream_options": {"include_usage": True}}
    first = 0.0
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        async for line in response.aiter_lines():
            if not first and '"content"' in line:
                first = time.perf_counter() - started
    return first, time.perf_counter() - started


async def gateway_call(stub: pb_grpc.GatewayStub, stream: bool) -> Sample:
    request = pb.ChatRequest(
        model="bench", messages=[pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text=PROMPT)])]
    )
    started = time.perf_counter()
    if not stream:
        await stub.Chat(request)
        elapsed = time.perf_counter() - started
        return elapsed, elapsed
    first = 0.0
    async for event in stub.ChatStream(request):
        if not first and event.HasField("delta"):
            first = time.perf_counter() - started
    return first, time.perf_counter() - started


async def load(call: Callable[[], Awaitable[Sample]], concurrency: int, total: int) -> dict[str, float]:
    samples: list[Sample] = []
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            samples.append(await call())

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - started

    def percentile(values: list[float], q: int) -> float:
        return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000

    firsts, lasts = [s[0] for s in samples], [s[1] for s in samples]
    return {
        "rps": len(samples) / wall,
        "ttft_p50_ms": percentile(firsts, 50),
        "ttft_p99_ms": percentile(firsts, 99),
        "p50_ms": percentile(lasts, 50),
        "p99_ms": percentile(lasts, 99),
    }


def worker_pid(parent: int) -> int:
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return int(children[0]) if children else parent


async def measure(upstream_port: int, gateway_port: int, total: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with (
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{upstream_port}", limits=limits) as client,
        grpc.aio.insecure_channel(f"127.0.0.1:{gateway_port}") as channel,
    ):
        stub = pb_grpc.GatewayStub(channel)
        for stream in (False, True):
            paths: dict[str, Callable[[], Awaitable[Sample]]] = {
                "direct": lambda stream=stream: direct_call(client, stream),  # type: ignore[misc]
                "gateway": lambda stream=stream: gateway_call(stub, stream),  # type: ignore[misc]
            }
            for concurrency in CONCURRENCY:
                for path, call in paths.items():
                    await load(call, concurrency, max(20, total // 20))  # warm-up
                    result = await load(call, concurrency, total)
                    rows.append(
                        {"mode": "stream" if stream else "unary", "path": path, "concurrency": concurrency, **result}
                    )
    return rows


async def soak(gateway_port: int, requests: int) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway_port}") as channel:
        stub = pb_grpc.GatewayStub(channel)
        await load(lambda: gateway_call(stub, False), 64, requests)


def compare(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Gateway minus direct (added latency) and gateway / direct (throughput), per mode and concurrency."""
    index = {(r["mode"], r["path"], r["concurrency"]): r for r in rows}
    out = []
    for mode in ("unary", "stream"):
        for concurrency in CONCURRENCY:
            direct, gateway = index[(mode, "direct", concurrency)], index[(mode, "gateway", concurrency)]
            out.append(
                {
                    "mode": mode,
                    "concurrency": concurrency,
                    "added_p50_ms": gateway["p50_ms"] - direct["p50_ms"],
                    "added_p99_ms": gateway["p99_ms"] - direct["p99_ms"],
                    "added_ttft_p50_ms": gateway["ttft_p50_ms"] - direct["ttft_p50_ms"],
                    "throughput_vs_direct": gateway["rps"] / direct["rps"],
                }
            )
    return out


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    panels = [("unary", "p50_ms", "unary: p50 latency"), ("stream", "ttft_p50_ms", "stream: p50 time to first token")]
    for axis, (mode, metric, title) in zip(axes, panels, strict=True):
        for path_name, style in (("direct", "o-"), ("gateway", "s-")):
            points = [r for r in rows if r["mode"] == mode and r["path"] == path_name]
            axis.plot([r["concurrency"] for r in points], [r[metric] for r in points], style, label=path_name)
        axis.set(title=title, xlabel="concurrency", ylabel="ms", xscale="log")
        axis.set_xticks(CONCURRENCY, [str(c) for c in CONCURRENCY])
        axis.legend()
    figure.suptitle("Direct to a local upstream vs through the gateway (1 worker, loopback, same machine)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few dozen requests per point (smoke test)")
    options = parser.parse_args()
    total, soak_requests = (40, 200) if options.quick else (2_000, 100_000)
    mock = str(ROOT / ".cache" / "bin" / "mockupstream")
    upstream_port, gateway_port = free_port(), free_port()
    with (
        tempfile.NamedTemporaryFile("w", suffix=".yaml") as config,
        running([mock, str(upstream_port)], "mock listening", upstream_port, grpc_ready=False),
    ):
        config.write(gateway_config(upstream_port))
        config.flush()
        serve = [sys.executable, "-m", "service", "serve", "--config", config.name]
        with running([*serve, "--listen", f"127.0.0.1:{gateway_port}"], "switchboard listening", gateway_port) as pid:
            idle = rss_mib(worker_pid(pid))
            rows = asyncio.run(measure(upstream_port, gateway_port, total))
            after_runs = rss_mib(worker_pid(pid))
            asyncio.run(soak(gateway_port, soak_requests))
            after_soak = rss_mib(worker_pid(pid))
    overhead = compare(rows)
    rss = {"idle": idle, "after_runs": after_runs, f"after_{soak_requests}_more": after_soak}
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "requests_per_point": total,
        "results": rows,
        "overhead": overhead,
        "gateway_rss_mib": rss,
    }
    RESULTS.mkdir(exist_ok=True)
    name = "chat-quick" if options.quick else "chat"
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    if not options.quick:
        plot(rows, RESULTS / "chat.png")
    print(f"Chat through the gateway vs direct, {total} requests per point, {report['machine']['cpus']} CPUs")
    print("| mode | concurrency | added p50 ms | added p99 ms | added TTFT p50 ms | throughput vs direct |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for row in overhead:
        print(
            f"| {row['mode']} | {row['concurrency']} | {row['added_p50_ms']:.2f} | {row['added_p99_ms']:.2f} | "
            f"{row['added_ttft_p50_ms']:.2f} | {row['throughput_vs_direct']:.0%} |"
        )
    print("gateway RSS (MiB): " + ", ".join(f"{k} {v:.1f}" for k, v in rss.items()))


if __name__ == "__main__":
    main()
