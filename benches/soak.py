"""Load and soak: a bounded load on loopback with faults injected into a share of upstream calls.

    .venv/bin/python -m benches.soak            # 200 warm-up requests, then two rounds of 20 000
    .venv/bin/python -m benches.soak --quick    # two rounds of 300 (a smoke run, CI)

Two in-process MockOpenAI upstreams (tests/mock_openai.py, on a loop in a background thread)
serve one model group (strategy priority) of one gateway worker. Each upstream call meets, with
probability --fault-rate, one fault drawn at random (a seeded random.Random): a 500, a 503, a
429 with retry-after-ms, a hang before headers, a cut, malformed or reset stream, a stall. A
grpc.aio client sends half unary Chat and half ChatStream calls at concurrency 32, each with a
3 s deadline; the gateway retries once in place and may wait up to --wait-for-capacity-s (default
1) for a rate-limited deployment. Every call must end in a success or an error status: a call that outlives its
deadline by 0.5 s is a hang, a stream that ends without `end` or an error is truncated, and
either fails the run (exit status 1). The gateway worker's RSS is read after the warm-up and
after each round. Results: benches/results/soak.json (soak-quick.json with --quick).
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
from collections import Counter
from typing import Any

import grpc
from aiohttp import web
from google.rpc import error_details_pb2, status_pb2

from benches.harness import RESULTS, free_port, gateway, machine, rss_mib, timestamp
from benches.mock_upstreams import BackgroundMocks, deployments_yaml
from service.api.switchboard.v1 import gateway_pb2 as pb
from service.api.switchboard.v1 import gateway_pb2_grpc as pb_grpc
from tests.mock_openai import Fault, MockOpenAI

CONCURRENCY = 32
DEADLINE_S = 3.0
HANG_MARGIN_S = 0.5
WARMUP = 200
FAULTS = (
    Fault(status=500),
    Fault(status=503),
    Fault(status=429, headers={"retry-after-ms": "50"}),
    Fault(hang_s=2),
    Fault(cut_after=2),
    Fault(malformed_after=1),
    Fault(reset_after_bytes=40),
    Fault(stall_after=1, stall_s=1),
)


class FaultyOpenAI(MockOpenAI):
    """A MockOpenAI that draws a fault (or none) for each request."""

    def __init__(self, rng: random.Random, rate: float) -> None:
        super().__init__()
        self.rng = rng
        self.rate = rate
        self.injected: Counter[str] = Counter()

    async def _chat(self, request: web.Request, *, model: str | None = None) -> web.StreamResponse:
        # Read the body first: aiohttp caches it, so the parent reads it again without yielding
        # to the loop, and the fault set here is the one it sees (requests run concurrently).
        await request.read()
        self.fault = self.rng.choice(FAULTS) if self.rng.random() < self.rate else None
        self.injected[_fault_name(self.fault)] += 1
        # The parent keeps every request and its headers; a soak must not.
        self.requests.clear()
        self.headers.clear()
        return await super()._chat(request, model=model)


def _fault_name(fault: Fault | None) -> str:
    if fault is None:
        return "none"
    if fault.status:
        return f"status_{fault.status}"
    for name in ("hang_s", "cut_after", "malformed_after", "reset_after_bytes", "stall_after"):
        if getattr(fault, name):
            return name.split("_")[0]
    return "other"


def gateway_config(ports: list[int], wait_for_capacity_s: float) -> str:
    limits = "\n        timeout_s: 1\n        first_token_timeout_s: 0.5\n        stall_timeout_s: 0.5"
    return f"""
default_group: soak
retries: {{same_deployment: 1, backoff_initial_s: 0.01, backoff_max_s: 0.2, wait_for_capacity_s: {wait_for_capacity_s}}}
model_groups:
  - name: soak
    strategy: priority
    deployments:{deployments_yaml(ports, limits)}"""


def injected(upstreams: BackgroundMocks[FaultyOpenAI]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for mock in upstreams.mocks:
        total.update(mock.injected)
    return dict(sorted(total.items()))


# The first error message seen for each status code, for the report.
EXAMPLES: dict[str, str] = {}
REQUEST = pb.ChatRequest(
    model="soak", messages=[pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text="Say a few words.")])]
)


def error_reason(error: grpc.aio.AioRpcError) -> str:
    """The ErrorInfo reason of a failed call's rich status (UPSTREAM_FAILED, STREAM_INTERRUPTED, …)."""
    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    if not isinstance(raw, bytes):
        return "no_details"
    for packed in status_pb2.Status.FromString(raw).details:
        info = error_details_pb2.ErrorInfo()
        if packed.Unpack(info):
            return str(info.reason)
    return "no_error_info"


async def one_call(stub: pb_grpc.GatewayStub, stream: bool) -> tuple[str, float]:
    """(outcome, seconds): "ok", "truncated_ok", "hang" or the gRPC status code's name."""
    started = time.perf_counter()

    async def call() -> str:
        try:
            if not stream:
                await stub.Chat(REQUEST, timeout=DEADLINE_S)
                return "ok"
            ended = False
            async for event in stub.ChatStream(REQUEST, timeout=DEADLINE_S):
                ended = ended or event.WhichOneof("event") == "end"
            return "ok" if ended else "truncated_ok"
        except grpc.aio.AioRpcError as error:
            outcome = f"{error.code().name}/{error_reason(error)}"
            EXAMPLES.setdefault(outcome, str(error.details()))
            return outcome

    try:
        # The client's own guard, so that the bench stops by itself even if a call never does.
        outcome = await asyncio.wait_for(call(), DEADLINE_S + 5)
    except TimeoutError:
        outcome = "hang"
    elapsed = time.perf_counter() - started
    if elapsed > DEADLINE_S + HANG_MARGIN_S:
        outcome = "hang"
    return outcome, elapsed


async def load(port: int, total: int) -> tuple[dict[str, Counter[str]], list[float], float]:
    """`total` calls, half unary and half streams, at CONCURRENCY; outcomes per kind, latencies, seconds."""
    outcomes: dict[str, Counter[str]] = {"unary": Counter(), "stream": Counter()}
    latencies: list[float] = []
    next_index = 0
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.GatewayStub(channel)

        async def worker() -> None:
            nonlocal next_index
            while next_index < total:
                stream = next_index % 2 == 1
                next_index += 1
                outcome, elapsed = await one_call(stub, stream)
                outcomes["stream" if stream else "unary"][outcome] += 1
                latencies.append(elapsed)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return outcomes, latencies, time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def summarize(outcomes: dict[str, Counter[str]], latencies: list[float], seconds: float) -> dict[str, Any]:
    both = outcomes["unary"] + outcomes["stream"]
    return {
        "requests": len(latencies),
        "seconds": round(seconds, 1),
        "calls_per_s": round(len(latencies) / seconds, 1),
        "outcomes": {kind: dict(sorted(counts.items())) for kind, counts in outcomes.items()},
        "ok_share": round(both["ok"] / max(1, len(latencies)), 4),
        "p50_ms": round(percentile(latencies, 0.5) * 1000, 1),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "max_ms": round(max(latencies, default=0.0) * 1000, 1),
        "hangs": both["hang"],
        "truncated_ok": both["truncated_ok"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two rounds of 300 requests (smoke test)")
    parser.add_argument("--requests", type=int, help="requests per round (default 20 000, 300 with --quick)")
    parser.add_argument("--fault-rate", type=float, default=0.2, help="share of upstream calls given a fault")
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument(
        "--wait-for-capacity-s",
        type=float,
        default=1.0,
        help="retries.wait_for_capacity_s: how long a call may wait for a rate-limited deployment (0: fail at once)",
    )
    options = parser.parse_args()
    total = options.requests or (300 if options.quick else 20_000)
    if (os.cpu_count() or 1) >= 2:
        # The gateway gets CPU 0 (below); the client and the upstreams share CPU 1.
        os.sched_setaffinity(0, {1})
    # The mocks' handlers meet connections the gateway gave up on (that is the point): not news.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    rng = random.Random(options.seed)
    upstreams = BackgroundMocks([FaultyOpenAI(rng, options.fault_rate) for _ in range(2)])
    gateway_port = free_port()
    rounds: list[dict[str, Any]] = []
    try:
        with gateway(gateway_config(upstreams.ports(), options.wait_for_capacity_s), gateway_port) as worker:
            asyncio.run(load(gateway_port, WARMUP))
            rss = {"after_warmup": rss_mib(worker)}
            for name in ("round_1", "round_2"):
                rounds.append(summarize(*asyncio.run(load(gateway_port, total))))
                rss[f"after_{name}"] = rss_mib(worker)
    finally:
        upstreams.close()
    hangs = sum(r["hangs"] for r in rounds)
    truncated = sum(r["truncated_ok"] for r in rounds)
    report: dict[str, Any] = {
        "date": timestamp(),
        "machine": machine(),
        "parameters": {
            "requests_per_round": total,
            "rounds": 2,
            "warmup": WARMUP,
            "concurrency": CONCURRENCY,
            "deadline_s": DEADLINE_S,
            "hang_margin_s": HANG_MARGIN_S,
            "fault_rate": options.fault_rate,
            "seed": options.seed,
            "wait_for_capacity_s": options.wait_for_capacity_s,
            "faults": [_fault_name(f) for f in FAULTS],
        },
        "faults_injected": injected(upstreams),
        "rounds": rounds,
        "error_examples": dict(sorted(EXAMPLES.items())),
        "hangs": hangs,
        "truncated_ok": truncated,
        "gateway_rss_mib": {k: round(v, 1) for k, v in rss.items()},
    }
    RESULTS.mkdir(exist_ok=True)
    name = "soak-quick" if options.quick else "soak"
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"Soak: 2 rounds of {total} calls (half streams), concurrency {CONCURRENCY}, fault rate {options.fault_rate}")
    for i, r in enumerate(rounds, 1):
        print(
            f"round {i}: {r['seconds']} s, {r['calls_per_s']} calls/s, ok {r['ok_share']:.1%}, "
            f"p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, max {r['max_ms']} ms; "
            f"unary {r['outcomes']['unary']}, stream {r['outcomes']['stream']}"
        )
    print(f"faults injected: {report['faults_injected']}")
    print("gateway RSS (MiB): " + ", ".join(f"{k} {v:.1f}" for k, v in rss.items()))
    print(f"hangs {hangs}, truncated streams {truncated}")
    if hangs or truncated:
        sys.exit(1)


if __name__ == "__main__":
    main()
