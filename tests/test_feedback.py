"""Feedback on calls (`Gateway.Feedback`): recorded beside the call's record in the ledger, under
the reporter's tenant only, every part of it bounded, and never in a log."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import grpc
import pytest

from service.api.switchboard.v1 import gateway_pb2 as pb
from service.api.switchboard.v1 import gateway_pb2_grpc as pb_grpc
from service.store.records import FeedbackRecord
from service.store.sqlite import open_sqlite
from tests.conftest import StartServer, status_details
from tests.keyed import StartKeyed, bearer, refused
from tests.test_auth import keyed
from tests.test_e2e import chat_request
from tests.test_workers import ECHO_ONLY


def ledgered(tmp_path: Path) -> str:
    return f"store: {{path: '{tmp_path / 'ledger.db'}'}}\nledger: {{enabled: true}}\n" + ECHO_ONLY


def reported(tmp_path: Path, request_id: str, tenant: str = "") -> list[FeedbackRecord]:
    store = open_sqlite(tmp_path / "ledger.db")
    try:
        return store.feedback(request_id, tenant)
    finally:
        store.close()


async def test_feedback_is_recorded_beside_the_call(
    tmp_path: Path, start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    gateway = await start_server(ledgered(tmp_path))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        stub = pb_grpc.GatewayStub(channel)
        answer = await stub.Chat(chat_request(model="echo"))
        await stub.Feedback(pb.FeedbackRequest(request_id=answer.id, label="thumbs_up"))
        await stub.Feedback(pb.FeedbackRequest(request_id=answer.id, score=0.25, comment="a judge: too short"))
    await gateway.stop(0)  # the ledger's last batch is written as it stops
    thumbs, judged = reported(tmp_path, answer.id)
    assert (thumbs.score, thumbs.label, thumbs.comment) == (None, "thumbs_up", "")
    assert (judged.score, judged.label, judged.comment) == (0.25, "", "a judge: too short")
    assert "too short" not in caplog.text, "a comment is kept, never logged"
    assert any(getattr(r, "access", {}).get("method") == "Feedback" for r in caplog.records)


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"label": "ok"}, "request_id"),
        ({"request_id": "id with spaces", "label": "ok"}, "request_id"),
        ({"request_id": "a" * 129, "label": "ok"}, "request_id"),
        ({"request_id": "r1"}, "score"),
        ({"request_id": "r1", "score": math.nan}, "score"),
        ({"request_id": "r1", "score": 2e9}, "score"),
        ({"request_id": "r1", "label": "thumbs up"}, "label"),
        ({"request_id": "r1", "comment": "x" * 2001}, "comment"),
    ],
)
async def test_a_bad_report_is_refused_naming_the_field(
    tmp_path: Path, start_server: StartServer, request_fields: dict[str, object], field: str
) -> None:
    gateway = await start_server(ledgered(tmp_path))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        error = await refused(pb_grpc.GatewayStub(channel).Feedback(pb.FeedbackRequest(**request_fields)))  # type: ignore[arg-type]
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    (bad_request,) = status_details(error)
    assert [v.field for v in bad_request.field_violations] == [field]  # type: ignore[attr-defined]
    assert len(error.details() or "") < 200, "nothing of what was sent comes back"


async def test_without_the_ledger_feedback_is_refused_saying_why(start_server: StartServer) -> None:
    gateway = await start_server(ECHO_ONLY)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        error = await refused(pb_grpc.GatewayStub(channel).Feedback(pb.FeedbackRequest(request_id="r1", label="ok")))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "ledger" in (error.details() or "")


async def test_feedback_attaches_only_to_the_reporters_own_calls(tmp_path: Path, start_keyed: StartKeyed) -> None:
    gateway = await start_keyed(keyed(tmp_path) + "ledger: {enabled: true}\n")
    acme, beta = (await gateway.create_key("acme")).secret, (await gateway.create_key("beta")).secret
    answer = await gateway.chat(beta)
    assert (await refused(gateway.stub.Feedback(pb.FeedbackRequest(request_id=answer.id, label="ok")))).code() == (
        grpc.StatusCode.UNAUTHENTICATED
    )
    await gateway.stub.Feedback(pb.FeedbackRequest(request_id=answer.id, label="spam"), metadata=bearer(acme))
    await gateway.stub.Feedback(pb.FeedbackRequest(request_id=answer.id, score=1.0), metadata=bearer(beta))
    await gateway.gateway.stop(0)
    store = open_sqlite(tmp_path / "keys.db")
    try:
        assert [f.score for f in store.feedback(answer.id, "beta")] == [1.0], "beta's own report on its call"
        assert [f.label for f in store.feedback(answer.id, "acme")] == ["spam"], "acme's stays acme's"
    finally:
        store.close()
