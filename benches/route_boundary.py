"""Time router_core.Router.route called from a Python loop (the PyO3 boundary included),
and the input-token estimate of a typical request, and check that a million decisions leave
memory flat.

    .venv/bin/python -m benches.route_boundary            # timings, then the memory check
    .venv/bin/python -m benches.route_boundary --quick    # a smoke run (CI)

Each call is a full decision (20 policies, the last one matching; filters; order; the first
candidate's lease), then the lease is released; the median over several rounds is reported per
strategy (weighted, priority, round_robin, balanced) at 4, 64 and 256 deployments in the group,
and for weighted also for a router whose budgets, breakers and cool-downs are in a shared region
(`shared_state`, what the workers of `serve --workers N` use). Results:
benches/results/route_boundary.json (route_boundary-quick.json with --quick).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from google.protobuf import struct_pb2

import router_core
from benches.harness import RESULTS, machine, rss_mib, timestamp
from service.api.switchboard.v1 import gateway_pb2 as pb
from service.tokens import estimate_input_tokens

MISSES: list[dict[str, Any]] = [
    {"field": "task", "eq": "code"},
    {"field": "task", "in": ["summarize", "translate"]},
    {"field": "tenant", "prefix": "beta-"},
    {"field": "tenant", "regex": "^(internal|staff)-[0-9]+$"},
    {"field": "tags", "contains": "batch"},
    {"field": "metadata.team", "eq": "finance"},
    {"field": "input_tokens", "gt": 100_000},
    {"field": "max_output_tokens", "gte": 32_000},
    {"field": "model", "eq": "smart"},
    {"all": [{"field": "task", "eq": "chat"}, {"field": "tags", "contains": "nope"}]},
] * 2


def routing_config(deployments: int, strategy: str = "weighted") -> str:
    ids = [f"d{i}" for i in range(deployments)]
    policies = [{"id": f"miss-{i}", "when": when, "route_to": {"groups": ["g"]}} for i, when in enumerate(MISSES[:19])]
    policies.append({"id": "chat", "when": {"field": "task", "eq": "chat"}, "route_to": {"groups": ["g"]}})
    return json.dumps(
        {
            "default_group": "g",
            "deployments": [
                {
                    "id": dep,
                    "region": "eu" if i % 4 else "us",
                    "context_window": 128_000,
                    "capabilities": ["streaming", "tools"],
                    "input_price_per_mtok": 1.0,
                    "output_price_per_mtok": 2.0,
                    "weight": 1.0 + i % 3,
                    "rpm": 1_000_000,
                    "tpm": 1_000_000_000,
                }
                for i, dep in enumerate(ids)
            ],
            "model_groups": [{"name": "g", "strategy": strategy, "deployments": ids}],
            "policies": policies,
        }
    )


# The strategies the decision targets are set for, and the fleet sizes they are measured at.
STRATEGIES = ("weighted", "priority", "round_robin", "balanced")
SIZES = (4, 64, 256)


def decide(router: router_core.Router) -> router_core.Decision:
    return router.route(
        "auto",
        input_tokens=1000,
        max_output_tokens=500,
        capabilities=["streaming"],
        tenant="acme",
        task="chat",
        tags=["web"],
    )


def median_call_us(routers: list[router_core.Router], calls: int, rounds: int) -> list[float]:
    """Each router's median µs per call, their rounds taken in turn so that the machine's drift
    falls on all alike."""
    samples: list[list[float]] = [[] for _ in routers]
    for _ in range(rounds):
        for router, taken in zip(routers, samples, strict=True):
            started = time.perf_counter()
            for _ in range(calls):
                lease = decide(router).lease
                assert lease is not None
                router.release(lease)
            taken.append((time.perf_counter() - started) / calls * 1e6)
    return [statistics.median(taken) for taken in samples]


def typical_request() -> pb.ChatRequest:
    """A system prompt, two user turns around an answer with code, and one tool: 0.9 KB of text."""
    parameters = struct_pb2.Struct()
    parameters.update({"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}})
    turns = [
        (pb.ROLE_SYSTEM, "You are a careful assistant. Answer briefly and cite the documentation where you can. " * 2),
        (pb.ROLE_USER, "Why does this return None for an empty list?\n\ndef first(items):\n    for item in items:\n"
         "        return item\n"),
        (pb.ROLE_ASSISTANT, "Because the loop body never runs: with no item the function falls off its end, and a "
         "Python function that ends without a return statement returns None. Return a default instead. " * 3),
        (pb.ROLE_USER, "Thanks. And what will the weather be in Zürich for the next three days?"),
    ]  # fmt: skip
    return pb.ChatRequest(
        model="auto",
        messages=[pb.Message(role=role, content=[pb.ContentPart(text=text)]) for role, text in turns],
        tools=[pb.Tool(name="get_weather", description="The forecast for a city.", parameters=parameters)],
    )


def median_estimate_us(calls: int, rounds: int) -> float:
    request = typical_request()
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(calls):
            estimate_input_tokens(request.messages, request.tools)
        samples.append((time.perf_counter() - started) / calls * 1e6)
    return statistics.median(samples)


def memory_check(decisions: int) -> None:
    router = router_core.Router(routing_config(4))
    checkpoints = {decisions // 10, decisions}
    for i in range(1, decisions + 1):
        decision = decide(router)
        assert decision.lease is not None
        router.record(decision.lease, outcome="ok", latency_ms=float(i % 97), input_tokens=900, output_tokens=300)
        if i in checkpoints:
            print(f"RSS after {i:>9,} decisions and records: {rss_mib(os.getpid()):7.1f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few calls only (smoke test)")
    options = parser.parse_args()
    calls, rounds = (100, 3) if options.quick else (20_000, 15)
    results: dict[str, Any] = {"date": timestamp(), "machine": machine(), "us_per_decision": {}}
    for strategy in STRATEGIES:
        for deployments in SIZES:
            config = routing_config(deployments, strategy)
            # About as long a round at every size: fewer calls where each takes longer.
            sized = max(calls * 4 // deployments, min(calls, 200))
            with tempfile.TemporaryDirectory() as shared:
                routers = [router_core.Router(config)]
                if strategy == "weighted":
                    routers.append(router_core.Router(config, shared_state=Path(shared) / "state"))
                medians = median_call_us(routers, sized, rounds)
            results["us_per_decision"][f"{strategy}/{deployments}"] = [round(m, 3) for m in medians]
            line = f"route+release from Python, {strategy:>11}, {deployments:>3} deployments:"
            line += f" {medians[0]:7.2f} µs median"
            if len(medians) > 1:
                line += f", {medians[1]:7.2f} µs with its state in a shared region ({medians[1] - medians[0]:+.2f})"
            print(line, flush=True)
    estimate = median_estimate_us(calls, rounds)
    results["estimate_input_tokens_us"] = round(estimate, 3)
    print(f"estimate_input_tokens, 4 messages and a tool: {estimate:6.2f} µs median")
    name = "route_boundary-quick.json" if options.quick else "route_boundary.json"
    (RESULTS / name).write_text(json.dumps(results, indent=2) + "\n")
    memory_check(1_000 if options.quick else 1_000_000)


if __name__ == "__main__":
    main()
