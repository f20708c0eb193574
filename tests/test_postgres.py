"""The store on a real PostgreSQL server: keys made and revoked there, every chat recorded exactly
under concurrency, and a database stopped mid-run failing no call, its backlog landing when it
returns."""

from __future__ import annotations

import asyncio
import time

import grpc
import psycopg
import pytest

from service.api.switchboard.admin.v1 import admin_pb2, admin_pb2_grpc
from service.api.switchboard.v1 import gateway_pb2_grpc as pb_grpc
from service.store.postgres import open_postgres
from service.store.records import SHADOW_METHOD, CallRecord, FeedbackRecord
from tests.conftest import StartServer
from tests.keyed import ADMIN_KEY, ENVIRON, bearer
from tests.mock_openai import MockOpenAI
from tests.postgres_server import PostgresServer
from tests.test_e2e import chat_request, config


def on_postgres(upstream: MockOpenAI, *, keys: bool = False, interval_s: float = 0.1) -> str:
    auth = "auth: {mode: keys, admin_key_env: SWITCHBOARD_ADMIN_KEY}\ntenants: {acme: {}}\n" if keys else ""
    return (
        "server: {admin_listen: '127.0.0.1:0'}\n"
        f"{auth}store: {{backend: postgres, url_env: STORE_URL, refresh_interval_s: 0.1}}\n"
        f"ledger: {{enabled: true, batch_interval_s: {interval_s}}}\n" + config(upstream)
    )


def count_calls(url: str) -> tuple[int, float]:
    with psycopg.connect(url) as db:
        row = db.execute("SELECT count(*), coalesce(sum(cost_usd), 0) FROM calls").fetchone()
    assert row is not None
    return int(row[0]), float(row[1])


async def test_keys_and_the_ledger_live_in_postgresql(
    postgres_server: PostgresServer, upstream: MockOpenAI, start_server: StartServer
) -> None:
    environ = {**ENVIRON, "STORE_URL": postgres_server.url}
    gateway = await start_server(on_postgres(upstream, keys=True), environ)
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as data,
        grpc.aio.insecure_channel(f"127.0.0.1:{gateway.admin_port}") as admin_channel,
    ):
        admin = admin_pb2_grpc.AdminStub(admin_channel)
        made = await admin.CreateKey(admin_pb2.CreateKeyRequest(tenant="acme"), metadata=bearer(ADMIN_KEY))
        stub = pb_grpc.GatewayStub(data)
        answers = await asyncio.gather(
            *(stub.Chat(chat_request(model="chat"), metadata=bearer(made.secret)) for _ in range(40))
        )
        spend = await admin.GetSpend(admin_pb2.GetSpendRequest(tenant="acme"), metadata=bearer(ADMIN_KEY))
        await admin.RevokeKey(admin_pb2.RevokeKeyRequest(id=made.key.id), metadata=bearer(ADMIN_KEY))
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.Chat(chat_request(model="chat"), metadata=bearer(made.secret))
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    (row,) = spend.rows
    assert (row.tenant, row.key_id, row.calls) == ("acme", made.key.id, 40)
    assert row.day == time.strftime("%Y-%m-%d", time.gmtime())
    assert row.cost_usd == pytest.approx(sum(a.cost_usd for a in answers))
    with psycopg.connect(postgres_server.url) as db:
        stored = db.execute("SELECT key_hash FROM keys").fetchone()
    assert stored is not None and made.secret not in stored[0], "only the keyed hash is stored"
    await gateway.stop(0)
    rows, cost = count_calls(postgres_server.url)
    assert rows == 40, "the answered ones; not the refused one (a caller never known)"
    assert cost == pytest.approx(sum(a.cost_usd for a in answers))
    with psycopg.connect(postgres_server.url) as db:
        totals = db.execute("SELECT tenant, key_id, cost_usd FROM spend_totals").fetchall()
    assert totals == [("acme", made.key.id, pytest.approx(cost))], "the total kept beside the calls"


async def test_a_database_stopped_mid_run_fails_no_call_and_gets_the_backlog(
    postgres_server: PostgresServer, upstream: MockOpenAI, start_server: StartServer
) -> None:
    environ = {**ENVIRON, "STORE_URL": postgres_server.url}
    gateway = await start_server(on_postgres(upstream), environ)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as data:
        stub = pb_grpc.GatewayStub(data)
        for _ in range(10):
            await stub.Chat(chat_request(model="chat"))
        await asyncio.to_thread(postgres_server.stop)
        started = time.monotonic()
        for _ in range(30):  # the database is away: every call still answers, and at once
            await stub.Chat(chat_request(model="chat"), timeout=5)
        assert time.monotonic() - started < 5
        await asyncio.sleep(0.3)  # a write or two fail meanwhile
        assert gateway.ledger is not None and gateway.ledger.buffered >= 30
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.admin_port}") as admin:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await admin_pb2_grpc.AdminStub(admin).GetSpend(admin_pb2.GetSpendRequest(), timeout=20)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE, "not UNKNOWN with the driver's raw text"
        assert "the store is unavailable" in (raised.value.details() or "")
        assert postgres_server.url not in (raised.value.details() or "")
        await asyncio.to_thread(postgres_server.start)
        deadline = time.monotonic() + 10
        while count_calls(postgres_server.url)[0] < 40:
            assert time.monotonic() < deadline, "the backlog never landed"
            await asyncio.sleep(0.1)
    assert count_calls(postgres_server.url)[0] == 40
    assert gateway.ledger.dropped == 0


def test_feedback_and_the_calls_compared_live_in_postgresql(postgres_server: PostgresServer) -> None:
    store = open_postgres(postgres_server.url)
    now = time.time()
    try:
        store.add_calls([CallRecord(now, "r1", "acme", "", "Chat", "chat", "a", "OK", "ok", 1, 10, 0.5, 40.0)])
        store.add_feedback(
            [FeedbackRecord(now, "r1", "acme", "", 0.8, "", ""), FeedbackRecord(now, "r1", "x", "", 0.0, "", "")]
        )
        shadow = CallRecord(now, "s1", "acme", "", SHADOW_METHOD, "chat", "b", "OK", "ok", 1, 10, 0.2, 90.0)
        store.add_calls([shadow._replace(policy="p", shadow_of="r1", similarity=0.95, agrees=True)])
        assert store.served("a", now - 60, 10) == [("OK", 40.0, 0.5, 10, None, 0.8, None)]
        assert store.shadow_pairs("p", "b", now - 60, 10) == [
            (("OK", 40.0, 0.5, 10, None, 0.8, None), ("OK", 90.0, 0.2, 10, None, None, 1))
        ]
        assert [f.score for f in store.feedback("r1", "acme")] == [0.8]
        assert store.spent_by_owner(now - 60, now - 60) == [("acme", "", 0.5, 0.5, 0.5)], "a shadow is not theirs"
        assert [(row.shadow, row.cost_usd) for row in store.spend(now - 60)] == [(False, 0.5), (True, 0.2)]
    finally:
        store.close()
