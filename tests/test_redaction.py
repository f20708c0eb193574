"""Provider credentials never leave the process, whatever path an upstream's text takes: an
upstream that reflects the request's headers in its error body (a proxy, a debug server) gets
them into no error, attempt log or log line."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc
import pytest
from aiohttp import web

from service.api.switchboard.v1 import gateway_pb2 as pb
from service.api.switchboard.v1 import gateway_pb2_grpc as pb_grpc
from service.config import parse_config
from service.redaction import MAX_LOG_LINE_CHARS, REDACTED, SECRETS, RedactingFormatter
from service.server import Gateway
from tests.conftest import status_details
from tests.mock_openai import MockOpenAI
from tests.test_e2e import chat_request, config

KEY = "sk-reflected-0123456789abcdef"


class Reflecting(MockOpenAI):
    """Answers every call with an error that quotes the request's headers."""

    async def _chat(self, request: web.Request, *, model: str | None = None) -> web.StreamResponse:
        headers = "; ".join(f"{name}: {value}" for name, value in request.headers.items())
        return web.json_response({"error": {"message": f"upstream rejected: {headers}"}}, status=502)


@pytest.fixture
async def reflecting() -> AsyncIterator[Reflecting]:
    mock = await Reflecting().start()
    yield mock
    await mock.stop()


@pytest.mark.parametrize("streaming", [False, True], ids=["unary", "stream"])
async def test_a_key_reflected_by_an_upstream_reaches_no_client_and_no_log(
    reflecting: Reflecting, caplog: pytest.LogCaptureFixture, streaming: bool
) -> None:
    gateway = Gateway(parse_config(config(reflecting)), "127.0.0.1:0", environ={"MOCK_KEY": KEY})
    await gateway.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            stub = pb_grpc.GatewayStub(channel)
            with caplog.at_level(logging.DEBUG), pytest.raises(grpc.aio.AioRpcError) as caught:
                if streaming:
                    [event async for event in stub.ChatStream(chat_request())]
                else:
                    await stub.Chat(chat_request())
    finally:
        await gateway.stop(0)
    error = caught.value
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    visible = [error.details() or "", *(str(detail) for detail in status_details(error)), caplog.text]
    assert f"Bearer {REDACTED}" in (error.details() or "")
    for text in visible:
        assert KEY not in text
    log = next(d for d in status_details(error) if isinstance(d, pb.AttemptLog))
    assert REDACTED in log.attempts[0].error_message


def test_log_lines_and_their_tracebacks_are_redacted() -> None:
    SECRETS.add(["hunter2-secret-value"])
    formatter = RedactingFormatter("%(message)s")
    try:
        raise RuntimeError("failed with key hunter2-secret-value")
    except RuntimeError:
        import sys

        record = logging.LogRecord(
            "t", logging.ERROR, __file__, 1, "using %s", ("hunter2-secret-value",), sys.exc_info()
        )
    line = formatter.format(record)
    assert "hunter2-secret-value" not in line
    assert line.startswith(f"using {REDACTED}") and f"failed with key {REDACTED}" in line


def test_no_log_line_is_longer_than_a_few_kilobytes() -> None:
    """A message built from what a stranger sent is cut, line by line, after redaction (so that a
    secret is never cut in two and left readable)."""
    SECRETS.add(["hunter2-secret-value"])
    formatter = RedactingFormatter("%(levelname)s %(message)s")
    huge = "x" * (MAX_LOG_LINE_CHARS - 10) + "hunter2-secret-value" + "y" * 1_000_000
    record = logging.LogRecord("t", logging.WARNING, __file__, 1, "bad request: %s\nnext line", (huge,), None)
    first, second = formatter.format(record).split("\n")
    assert len(first) < MAX_LOG_LINE_CHARS + 40
    assert first.endswith(
        f"({len('WARNING bad request: ') + len(huge) - 20 + len(REDACTED) - MAX_LOG_LINE_CHARS} more characters)"
    )
    assert "hunter2" not in first
    assert second == "next line"
