"""Evaluating a deployment on real traffic, end to end with two upstreams of known profiles: shadow
calls record both sides and never reach the caller, experiments keep a key on its variant, and
the comparison by policy recovers the profiles' known differences within its intervals."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import grpc
import pytest

from service.access import REQUEST_ID
from service.api.switchboard.admin.v1 import admin_pb2, admin_pb2_grpc
from service.api.switchboard.v1 import gateway_pb2_grpc as pb_grpc
from service.config.schema import LedgerSettings
from service.ledger import Ledger
from service.server import Gateway
from service.store import StoreThread
from service.store.records import SHADOW_METHOD, CallRecord
from service.store.sqlite import open_sqlite
from tests.conftest import StartServer
from tests.mock_openai import MockOpenAI
from tests.serving import json_access_lines
from tests.test_e2e import chat_request
from tests.test_workers import Workers


@pytest.fixture
async def fast() -> AsyncIterator[MockOpenAI]:
    mock = await MockOpenAI(latency_s=0.02).start()
    yield mock
    await mock.stop()


@pytest.fixture
async def slow() -> AsyncIterator[MockOpenAI]:
    """Slower, failing every fifth request, answering in the same words as `fast`."""
    mock = await MockOpenAI(latency_s=0.15, fail_every=5).start()
    yield mock
    await mock.stop()


def config(tmp_path: Path, fast: MockOpenAI, slow: MockOpenAI, policy: str, slow_rpm: int | None = None) -> str:
    rpm = f", rpm: {slow_rpm}" if slow_rpm else ""
    return f"""
server: {{admin_listen: '127.0.0.1:0'}}
store: {{path: '{tmp_path / "ledger.db"}'}}
ledger: {{enabled: true, batch_interval_s: 0.05}}
default_group: chat
model_groups:
  - name: chat
    deployments:
      - {{id: a, type: openai_compatible, model: a-model, base_url: '{fast.base_url}', region: eu,
         context_window: 8000, capabilities: [streaming], input_price_per_mtok: 10, output_price_per_mtok: 10}}
  - name: candidates
    deployments:
      - {{id: b, type: openai_compatible, model: b-model, base_url: '{slow.base_url}', region: eu,
         context_window: 8000, capabilities: [streaming], input_price_per_mtok: 4, output_price_per_mtok: 4{rpm}}}
policies:
{policy}
"""


SHADOW = """
  - id: evaluate-b
    when: {field: model, eq: chat}
    route_to: {deployments: [a]}
    shadow: {deployments: [b], sample: 1.0, max_in_flight: 64}
"""

EXPERIMENT = """
  - id: split
    experiment:
      id: ab-1
      sticky_by: metadata.user
      variants:
        - {name: control, deployments: [a], weight: 1}
        - {name: candidate, deployments: [b], weight: 1}
"""


async def compare_policy(gateway: Gateway, policy: str) -> admin_pb2.CompareDeploymentsResponse:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.admin_port}") as channel:
        answer: admin_pb2.CompareDeploymentsResponse = await admin_pb2_grpc.AdminStub(channel).CompareDeployments(
            admin_pb2.CompareDeploymentsRequest(policy=policy)
        )
        return answer


async def shadows_done(gateway: Gateway, expected: int) -> admin_pb2.Comparison:
    """The shadow comparison once `expected` shadow calls are in the ledger."""
    for _ in range(200):
        answer = await compare_policy(gateway, "evaluate-b")
        shadow = answer.comparisons[0]
        if shadow.sides[1].calls >= expected:
            return shadow
        await asyncio.sleep(0.05)
    raise AssertionError(f"only {shadow.sides[1].calls} of {expected} shadow calls were recorded")


async def test_shadow_calls_record_both_sides_and_never_slow_the_caller(
    tmp_path: Path, start_server: StartServer, fast: MockOpenAI, slow: MockOpenAI
) -> None:
    slow.latency_s = 1.5  # far beyond the caller's deadline below: waiting on a shadow would fail the call
    gateway = await start_server(config(tmp_path, fast, slow, SHADOW))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        stub = pb_grpc.GatewayStub(channel)
        answers = await asyncio.gather(*(stub.Chat(chat_request(text=f"question {i}"), timeout=1.0) for i in range(20)))
        for i in range(4):
            streamed = [e async for e in stub.ChatStream(chat_request(text=f"streamed {i}"), timeout=1.0)]
            assert streamed[-1].WhichOneof("event") == "end"
    assert {answer.served.deployment for answer in answers} == {"a"}
    shadow = await shadows_done(gateway, 24)
    primary, copy = shadow.sides
    assert (shadow.kind, primary.side, copy.side, copy.deployment) == ("shadow", "primary", "shadow", "b")
    assert (primary.calls, copy.calls) == (24, 24)
    # b fails every fifth request: 4 of 24; the answers it gave agree with a's (the same words).
    assert round(copy.success_rate.estimate * 24) == 20
    assert copy.success_rate.low <= 20 / 24 <= copy.success_rate.high
    assert (copy.compared_answers, copy.agreement_rate.estimate) == (20, 1.0)
    assert copy.latency_p50_ms.estimate >= 1500 and primary.latency_p50_ms.estimate < 1000
    assert copy.HasField("ttft_p50_ms"), "the streamed copy measured its first token"
    assert any(clause.startswith("agreement 100%") for clause in copy.verdict)
    with sqlite3.connect(tmp_path / "ledger.db") as db:
        ended = db.execute("SELECT method, status, finish_reason, count(*) FROM calls GROUP BY 1, 2, 3").fetchall()
    assert sorted(ended) == [
        ("Chat", "OK", "stop", 20),
        ("ChatStream", "OK", "stop", 4),
        (SHADOW_METHOD, "FAILED", "", 4),
        (SHADOW_METHOD, "OK", "stop", 20),
    ], "both sides' finish reasons, and the shadows' failures"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.admin_port}") as channel:
        spend = await admin_pb2_grpc.AdminStub(channel).GetSpend(admin_pb2.GetSpendRequest())
    shadowed = [row for row in spend.rows if row.shadow]
    assert sum(row.calls for row in shadowed) == 24 and all(row.cost_usd > 0 for row in shadowed)
    assert sum(row.calls for row in spend.rows if not row.shadow) == 24
    own = sum(row.cost_usd for row in spend.rows if not row.shadow)
    assert spend.total_cost_usd == pytest.approx(own), "the tenants' own calls, not the gateway's shadows"
    assert spend.shadow_cost_usd == pytest.approx(sum(row.cost_usd for row in shadowed))


async def test_shadow_failures_never_reach_the_caller(
    tmp_path: Path, start_server: StartServer, fast: MockOpenAI, slow: MockOpenAI
) -> None:
    slow.latency_s, slow.fail_every = 0.0, 1  # every shadow call fails at once
    gateway = await start_server(config(tmp_path, fast, slow, SHADOW))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        stub = pb_grpc.GatewayStub(channel)
        answers = await asyncio.gather(*(stub.Chat(chat_request(text=f"q{i}"), timeout=5.0) for i in range(10)))
    assert all(answer.served.deployment == "a" and answer.message.content[0].text for answer in answers)
    # Five failures in a row open b's breaker: the shadows after them are refused, not made.
    copy = (await shadows_done(gateway, 5)).sides[1]
    assert (copy.success_rate.estimate, copy.compared_answers) == (0.0, 0)


async def test_only_requests_the_caller_got_an_answer_to_are_copied(
    tmp_path: Path, start_server: StartServer, fast: MockOpenAI, slow: MockOpenAI
) -> None:
    fast.fail_every = 2  # every other primary fails: a copy of it would be spent on nothing the caller got
    gateway = await start_server(config(tmp_path, fast, slow, SHADOW))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        stub = pb_grpc.GatewayStub(channel)
        for i in range(10):
            with contextlib.suppress(grpc.aio.AioRpcError):
                await stub.Chat(chat_request(text=f"q{i}"), timeout=5.0)
    copy = (await shadows_done(gateway, 5)).sides[1]
    await asyncio.sleep(0.3)
    assert (fast.answered, slow.answered, copy.calls) == (10, 5, 5)


def test_a_full_ledger_buffer_drops_shadow_records_first() -> None:
    ledger = Ledger(cast(StoreThread, None), LedgerSettings(enabled=True, max_buffered=2))

    def record(method: str, request_id: str) -> CallRecord:
        return CallRecord(0.0, request_id, "t", "", method, "chat", "a", "OK", "ok", 1, 1, 0.1, 1.0)

    ledger.add_record(record("Chat", "one"))
    ledger.add_record(record(SHADOW_METHOD, "shadow"))
    ledger.add_record(record(SHADOW_METHOD, "shadow-refused"))
    ledger.add_record(record("Chat", "two"))
    assert [r.request_id for r in ledger._buffer] == ["shadow", "two"]
    assert ledger.dropped == 2


def test_a_shadow_is_paired_once_with_the_latest_call_of_its_id_before_it(tmp_path: Path) -> None:
    store = open_sqlite(tmp_path / "s.db")
    now = time.time()

    def call(at: float, request_id: str, latency_ms: float, **fields: Any) -> CallRecord:
        base = CallRecord(at, request_id, "t", "", "Chat", "chat", "a", "OK", "ok", 1, 1, 0.1, latency_ms)
        return base._replace(policy="p", **fields)

    store.add_calls(
        [
            call(now - 3, "reused", 100.0, attempt_ms=90.0),
            call(now - 2, "reused", 200.0, attempt_ms=180.0),
            call(now - 1, "s1", 50.0, method=SHADOW_METHOD, deployment="b", shadow_of="reused", agrees=True),
            call(now + 1, "reused", 300.0),  # after the shadow: not the call it copied
        ]
    )
    pairs = store.shadow_pairs("p", "b", now - 60, 100)
    store.close()
    assert len(pairs) == 1
    copied, shadow = pairs[0]
    assert (copied[1], shadow[1], shadow[-1]) == (180.0, 50.0, 1), "the attempt's latency against the shadow's"


async def test_hanging_shadows_hold_neither_callers_nor_a_stop(
    tmp_path: Path, start_server: StartServer, fast: MockOpenAI, slow: MockOpenAI
) -> None:
    slow.latency_s = 60.0
    gateway = await start_server(config(tmp_path, fast, slow, SHADOW))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        stub = pb_grpc.GatewayStub(channel)
        for i in range(10):
            await stub.Chat(chat_request(text=f"q{i}"), timeout=2.0)
    await asyncio.sleep(0.2)
    assert (slow.answered, gateway.shadows.running) == (10, 10), "ten shadows hang upstream"
    began = time.monotonic()
    await gateway.stop(grace_s=0)
    assert time.monotonic() - began < 10, "the stop did not wait out the hang"
    assert gateway.shadows.running == 0, "the stop ended them, their leases given back"


async def test_shadow_calls_are_refused_before_callers_when_budget_is_short(
    tmp_path: Path, start_server: StartServer, fast: MockOpenAI, slow: MockOpenAI
) -> None:
    slow.fail_every = 0
    gateway = await start_server(config(tmp_path, fast, slow, SHADOW, slow_rpm=10))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        stub = pb_grpc.GatewayStub(channel)
        for i in range(20):
            await stub.Chat(chat_request(text=f"q{i}"), timeout=5.0)
        await asyncio.sleep(0.5)
        assert slow.answered == 8, "shadows leave priority_reserve (20%) of b's 10 rpm to callers"
        for i in range(2):
            answer = await stub.Chat(chat_request(model="candidates", text=f"mine {i}"), timeout=5.0)
            assert answer.served.deployment == "b", "what shadows left is the callers'"


async def test_an_experiment_keeps_each_user_on_a_variant_and_is_compared(
    tmp_path: Path, start_server: StartServer, fast: MockOpenAI, slow: MockOpenAI
) -> None:
    gateway = await start_server(config(tmp_path, fast, slow, EXPERIMENT))
    seen: dict[str, set[tuple[str, str]]] = {}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        stub = pb_grpc.GatewayStub(channel)

        async def ask(user: str, i: int) -> None:
            request = chat_request(text=f"{user} asks {i}")
            request.metadata["user"] = user
            try:
                answer = await stub.Chat(request, timeout=5.0)
            except grpc.aio.AioRpcError:
                return  # b's known failures
            assert (answer.served.experiment, answer.served.variant) in {("ab-1", "control"), ("ab-1", "candidate")}
            seen.setdefault(user, set()).add((answer.served.variant, answer.served.deployment))

        for round_ in range(5):
            await asyncio.gather(*(ask(f"user-{u}", round_) for u in range(40)))
    assert all(len(served) == 1 for served in seen.values()), "each user on one variant, one deployment"
    split = Counter(variant for served in seen.values() for variant, _ in served)
    assert split["control"] >= 10 and split["candidate"] >= 10, split
    assert {deployment for served in seen.values() for variant, deployment in served if variant == "control"} == {"a"}

    answer = await compare_policy(gateway, "split")
    (experiment,) = answer.comparisons
    control, candidate = experiment.sides
    assert (experiment.kind, control.side, candidate.side) == ("experiment", "control", "candidate")
    assert (control.deployment, candidate.deployment) == ("a", "b")
    assert control.calls == split["control"] * 5 and control.success_rate.estimate == 1.0
    # b's known profile: one request in five fails, answers come 130 ms later at 40% of a's
    # prices, so that a call (a failed one costs nothing) costs 0.8 * 0.4 of what one of a's does.
    assert candidate.success_rate.low <= 0.8 <= candidate.success_rate.high
    difference = candidate.latency_p50_ms.estimate - control.latency_p50_ms.estimate
    assert 100 < difference < 250, difference
    assert "candidate is 68% cheaper per call" in candidate.verdict
    per_1k = candidate.cost_per_1k_output_usd
    assert per_1k.estimate / control.cost_per_1k_output_usd.estimate == pytest.approx(0.4), "the same answers at 40%"
    assert any(clause.startswith("p50 latency +") for clause in candidate.verdict)
    assert any(clause.startswith("success 80") for clause in candidate.verdict)


async def test_compare_by_policy_refuses_what_it_cannot_compare(
    tmp_path: Path, start_server: StartServer, fast: MockOpenAI, slow: MockOpenAI
) -> None:
    plain = "  - {id: plain, route_to: {deployments: [a]}}\n"
    gateway = await start_server(config(tmp_path, fast, slow, EXPERIMENT + plain))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.admin_port}") as channel:
        admin = admin_pb2_grpc.AdminStub(channel)
        for request, code in (
            (admin_pb2.CompareDeploymentsRequest(policy="nope"), grpc.StatusCode.NOT_FOUND),
            (admin_pb2.CompareDeploymentsRequest(policy="plain"), grpc.StatusCode.INVALID_ARGUMENT),
            (
                admin_pb2.CompareDeploymentsRequest(policy="split", deployments=["a", "b"]),
                grpc.StatusCode.INVALID_ARGUMENT,
            ),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await admin.CompareDeployments(request)
            assert raised.value.code() == code


STICKY_ACROSS_WORKERS = """
model_groups:
  - name: echo
    deployments:
      - {id: echo-a, type: echo, model: echo, context_window: 1000}
      - {id: echo-b, type: echo, model: echo, context_window: 1000}
policies:
  - id: split
    experiment:
      id: ab-2
      sticky_by: affinity_key
      variants: [{name: control, deployments: [echo-a]}, {name: candidate, deployments: [echo-b]}]
"""


async def test_sticky_assignment_holds_across_workers(tmp_path: Path) -> None:
    """Each call on a connection of its own, which the kernel gives to either worker: a key's
    calls get one variant whichever worker serves them (the access log says which did)."""
    workers = Workers(tmp_path, config_yaml=STICKY_ACROSS_WORKERS)
    variants: dict[str, set[str]] = {}
    try:
        workers.listening(2)
        for user in range(12):
            for call in range(4):
                request = chat_request(model="echo", text="hi")
                request.routing.affinity_key = f"user-{user}"
                options = [("grpc.use_local_subchannel_pool", 1)]
                async with grpc.aio.insecure_channel(f"127.0.0.1:{workers.port}", options=options) as channel:
                    answer = await pb_grpc.GatewayStub(channel).Chat(
                        request, timeout=10, metadata=((REQUEST_ID, f"u{user}-c{call}"),)
                    )
                variants.setdefault(f"user-{user}", set()).add(answer.served.variant)
    finally:
        log = await asyncio.to_thread(workers.stop)
    assert all(len(seen) == 1 for seen in variants.values()), variants
    assert {variant for seen in variants.values() for variant in seen} == {"control", "candidate"}
    access = json_access_lines(log)
    served_by = {line["process"] for line in access if re.fullmatch(r"u\d+-c\d+", str(line["request_id"]))}
    assert len(served_by) == 2, f"both workers served some of the calls: {served_by}"


def test_a_ledger_from_before_evaluation_gains_its_columns(tmp_path: Path) -> None:
    """A store made by an older version: opening it adds the new columns, its calls kept."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.execute(
            """CREATE TABLE calls (
            time REAL NOT NULL, request_id TEXT NOT NULL, tenant TEXT NOT NULL, key_id TEXT NOT NULL,
            method TEXT NOT NULL, model_group TEXT NOT NULL, deployment TEXT NOT NULL, status TEXT NOT NULL,
            outcome TEXT NOT NULL, input_tokens BIGINT NOT NULL, output_tokens BIGINT NOT NULL,
            cost_usd REAL NOT NULL, latency_ms REAL NOT NULL)"""
        )
        db.execute(
            "INSERT INTO calls VALUES (?, 'old', 'acme', '', 'Chat', 'chat', 'a', 'OK', 'ok', 1, 2, 0.5, 9.0)",
            (time.time(),),
        )
    for _ in range(2):  # and opening it again finds them there
        store = open_sqlite(path)
        store.add_calls(
            [
                CallRecord(
                    time.time(),
                    "new",
                    "acme",
                    "",
                    "Chat",
                    "chat",
                    "a",
                    "OK",
                    "ok",
                    1,
                    2,
                    0.5,
                    9.0,
                    ttft_ms=3.0,
                    policy="p",
                    experiment="x",
                    variant="v",
                )
            ]
        )
        rows = store.served("a", 0, 10)
        store.close()
    assert sorted(rows, key=lambda row: row[4] or 0) == [
        ("OK", 9.0, 0.5, 2, None, None, None),
        ("OK", 9.0, 0.5, 2, 3.0, None, None),
        ("OK", 9.0, 0.5, 2, 3.0, None, None),
    ]


def test_check_config_shows_what_an_experiment_and_a_shadow_do(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    base = STICKY_ACROSS_WORKERS.replace("sticky_by: affinity_key", "sticky_by: tenant")
    shadowed = base + "    shadow: {deployments: [echo-b], sample: 0.05}\n"
    path.write_text(shadowed)
    shown = subprocess.run(
        [sys.executable, "-m", "service", "check-config", str(path)], capture_output=True, text=True, timeout=30
    )
    assert shown.returncode == 0, shown.stderr
    assert (
        "split: when always → experiment ab-2 by tenant: variant control [echo-a] weight 1 ordered weighted"
        " or variant candidate [echo-b] weight 1 ordered weighted, copies 5% to shadow echo-b"
        " (at most 8 at once, leaving 20% of a deployment's rpm/tpm to callers)"
    ) in shown.stdout
    priorities = "rate_limits: {tenant_priorities: {a: high, b: low}, priority_reserve: 0.4}\n"
    path.write_text(shadowed + priorities)
    shown = subprocess.run(
        [sys.executable, "-m", "service", "check-config", str(path)], capture_output=True, text=True, timeout=30
    )
    assert "but never sends them" in shown.stdout, shown.stdout + shown.stderr
