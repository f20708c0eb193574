"""What an upstream sends is held only within bounds: an answer, a stream event or a line larger
than `max_response_bytes` (decompressed) fails the attempt as a protocol error, and an error
answer is read only so far. Before, each was read whole, however large, and an endless one
held its call (and memory) as long as the upstream kept sending."""

from __future__ import annotations

import array
import asyncio
import fcntl
import gzip
import socket
import termios
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import cast

import grpc
import pytest
from aiohttp import web
from yarl import URL

from service.api.switchboard.v1 import gateway_pb2 as pb
from service.config import OpenAICompatibleDeployment
from service.outcomes import UpstreamError
from service.providers.events import server_sent_events
from service.providers.http import CONNECTION_READ_BYTES, STREAM_READ_BYTES, HttpClient
from tests.conftest import StartGateway, status_details
from tests.test_e2e import chat_request

LIMIT = 1 << 20
BLOCK = b"x" * 64 * 1024
# Enough that nothing reading it whole goes unnoticed, and all a test lets an upstream send.
ENDLESS_BYTES = 256 << 20

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Endless:
    """An upstream whose every answer goes on until its client leaves; `sent` counts the bytes."""

    def __init__(
        self, status: int, content_type: str, head: bytes, *, block: bytes = BLOCK, gzipped: bool = False
    ) -> None:
        self.status, self.content_type, self.head, self.gzipped = status, content_type, head, gzipped
        self.block = block
        self.sent = 0
        self.ended = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        headers = {"Content-Type": self.content_type}
        if self.gzipped:
            headers["Content-Encoding"] = "gzip"
        response = web.StreamResponse(status=self.status, headers=headers)
        await response.prepare(request)
        try:
            if self.gzipped:
                # 64 MB of one byte, about 64 KB on the wire: decompressed, it is over the bound.
                await self._send(response, gzip.compress(self.head + BLOCK * 1024))
            else:
                await self._send(response, self.head)
                while self.sent < ENDLESS_BYTES:
                    await self._send(response, self.block)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.ended.set()
        return response

    async def _send(self, response: web.StreamResponse, data: bytes) -> None:
        await response.write(data)
        self.sent += len(data)


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Endless], Awaitable[str]]]:
    runners: list[web.AppRunner] = []

    async def start(upstream: Endless) -> str:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", upstream.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}/v1"

    yield start
    for runner in runners:
        await runner.cleanup()


def bounded_config(base_url: str) -> str:
    return f"""
model_groups:
  - name: chat
    deployments:
      - id: endless
        type: openai_compatible
        model: m
        base_url: {base_url}
        context_window: 8192
        timeout_s: 5
        max_response_bytes: {LIMIT}
"""


async def failed_attempt(stub: object, streaming: bool) -> pb.Attempt:
    async with asyncio.timeout(30):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            if streaming:
                [event async for event in stub.ChatStream(chat_request(model="chat"))]  # type: ignore[attr-defined]
            else:
                await stub.Chat(chat_request(model="chat"))  # type: ignore[attr-defined]
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value.details()
    (log,) = [d for d in status_details(caught.value) if isinstance(d, pb.AttemptLog)]
    (attempt,) = log.attempts
    return attempt


CASES = {
    "an endless unary answer": (Endless(200, "application/json", b'{"id": "'), False, "the answer"),
    "a gzip bomb": (Endless(200, "application/json", b'{"id": "', gzipped=True), False, "the answer"),
    "an endless line of a stream": (Endless(200, "text/event-stream", b"data: "), True, "a line of the event stream"),
    "an endless event of a stream": (
        Endless(200, "text/event-stream", b"", block=(b"data: " + b"y" * 1000 + b"\n") * 64),
        True,
        "an event of the stream",
    ),
}


@pytest.mark.parametrize(("upstream", "streaming", "what"), CASES.values(), ids=CASES.keys())
async def test_an_answer_past_the_bound_is_a_protocol_error(
    start_gateway: StartGateway,
    serve: Callable[[Endless], Awaitable[str]],
    upstream: Endless,
    streaming: bool,
    what: str,
) -> None:
    stub = await start_gateway(bounded_config(await serve(upstream)))
    attempt = await failed_attempt(stub, streaming)
    assert attempt.outcome == pb.OUTCOME_PROTOCOL_ERROR
    assert attempt.upstream_status == 200
    assert attempt.error_message.endswith(f": {what} is larger than max_response_bytes ({LIMIT})")
    async with asyncio.timeout(10):
        await upstream.ended.wait()
    assert upstream.sent < ENDLESS_BYTES, "the gateway stopped reading, and the upstream saw it leave"


@pytest.mark.parametrize("streaming", [False, True], ids=["unary", "stream"])
async def test_an_endless_error_answer_is_read_only_so_far(
    start_gateway: StartGateway, serve: Callable[[Endless], Awaitable[str]], streaming: bool
) -> None:
    """Before: the error body was read to its end, which never came while the upstream sent."""
    upstream = Endless(500, "application/json", b'{"error": {"message": "')
    stub = await start_gateway(bounded_config(await serve(upstream)))
    attempt = await failed_attempt(stub, streaming)
    assert attempt.outcome == pb.OUTCOME_SERVER_ERROR
    assert attempt.upstream_status == 500
    assert len(attempt.error_message) < 1000
    async with asyncio.timeout(10):
        await upstream.ended.wait()
    assert upstream.sent < ENDLESS_BYTES


class Firehose(asyncio.Protocol):
    """An upstream that answers with a whole stream at once, as fast as TCP takes it."""

    HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
    EVENT = b'data: {"choices": [{"delta": {"content": "' + b"token " * 20 + b'"}}]}\n\n'
    ANSWER = HEAD + EVENT * 40_000  # some 6 MB

    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is one, though not a subclass

    def data_received(self, data: bytes) -> None:
        if not self.transport.get_write_buffer_size():  # the request: answer it once
            self.transport.write(self.ANSWER)

    def taken(self, client: socket.socket) -> int:
        """What the client has read of the answer: written, less what waits in this end's buffer,
        in its kernel's send queue and in the client's receive queue."""
        server = self.transport.get_extra_info("socket")
        waiting = self.transport.get_write_buffer_size() + _queued(server, termios.TIOCOUTQ)
        return len(self.ANSWER) - waiting - _queued(client, termios.FIONREAD)


async def settled(measure: Callable[[], int]) -> int:
    """`measure()` once it has stayed the same for a tenth of a second."""
    last, unchanged = measure(), 0
    while unchanged < 5:
        await asyncio.sleep(0.02)
        now = measure()
        unchanged = unchanged + 1 if now == last else 0
        last = now
    return last


def _queued(sock: socket.socket, request: int) -> int:
    queued = array.array("i", [0])
    fcntl.ioctl(sock.fileno(), request, queued)
    return queued[0]


async def test_a_stream_not_taken_holds_only_a_bounded_part_of_what_the_upstream_sends() -> None:
    """A caller that takes one batch of a fast upstream's stream and then nothing more (its client
    stopped reading) leaves the gateway holding only the reader's buffer, filled past
    STREAM_READ_BYTES by at most one read of the connection, and the line the decoder has not
    seen end. Before, the event loop read up to 256 kB at once whatever aiohttp's buffer, and
    its parser kept the rest of such a read: a held stream held up to that much more."""
    upstream = Firehose()
    server = await asyncio.get_running_loop().create_server(lambda: upstream, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    deployment = OpenAICompatibleDeployment.model_validate(
        {"type": "openai_compatible", "model": "m", "base_url": f"http://127.0.0.1:{port}/v1"}
    )
    client = HttpClient(
        deployment, headers={}, http_error=lambda status, headers, text: UpstreamError(pb.OUTCOME_SERVER_ERROR, text)
    )
    try:
        async with client.post(URL(f"http://127.0.0.1:{port}/v1/chat/completions"), {}) as response:
            batches = server_sent_events(client.chunks(response), max_event_bytes=LIMIT)
            handed = len(Firehose.HEAD) + len(await anext(batches)) * len(Firehose.EVENT)
            assert response.connection is not None and response.connection.transport is not None
            sock = response.connection.transport.get_extra_info("socket")
            async with asyncio.timeout(10):
                taken = await settled(lambda: upstream.taken(sock))
            assert handed < taken < len(Firehose.ANSWER) // 4
            assert taken - handed <= STREAM_READ_BYTES + CONNECTION_READ_BYTES + len(Firehose.EVENT)
    finally:
        await client.aclose()
        server.close()
