"""Hedging: what a policy's `hedge` does to tail latency, and what it costs in upstream calls.

    .venv/bin/python -m benches.hedging            # 3 000 unary calls and 3 000 streams per setting
    .venv/bin/python -m benches.hedging --quick    # 150 of each (a smoke run, CI)

Two in-process MockOpenAI upstreams (tests/mock_openai.py, on a loop in a background thread)
with the same heavy-tailed latency: a first answer (the whole unary answer, or a stream's first
token) after 10-30 ms, or, for a share of calls (--tail-rate, default 5%), after --tail-ms
(default 500 ms). One gateway worker serves them as one model group (strategy priority: mock-0
first, so any hedge goes to mock-1), under three settings: no hedge; `hedge: {max_delay_ms: 1000}`
(the delay is the deployment's tail estimate); and a fixed 50 ms. After 200 warm-up calls (so
the estimates exist) a grpc.aio client sends unary calls, then streams, at concurrency 8; it
records each call's latency (streams: to the first delta). Reported per setting: p50, p90, p99,
p99.9 and max; the upstream calls per request (1.00 = no extra load); errors. Results:
benches/results/hedging.json (hedging-quick.json with --quick).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import sys
import time
from typing import Any

import grpc
from aiohttp import web

from benches.harness import RESULTS, free_port, gateway, machine, timestamp
from benches.mock_upstreams import BackgroundMocks, deployments_yaml
from benches.soak import percentile
from service.api.switchboard.v1 import gateway_pb2 as pb
from service.api.switchboard.v1 import gateway_pb2_grpc as pb_grpc
from tests.mock_openai import Fault, MockOpenAI

CONCURRENCY = 8
WARMUP = 200
DEADLINE_S = 5.0
SETTINGS = {
    "none": None,
    "tail": "{max_delay_ms: 1000}",
    "fixed_50ms": "{min_delay_ms: 50, max_delay_ms: 50}",
}
REQUEST = pb.ChatRequest(
    model="bench", messages=[pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text="Say a few words.")])]
)


class TailedOpenAI(MockOpenAI):
    """A MockOpenAI whose first answer comes after a delay drawn from a heavy-tailed mix."""

    def __init__(self, rng: random.Random, tail_rate: float, tail_s: float) -> None:
        super().__init__()
        self.rng = rng
        self.tail_rate = tail_rate
        self.tail_s = tail_s
        self.calls = 0

    async def _chat(self, request: web.Request, *, model: str | None = None) -> web.StreamResponse:
        # Read the body first: aiohttp caches it, so the parent reads it again without yielding
        # to the loop, and the fault set here is the one it sees (requests run concurrently).
        body = await request.json()
        delay = self.tail_s if self.rng.random() < self.tail_rate else self.rng.uniform(0.010, 0.030)
        self.fault = Fault(stall_after=0, stall_s=delay) if body.get("stream") else Fault(hang_s=delay)
        self.calls += 1
        # The parent keeps every request and its headers; a benchmark must not.
        self.requests.clear()
        self.headers.clear()
        return await super()._chat(request, model=model)


def gateway_config(ports: list[int], hedge: str | None) -> str:
    policy = f"\npolicies:\n  - id: hedged\n    route_to: {{groups: [bench]}}\n    hedge: {hedge}\n" if hedge else ""
    return f"""
default_group: bench
model_groups:
  - name: bench
    strategy: priority
    deployments:{deployments_yaml(ports)}
{policy}"""


def upstream_calls(upstreams: BackgroundMocks[TailedOpenAI]) -> int:
    return sum(mock.calls for mock in upstreams.mocks)


async def one_call(stub: pb_grpc.GatewayStub, stream: bool) -> float | str:
    """Seconds to the answer (streams: to the first delta), or the error status's name."""
    started = time.perf_counter()
    try:
        if not stream:
            await stub.Chat(REQUEST, timeout=DEADLINE_S)
            return time.perf_counter() - started
        first: float | None = None
        async for event in stub.ChatStream(REQUEST, timeout=DEADLINE_S):
            if first is None and event.WhichOneof("event") == "delta":
                first = time.perf_counter() - started
        return first if first is not None else "no_delta"
    except grpc.aio.AioRpcError as error:
        return str(error.code().name)


async def load(port: int, total: int, stream: bool) -> tuple[list[float], dict[str, int]]:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    sent = 0
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.GatewayStub(channel)

        async def worker() -> None:
            nonlocal sent
            while sent < total:
                sent += 1
                result = await one_call(stub, stream)
                if isinstance(result, str):
                    errors[result] = errors.get(result, 0) + 1
                else:
                    latencies.append(result)

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return latencies, errors


def summarize(latencies: list[float], errors: dict[str, int], upstream_calls: int, total: int) -> dict[str, Any]:
    def ms(q: float) -> float:
        return round(percentile(latencies, q) * 1000, 1)

    return {
        "calls": total,
        "p50_ms": ms(0.5),
        "p90_ms": ms(0.9),
        "p99_ms": ms(0.99),
        "p999_ms": ms(0.999),
        "max_ms": round(max(latencies, default=0.0) * 1000, 1),
        "upstream_calls_per_request": round(upstream_calls / max(1, total), 3),
        "errors": errors,
    }


def run_setting(upstreams: BackgroundMocks[TailedOpenAI], hedge: str | None, total: int) -> dict[str, Any]:
    port = free_port()
    with gateway(gateway_config(upstreams.ports(), hedge), port):
        asyncio.run(load(port, WARMUP, stream=False))
        asyncio.run(load(port, WARMUP, stream=True))
        results = {}
        for kind, stream in (("unary", False), ("stream_ttft", True)):
            before = upstream_calls(upstreams)
            latencies, errors = asyncio.run(load(port, total, stream))
            results[kind] = summarize(latencies, errors, upstream_calls(upstreams) - before, total)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="150 calls of each kind per setting (smoke test)")
    parser.add_argument("--requests", type=int, help="calls of each kind per setting (default 3 000)")
    parser.add_argument("--tail-rate", type=float, default=0.05, help="share of upstream calls that are slow")
    parser.add_argument("--tail-ms", type=float, default=500.0, help="how slow those are")
    parser.add_argument("--seed", type=int, default=7)
    options = parser.parse_args()
    total = options.requests or (150 if options.quick else 3_000)
    if (os.cpu_count() or 1) >= 2:
        # The gateway gets CPU 0 (below); the client and the upstreams share CPU 1.
        os.sched_setaffinity(0, {1})
    # A hedge's loser is cancelled mid-request: the mocks' handlers meet closed connections.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    rng = random.Random(options.seed)
    upstreams = BackgroundMocks([TailedOpenAI(rng, options.tail_rate, options.tail_ms / 1000) for _ in range(2)])
    try:
        results = {name: run_setting(upstreams, hedge, total) for name, hedge in SETTINGS.items()}
    finally:
        upstreams.close()
    report = {
        "date": timestamp(),
        "machine": machine(),
        "parameters": {
            "calls_per_kind": total,
            "warmup": WARMUP,
            "concurrency": CONCURRENCY,
            "tail_rate": options.tail_rate,
            "tail_ms": options.tail_ms,
            "usual_ms": [10, 30],
            "settings": SETTINGS,
            "seed": options.seed,
        },
        "results": results,
    }
    RESULTS.mkdir(exist_ok=True)
    name = "hedging-quick" if options.quick else "hedging"
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"Hedging: {total} calls of each kind, concurrency {CONCURRENCY}, {options.tail_rate:.0%} of upstream")
    print(f"first answers after {options.tail_ms:g} ms, the rest after 10-30 ms")
    print("| setting | kind | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | upstream calls / request | errors |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for setting, kinds in results.items():
        for kind, r in kinds.items():
            print(
                f"| {setting} | {kind} | {r['p50_ms']} | {r['p90_ms']} | {r['p99_ms']} | {r['p999_ms']} | "
                f"{r['max_ms']} | {r['upstream_calls_per_request']:.3f} | {r['errors'] or 0} |"
            )
    if any(r["errors"] for kinds in results.values() for r in kinds.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
