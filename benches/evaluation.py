"""An evaluation on real traffic, end to end: two mock upstreams of known profiles behind one
gateway, a policy shadowing the candidate and another running an experiment between them; the
comparison by policy, checked against the known profiles, and the report the README shows.

    .venv/bin/python -m benches.evaluation            # 800 calls per policy
    .venv/bin/python -m benches.evaluation --quick    # 120 calls per policy (CI)

The incumbent answers in about 250 ms at $2.50/$10 per million tokens and never fails; the
candidate in about 120 ms at $0.15/$0.60, fails one request in 25, and answers one in 10 in other
words than the incumbent. Half the calls stream (their time to first token is measured).
Writes benches/results/evaluation.json and docs/evaluation-report.png (-quick.json and nothing
else with --quick).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc

from benches.harness import RESULTS, ROOT, machine, timestamp
from benches.mock_upstreams import BackgroundMocks
from service.api.switchboard.admin.v1 import admin_pb2, admin_pb2_grpc
from service.api.switchboard.v1 import gateway_pb2 as pb
from service.api.switchboard.v1 import gateway_pb2_grpc as pb_grpc
from service.comparison_report import render
from service.config import parse_config
from service.server import Gateway
from tests.mock_openai import MockOpenAI

REPORT = ROOT / "docs" / "evaluation-report.png"
CONCURRENCY = 16
USERS = 80


def config(folder: Path, incumbent: int, candidate: int) -> str:
    def deployment(name: str, port: int, prices: str) -> str:
        return (
            f"      - {{id: {name}, type: openai_compatible, model: {name}-model, base_url: 'http://127.0.0.1:{port}/v1',"
            f" region: eu, context_window: 16000, capabilities: [streaming], {prices}}}\n"
        )

    return f"""
server: {{admin_listen: '127.0.0.1:0'}}
store: {{path: '{folder / "ledger.db"}'}}
ledger: {{enabled: true, batch_interval_s: 0.2}}
default_group: assistant
model_groups:
  - name: assistant
    deployments:
{deployment("incumbent", incumbent, "input_price_per_mtok: 2.5, output_price_per_mtok: 10")}
  - name: candidates
    deployments:
{deployment("candidate", candidate, "input_price_per_mtok: 0.15, output_price_per_mtok: 0.6")}
policies:
  - id: shadowed
    when: {{field: task, eq: shadowed}}
    route_to: {{deployments: [incumbent]}}
    shadow: {{deployments: [candidate], sample: 0.5, max_in_flight: 32}}
  - id: rollout
    when: {{field: task, eq: rollout}}
    experiment:
      id: candidate-10pct
      sticky_by: metadata.user
      variants:
        - {{name: incumbent, deployments: [incumbent], weight: 9}}
        - {{name: candidate, deployments: [candidate], weight: 1}}
    fallback: [{{deployments: [incumbent]}}]
"""


QUESTIONS = [
    "What is the capital of Portugal?",
    "Summarise the meeting notes in two lines.",
    "Translate 'good morning' into German.",
    "Write a haiku about routers.",
    "How many days are there in a leap year?",
]


async def drive(stub: pb_grpc.GatewayStub, task: str, calls: int, rng: random.Random) -> int:
    """`calls` requests of `task`, half of them streamed, from USERS users; the failures counted."""
    failures = 0
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(i: int) -> None:
        nonlocal failures
        request = pb.ChatRequest(
            model="auto",
            messages=[pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text=rng.choice(QUESTIONS))])],
            routing=pb.RoutingHints(task=task),
            metadata={"user": f"user-{rng.randrange(USERS)}"},
        )
        async with gate:
            try:
                if i % 2:
                    async for _ in stub.ChatStream(request, timeout=30):
                        pass
                else:
                    await stub.Chat(request, timeout=30)
            except grpc.aio.AioRpcError:
                failures += 1

    await asyncio.gather(*(one(i) for i in range(calls)))
    return failures


async def run(calls: int, quick: bool) -> dict[str, Any]:
    mocks = BackgroundMocks(
        [
            MockOpenAI(latency_s=0.25, latency_spread=0.3),
            MockOpenAI(latency_s=0.12, latency_spread=0.4, fail_every=25, reword_every=10),
        ]
    )
    try:
        with tempfile.TemporaryDirectory() as folder:
            incumbent, candidate = mocks.ports()
            gateway = Gateway(parse_config(config(Path(folder), incumbent, candidate)), "127.0.0.1:0", environ={})
            await gateway.start()
            try:
                rng = random.Random(1)
                async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
                    stub = pb_grpc.GatewayStub(channel)
                    failed = {task: await drive(stub, task, calls, rng) for task in ("shadowed", "rollout")}
                await asyncio.sleep(1.0)  # the last shadow calls end and the ledger writes them
                async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.admin_port}") as channel:
                    admin = admin_pb2_grpc.AdminStub(channel)
                    answers = [
                        await admin.CompareDeployments(admin_pb2.CompareDeploymentsRequest(policy=policy))
                        for policy in ("shadowed", "rollout")
                    ]
            finally:
                await gateway.stop(grace_s=1)
    finally:
        mocks.close()
    combined = admin_pb2.CompareDeploymentsResponse(
        comparisons=[c for answer in answers for c in answer.comparisons], method=answers[0].method
    )
    if not quick:
        REPORT.parent.mkdir(exist_ok=True)
        title = "Switchboard: evaluating a candidate (two mock upstreams of known profiles)"
        render(combined, REPORT, title=title, generated_at=datetime.now(UTC))
    return {"calls_per_policy": calls, "caller_failures": failed, "comparisons": summary(combined)}


def summary(response: admin_pb2.CompareDeploymentsResponse) -> list[dict[str, Any]]:
    def interval(side: admin_pb2.ComparedDeployment, name: str) -> list[float] | None:
        if not side.HasField(name):
            return None
        value = getattr(side, name)
        return [round(value.estimate, 6), round(value.low, 6), round(value.high, 6)]

    measures = (
        "success_rate",
        "latency_p50_ms",
        "latency_p95_ms",
        "ttft_p50_ms",
        "cost_per_call_usd",
        "agreement_rate",
    )
    return [
        {
            "title": comparison.title,
            "sides": [
                {"side": s.side, "deployment": s.deployment, "calls": s.calls, "verdict": list(s.verdict)}
                | {name: interval(s, name) for name in measures}
                for s in comparison.sides
            ],
        }
        for comparison in response.comparisons
    ]


def check(result: dict[str, Any]) -> list[str]:
    """Where the comparison missed a known difference of the profiles (empty: none)."""
    comparisons = result["comparisons"]
    missed: list[str] = []
    for comparison in comparisons:
        _, other = comparison["sides"]
        shadow = comparison["title"].startswith("shadow")
        # A variant's calls fall back to the incumbent when the candidate fails: only the shadow
        # sees the candidate's own success rate.
        if shadow and not other["success_rate"][1] <= 0.96 <= other["success_rate"][2]:
            missed.append(f"{comparison['title']}: success {other['success_rate']} should hold 0.96")
        if not any(clause.endswith("cheaper per call") for clause in other["verdict"]):
            missed.append(f"{comparison['title']}: no cheaper verdict in {other['verdict']}")
        agreement = other["agreement_rate"]
        if shadow and not (agreement and agreement[1] <= 0.9 <= agreement[2]):
            missed.append(f"{comparison['title']}: agreement {agreement} should hold 0.9")
    return missed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="120 calls per policy, no report (smoke test)")
    options = parser.parse_args()
    calls = 120 if options.quick else 800
    result = asyncio.run(run(calls, options.quick))
    missed = [] if options.quick else check(result)
    for comparison in result["comparisons"]:
        for side in comparison["sides"]:
            print(f"{comparison['title']}: {side['side']} ({side['calls']} calls): {'; '.join(side['verdict']) or '-'}")
    document = {"date": timestamp(), "machine": machine(), **result, "missed": missed}
    name = "evaluation-quick.json" if options.quick else "evaluation.json"
    (RESULTS / name).write_text(json.dumps(document, indent=2) + "\n")
    if missed:
        print("the comparison missed known differences:\n  " + "\n  ".join(missed), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
