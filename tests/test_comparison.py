"""The comparison's statistics on calls drawn from known distributions: its intervals hold the
true values, its verdict names the differences that are there and none that are not."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import grpc

from service.api.switchboard.admin.v1 import admin_pb2, admin_pb2_grpc
from service.api.switchboard.v1 import gateway_pb2 as pb
from service.api.switchboard.v1 import gateway_pb2_grpc as pb_grpc
from service.comparison import Served, served_calls, summarize, verdict, wilson
from service.store.records import CallRecord, FeedbackRecord
from service.store.sqlite import open_sqlite
from tests.conftest import StartServer
from tests.keyed import refused
from tests.test_e2e import chat_request

CALLS = 3000


def drawn(
    rng: random.Random, *, success: float, latency_ms: float, cost_usd: float, tokens: int, score: float
) -> list[Served]:
    return [
        Served(
            ok=rng.random() < success,
            latency_ms=rng.lognormvariate(0, 0.25) * latency_ms,
            cost_usd=cost_usd * rng.uniform(0.8, 1.2),
            output_tokens=tokens,
            score=score + rng.gauss(0, 0.2) if rng.random() < 0.3 else None,
        )
        for _ in range(CALLS)
    ]


def test_the_intervals_hold_the_known_values_and_the_verdict_names_the_differences() -> None:
    rng = random.Random(7)
    a = summarize("A", drawn(rng, success=0.95, latency_ms=500, cost_usd=0.002, tokens=200, score=0.7))
    b = summarize("B", drawn(rng, success=0.99, latency_ms=400, cost_usd=0.0012, tokens=200, score=0.7))
    assert a.success_rate.low <= 0.95 <= a.success_rate.high and b.success_rate.low <= 0.99 <= b.success_rate.high
    assert a.latency_p50_ms is not None and a.latency_p50_ms.low <= 500 <= a.latency_p50_ms.high
    assert b.cost_per_call_usd is not None and b.cost_per_call_usd.low <= 0.0012 <= b.cost_per_call_usd.high
    assert (
        b.cost_per_1k_output_usd is not None and b.cost_per_1k_output_usd.low <= 0.006 <= b.cost_per_1k_output_usd.high
    )
    said = verdict(a, b)
    assert "B is 40% cheaper per call" in said
    assert any(clause.startswith("p50 latency -") for clause in said)
    assert any(clause.startswith("success 99") for clause in said)
    assert not any(clause.startswith("feedback") for clause in said), "the scores are alike: nothing said"


def test_two_samples_of_one_deployment_get_no_verdict() -> None:
    rng = random.Random(11)
    same = {"success": 0.97, "latency_ms": 300.0, "cost_usd": 0.001, "tokens": 100, "score": 0.5}
    assert verdict(summarize("A", drawn(rng, **same)), summarize("B", drawn(rng, **same))) == []  # type: ignore[arg-type]


def test_wilson_stays_within_zero_and_one() -> None:
    none, every = wilson(0, 20), wilson(20, 20)
    assert none.low == 0.0 and 0 < none.high < 0.2
    assert every.high == 1.0 and 0.8 < every.low < 1.0


def test_the_stores_calls_carry_their_own_tenants_feedback(tmp_path: Path) -> None:
    store = open_sqlite(tmp_path / "s.db")
    now = time.time()

    def call(request_id: str, tenant: str, deployment: str, status: str = "OK") -> CallRecord:
        return CallRecord(now, request_id, tenant, "", "Chat", "chat", deployment, status, "ok", 10, 100, 0.01, 250.0)

    store.add_calls([call("r1", "acme", "a"), call("r2", "acme", "a", "UNAVAILABLE"), call("r3", "acme", "b")])
    store.add_feedback(
        [
            FeedbackRecord(now, "r1", "acme", "", 1.0, "", ""),
            FeedbackRecord(now, "r1", "acme", "", 0.5, "", ""),
            FeedbackRecord(now, "r1", "other", "", 0.0, "", ""),  # another tenant's: not r1's
            FeedbackRecord(now, "r3", "acme", "", None, "thumbs_up", ""),  # no score
        ]
    )
    served = served_calls(store.served("a", now - 60, 100))
    store.close()
    assert sorted((c.ok, c.score) for c in served) == [(False, None), (True, 0.75)]
    side = summarize("a", served)
    assert (side.calls, side.scored_calls, side.success_rate.estimate) == (2, 1, 0.5)


TWO_PRICES = """
server: {admin_listen: '127.0.0.1:0'}
ledger: {enabled: true}
model_groups:
  - name: a
    deployments:
      - {id: a-echo, type: echo, model: echo, region: eu, context_window: 1000,
         input_price_per_mtok: 10, output_price_per_mtok: 10}
  - name: b
    deployments:
      - {id: b-echo, type: echo, model: echo, region: eu, context_window: 1000,
         input_price_per_mtok: 4, output_price_per_mtok: 4}
"""


async def test_compare_deployments_answers_from_the_ledger(tmp_path: Path, start_server: StartServer) -> None:
    gateway = await start_server(f"store: {{path: '{tmp_path / 's.db'}'}}\n" + TWO_PRICES)
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as data,
        grpc.aio.insecure_channel(f"127.0.0.1:{gateway.admin_port}") as admin_channel,
    ):
        stub, admin = pb_grpc.GatewayStub(data), admin_pb2_grpc.AdminStub(admin_channel)
        for group in ("a", "b"):
            for i in range(30):
                answer = await stub.Chat(chat_request(model=group, text="one two three"))
                if i % 3 == 0:
                    await stub.Feedback(pb.FeedbackRequest(request_id=answer.id, score=1.0 if group == "b" else 0.0))
        compared = await admin.CompareDeployments(admin_pb2.CompareDeploymentsRequest(deployments=["a-echo", "b-echo"]))
        for deployments, code in (
            (["a-echo"], grpc.StatusCode.INVALID_ARGUMENT),
            (["a-echo", "nope"], grpc.StatusCode.NOT_FOUND),
        ):
            error = await refused(
                admin.CompareDeployments(admin_pb2.CompareDeploymentsRequest(deployments=deployments))
            )
            assert error.code() == code
        command = [sys.executable, "-m", "service", "compare", "a-echo", "b-echo", "--since", "1h"]
        command += ["--admin", f"127.0.0.1:{gateway.admin_port}"]
        # In a thread: the gateway that answers runs on this loop.
        printed = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=60)
    assert printed.returncode == 0, printed.stderr
    assert "b-echo is 60% cheaper per call" in json.loads(printed.stdout)["deployments"][1]["verdict"]
    a, b = compared.deployments
    assert (a.deployment, a.calls, b.calls, b.scored_calls) == ("a-echo", 30, 30, 10)
    assert a.success_rate.estimate == 1.0 and b.cost_per_call_usd.estimate < a.cost_per_call_usd.estimate
    assert a.verdict == [] and "b-echo is 60% cheaper per call" in b.verdict
    assert "feedback 1.00 against 0.00" in b.verdict and "Wilson" in compared.method
