"""The request id and the access log: one line per call, whatever it came to, naming the call by
the id the client gets back; never the prompt, the answer or a secret."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections import deque
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

import grpc
import pytest

from service import logs
from service.access import REQUEST_ID
from service.api.switchboard.v1 import gateway_pb2 as pb
from service.api.switchboard.v1 import gateway_pb2_grpc as pb_grpc
from service.logs import FORMAT, JsonFormatter, _Queued, emit_access, resolved
from service.redaction import SECRETS, RedactingFormatter
from tests.conftest import StartGateway
from tests.mock_openai import Fault, MockOpenAI
from tests.serving import Serve, json_access_lines
from tests.test_cli import grpcurl
from tests.test_e2e import chat_request, config
from tests.test_workers import ECHO_ONLY

PROMPT = "a secret plan for tuesday"


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [record.access for record in caplog.records if record.name == "switchboard.access"]  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def _capture_access(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "switchboard.access")


async def test_a_call_is_named_by_one_id_in_the_response_the_trailers_and_the_log(
    start_gateway: StartGateway, upstream: MockOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    stub = await start_gateway(config(upstream))
    call = stub.Chat(chat_request(text=PROMPT))
    response = await call
    trailing = dict(await call.trailing_metadata() or ())
    assert trailing[REQUEST_ID] == response.id
    (line,) = access_lines(caplog)
    assert line == {
        "request_id": response.id,
        "method": "Chat",
        "status": "OK",
        "latency_ms": line["latency_ms"],
        "model": "chat",
        "model_group": "chat",
        "deployment": "mock-0",
        "attempts": 1,
        "outcome": "ok",
        "input_tokens": response.usage.input_tokens,
        "output_tokens": response.usage.output_tokens,
        "cost_usd": response.cost_usd,
    }
    assert isinstance(line["latency_ms"], float) and line["latency_ms"] > 0
    assert PROMPT not in caplog.text
    assert all(PROMPT not in json.dumps(a) for a in access_lines(caplog))


async def test_a_fallback_and_a_stream_say_where_they_ended(
    start_gateway: StartGateway, upstream: MockOpenAI, second_upstream: MockOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    upstream.fault = Fault(status=500)
    stub = await start_gateway(config(upstream, second_upstream))
    events = [event async for event in stub.ChatStream(chat_request(text="a b c"))]
    (line,) = access_lines(caplog)
    assert (line["method"], line["status"], line["deployment"], line["attempts"]) == ("ChatStream", "OK", "mock-1", 2)
    assert line["request_id"] == events[0].start.id
    assert isinstance(line["ttft_ms"], float) and 0 < line["ttft_ms"] <= line["latency_ms"]  # type: ignore[operator]
    assert line["output_tokens"] == events[-1].end.usage.output_tokens


async def test_a_failed_call_has_its_id_in_the_trailers_and_its_status_in_the_log(
    start_gateway: StartGateway, upstream: MockOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    upstream.fault = Fault(status=500)
    stub = await start_gateway(config(upstream))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Chat(chat_request(text=PROMPT))
    trailing = dict(raised.value.trailing_metadata() or ())
    (line,) = access_lines(caplog)
    assert trailing[REQUEST_ID] == line["request_id"]
    assert "grpc-status-details-bin" in trailing, "the rich status is still there"
    assert (line["status"], line["outcome"], line["attempts"]) == ("UNAVAILABLE", "server_error", 1)
    assert "error" in line and PROMPT not in caplog.text


@pytest.mark.parametrize(
    ("sent", "kept"),
    [("client-id_1.2:3", True), ("has spaces", False), ("x" * 129, False), ("semi;colon", False)],
)
async def test_a_client_may_name_its_call(
    start_gateway: StartGateway, caplog: pytest.LogCaptureFixture, sent: str, kept: bool
) -> None:
    stub = await start_gateway(config())
    response = await stub.Chat(chat_request(model="auto"), metadata=((REQUEST_ID, sent),))
    assert (response.id == sent) is kept
    assert access_lines(caplog)[0]["request_id"] == response.id
    if not kept:
        assert len(response.id) == 32 and sent not in caplog.text


async def test_route_and_list_models_are_logged_too(
    start_gateway: StartGateway, caplog: pytest.LogCaptureFixture
) -> None:
    stub = await start_gateway(config())
    await stub.Route(pb.RouteRequest(model="auto"))
    await stub.ListModels(pb.ListModelsRequest())
    lines = access_lines(caplog)
    assert [(line["method"], line["status"]) for line in lines] == [("Route", "OK"), ("ListModels", "OK")]
    assert lines[0]["model_group"] == "echo"


def test_a_json_line_is_one_valid_object_redacted_and_bounded() -> None:
    SECRETS.add(["sk-json-line-secret-1234"])
    formatter = JsonFormatter()
    record = logging.LogRecord(
        "service.x", logging.WARNING, __file__, 1, "key %s %s", ("sk-json-line-secret-1234", "y" * 10_000), None
    )
    line = json.loads(formatter.format(record))
    assert (line["level"], line["logger"]) == ("WARNING", "service.x")
    assert "sk-json-line-secret-1234" not in line["message"] and "[redacted]" in line["message"]
    assert len(formatter.format(record)) < 4096
    access = logging.LogRecord("switchboard.access", logging.INFO, __file__, 1, "%s", ("x",), None)
    access.access = {"request_id": "r", "status": "OK"}
    assert json.loads(formatter.format(access))["request_id"] == "r"


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_an_access_line_written_directly_reads_as_the_handler_would_write_it(
    monkeypatch: pytest.MonkeyPatch, log_format: Literal["json", "text"]
) -> None:
    """Access lines skip the logging machinery; what they come to must not differ."""
    SECRETS.add(["sk-access-line-secret-5678"])
    lines: deque[str] = deque()
    queued = _Queued(lines)
    queued.setFormatter(JsonFormatter() if log_format == "json" else RedactingFormatter(FORMAT))
    monkeypatch.setattr(logs, "_access_sink", (queued, log_format))
    monkeypatch.setattr(logging.getLogger(), "handlers", [queued])
    fields = {"request_id": "r1", "status": "OK", "error": "bad key sk-access-line-secret-5678", "cost_usd": 0.5}
    text = " ".join(f"{key}={value}" for key, value in fields.items())
    assert emit_access(fields, lambda: text)
    record = logging.LogRecord("switchboard.access", logging.INFO, __file__, 1, "%s", (text,), None)
    record.access = fields
    queued.handle(record)
    direct, usual = lines
    assert "sk-access-line-secret-5678" not in direct and "[redacted]" in direct
    if log_format == "json":
        first, second = json.loads(direct), json.loads(usual)
        assert abs(datetime.fromisoformat(first.pop("time")) - datetime.fromisoformat(second.pop("time"))) < timedelta(
            seconds=1
        )
        assert first == second
    else:
        stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} "
        assert re.match(stamp, direct) and re.match(stamp, usual)
        assert direct.split(" ", 2)[2] == usual.split(" ", 2)[2]
    # Not this module's logging (a test's capture, an embedding application): the usual path.
    monkeypatch.setattr(logging.getLogger(), "handlers", [logging.NullHandler()])
    assert not emit_access(fields, lambda: text)


def test_auto_is_text_on_a_terminal_and_json_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    assert resolved("auto") == "text"
    monkeypatch.setattr("sys.stderr.isatty", lambda: False)
    assert resolved("auto") == "json"
    assert resolved("text") == "text"


@pytest.mark.parametrize(("arguments", "logged"), [(("--log-level", "WARNING"), True), (("--no-access-log",), False)])
def test_the_access_log_has_a_switch_of_its_own(tmp_path: Path, arguments: tuple[str, ...], logged: bool) -> None:
    """Written whatever --log-level is (an operator quieting the service's own messages still
    gets one line per call), and only --no-access-log turns it off."""
    config_path = tmp_path / "c.yaml"
    config_path.write_text(ECHO_ONLY)
    gateway = Serve(config_path, "--log-format", "json", *arguments)
    gateway.answering()
    try:
        request = {"model": "echo", "messages": [{"role": "ROLE_USER", "content": [{"text": "hi"}]}]}
        grpcurl("-d", json.dumps(request), f"127.0.0.1:{gateway.port}", "switchboard.v1.Gateway/Chat")
    finally:
        output = gateway.stop()
    access = json_access_lines(output)
    assert [line["method"] for line in access] == (["Chat"] if logged else [])


async def test_a_stderr_nobody_reads_holds_up_no_call_and_loses_no_line_within_the_bound(tmp_path: Path) -> None:
    """The pipe fills after a few hundred lines; the calls go on, and every line arrives once
    the pipe is read again."""
    config_path = tmp_path / "c.yaml"
    config_path.write_text(ECHO_ONLY)
    gateway = Serve(config_path, "--log-format", "json")
    await asyncio.to_thread(gateway.listening)  # then nobody reads its stderr until it stops
    calls = 2000
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            stub = pb_grpc.GatewayStub(channel)
            request = chat_request(model="echo", text="x" * 200)

            async def chats(count: int) -> None:
                for _ in range(count):
                    await stub.Chat(request, timeout=10)

            await asyncio.gather(*(chats(calls // 8) for _ in range(8)))
    finally:
        output = await asyncio.to_thread(gateway.stop)
    access = json_access_lines(output)
    assert len(access) == calls
