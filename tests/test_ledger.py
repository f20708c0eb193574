"""The ledger: every chat's record in the store, exactly, under concurrency; a store that will not
take records fails or slows no call and gets the backlog when it comes back; a gateway killed
mid-load loses at most a batch interval's records; spend summed per day, tenant, key and group."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from service.access import Call
from service.api.switchboard.admin.v1 import admin_pb2, admin_pb2_grpc
from service.api.switchboard.v1 import gateway_pb2 as pb
from service.api.switchboard.v1 import gateway_pb2_grpc as pb_grpc
from service.config.schema import LedgerSettings
from service.identity import ANONYMOUS
from service.ledger import Ledger
from service.store import StoreThread
from service.store.records import CallRecord, FeedbackRecord
from service.store.sql import SqlStore
from service.store.sqlite import open_sqlite
from tests.conftest import StartServer
from tests.mock_openai import MockOpenAI
from tests.serving import Serve
from tests.test_e2e import chat_request, config


def ledgered(tmp_path: Path, upstream: MockOpenAI, interval_s: float = 0.2) -> str:
    return (
        f"server: {{admin_listen: '127.0.0.1:0'}}\n"
        f"store: {{path: '{tmp_path / 'ledger.db'}'}}\n"
        f"ledger: {{enabled: true, batch_interval_s: {interval_s}}}\n" + config(upstream)
    )


def rows(path: Path) -> list[tuple[str, str, float, int]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT request_id, status, cost_usd, output_tokens FROM calls").fetchall()


async def test_every_chat_is_recorded_exactly_under_concurrency(
    tmp_path: Path, upstream: MockOpenAI, start_server: StartServer
) -> None:
    gateway = await start_server(ledgered(tmp_path, upstream))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        stub = pb_grpc.GatewayStub(channel)

        async def streamed() -> tuple[str, float]:
            events = [event async for event in stub.ChatStream(chat_request(model="chat", text="a b c"))]
            return events[0].start.id, events[-1].end.cost_usd

        async def unary() -> tuple[str, float]:
            answer = await stub.Chat(chat_request(model="chat", text="one two"))
            return answer.id, answer.cost_usd

        answers = await asyncio.gather(*(unary() if i % 3 else streamed() for i in range(60)))
        await stub.ListModels(pb.ListModelsRequest())
    await gateway.stop(0)  # the last batch is written as the gateway stops
    written = rows(tmp_path / "ledger.db")
    assert len(written) == 60, "one row per chat, none for ListModels"
    assert {row[0] for row in written} == {request_id for request_id, _ in answers}
    assert sum(row[2] for row in written) == pytest.approx(sum(cost for _, cost in answers))
    assert sum(cost for _, cost in answers) > 0 and {row[1] for row in written} == {"OK"}


async def test_spend_is_summed_through_the_admin_api_and_the_command(
    tmp_path: Path, upstream: MockOpenAI, start_server: StartServer
) -> None:
    gateway = await start_server(ledgered(tmp_path, upstream, interval_s=30))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        costs = [(await pb_grpc.GatewayStub(channel).Chat(chat_request(model="chat"))).cost_usd for _ in range(3)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.admin_port}") as admin:
        # Asked before the 30 s batch is due: the answer includes this process's latest calls.
        spend = await admin_pb2_grpc.AdminStub(admin).GetSpend(admin_pb2.GetSpendRequest())
    (row,) = spend.rows
    assert (row.model_group, row.calls, row.tenant) == ("chat", 3, "")
    assert row.day == time.strftime("%Y-%m-%d", time.gmtime())
    assert row.cost_usd == pytest.approx(sum(costs)) and spend.total_cost_usd == pytest.approx(sum(costs))
    command = [sys.executable, "-m", "service", "spend", "--admin", f"127.0.0.1:{gateway.admin_port}", "--since", "1d"]
    result = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["rows"][0]["calls"] == "3"


class _Away:
    """A store that refuses writes while `away`, as a full disk or a database outage would."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self.away = True

    def close(self) -> None:
        self.store.close()

    def add_calls(self, records: list[CallRecord]) -> None:
        if self.away:
            raise sqlite3.OperationalError("database or disk is full")
        self.store.add_calls(records)

    def add_feedback(self, records: list[FeedbackRecord]) -> None:
        if self.away:
            raise sqlite3.OperationalError("database or disk is full")
        self.store.add_feedback(records)


async def test_a_store_that_will_not_take_records_fails_no_call_and_gets_the_backlog(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = open_sqlite(tmp_path / "l.db")
    away = _Away(store)
    thread = StoreThread(away)  # type: ignore[arg-type]
    ledger = Ledger(thread, LedgerSettings(enabled=True, batch_interval_s=0.01, max_buffered=50))

    def call(i: int) -> Call:
        made = Call("Chat", f"r{i}", caller=ANONYMOUS)
        made.cost_usd = 0.5
        return made

    for i in range(40):
        ledger.record(call(i), "OK")
    assert not await ledger.flush() and ledger.buffered == 40, "kept, not lost"
    for i in range(40, 70):  # past the bound: the oldest go, counted
        ledger.record(call(i), "OK")
    assert (ledger.buffered, ledger.dropped) == (50, 20)
    assert "buffer is full" in caplog.text and "cannot write to the store" in caplog.text
    away.away = False
    assert await ledger.flush()
    with sqlite3.connect(tmp_path / "l.db") as db:
        ids = [row[0] for row in db.execute("SELECT request_id FROM calls ORDER BY rowid")]
    assert ids == [f"r{i}" for i in range(20, 70)], "the newest 50, in order"
    assert "writes again after" in caplog.text and "20 were dropped" in caplog.text
    thread.close()


def test_a_gateway_killed_mid_load_loses_at_most_one_batch(tmp_path: Path) -> None:
    """SIGKILL while chats flow: the rows written cover every answered chat but those of the last
    batch interval and the write under way (and possibly a few the kill cut before their answer
    went out)."""
    interval_s = 0.5
    config_path = tmp_path / "c.yaml"
    config_path.write_text(
        f"store: {{path: ledger.db}}\nledger: {{enabled: true, batch_interval_s: {interval_s}}}\n"
        "model_groups: [{name: echo, deployments: [{id: echo, type: echo, model: echo, context_window: 1000}]}]\n"
    )
    # No access log: nothing reads the pipe while the load runs.
    gateway = Serve(config_path, "--no-access-log")
    gateway.listening()
    answered: list[float] = []

    async def load() -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            stub = pb_grpc.GatewayStub(channel)

            async def one_client() -> None:
                while True:
                    try:
                        await stub.Chat(chat_request(model="echo"), timeout=2)
                    except grpc.aio.AioRpcError:
                        return  # the gateway is gone
                    answered.append(time.monotonic())

            await asyncio.gather(*(one_client() for _ in range(4)))

    async def kill_later() -> float:
        await asyncio.sleep(2.2)
        os.kill(gateway.process.pid, signal.SIGKILL)
        return time.monotonic()

    async def both() -> float:
        killed_at, _ = await asyncio.gather(kill_later(), load())
        return killed_at

    killed_at = asyncio.run(both())
    gateway.process.wait(timeout=10)
    written = len(rows(tmp_path / "ledger.db"))
    # What was buffered: at most the calls of one interval and of the write then under way (at
    # most another interval's worth, under this load).
    recent = sum(1 for at in answered if at > killed_at - 2 * interval_s)
    assert len(answered) > 100, "the load ran"
    assert len(answered) - recent <= written <= len(answered) + 4, (len(answered), recent, written)


def test_what_each_owner_spent_in_all_is_kept_beside_the_calls_and_summed_once_for_an_older_ledger(
    tmp_path: Path,
) -> None:
    def record(at: float, tenant: str, cost: float) -> CallRecord:
        return CallRecord(at, "r", tenant, "k1", "Chat", "chat", "d", "OK", "ok", 1, 1, cost, 1.0)

    now = time.time()
    long_ago = now - 90 * 86_400
    store = open_sqlite(tmp_path / "s.db")
    store.add_calls([record(long_ago, "acme", 1.5), record(now, "acme", 0.25), record(now, "beta", 0.0)])
    store.add_calls([record(now, "acme", 0.25)])
    assert store.spent_by_owner(now - 60, now - 60) == [("acme", "k1", 0.5, 0.5, 2.0)]
    store.close()
    with sqlite3.connect(tmp_path / "s.db") as db:  # as a ledger from before the totals
        db.execute("DROP TABLE spend_totals")
        db.execute("DELETE FROM store_meta")
    for _ in range(2):
        store = open_sqlite(tmp_path / "s.db")
        assert store.spent_by_owner(now - 60, now - 60) == [("acme", "k1", 0.5, 0.5, 2.0)], "summed once"
        store.close()
