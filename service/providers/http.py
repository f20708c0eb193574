"""What every HTTP-speaking provider shares: a pooled client that reads answers within bounds,
failure classification, and Retry-After.

The client is aiohttp's. The architecture first named httpx; profiling a loaded gateway
worker (py-spy, benches/chat.py) put 54% of its CPU inside httpx and httpcore, and a
request cost 1.2-1.3 ms of CPU with httpx against 0.33-0.40 ms with aiohttp on the same
upstream, more than the whole latency budget the gateway has.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp
import orjson
from yarl import URL

from service import telemetry
from service.api.switchboard.v1 import gateway_pb2 as pb
from service.config import PooledDeployment
from service.outcomes import UpstreamError
from service.providers.events import ServerSentEvent, server_sent_events, too_large

# What a response's reader holds before the upstream is paused (twice aiohttp's read_bufsize),
# and so the most of a stream handed on at once: one batch of events, one delta.
STREAM_READ_BYTES = 16 * 1024
# The most that one read of a connection hands aiohttp. While a client is slow to take a
# stream, its upstream connection holds the reader's buffer and the rest of the read that filled
# it, which the event loop would otherwise make up to 256 kB.
CONNECTION_READ_BYTES = 8 * 1024
# The most of an error answer read: its first part says what went wrong.
ERROR_BODY_BYTES = 64 * 1024


# How a provider reads an HTTP error answer (status, headers, body text) into a classified failure.
HttpErrorReader = Callable[[int, Mapping[str, str], str], UpstreamError]


class HttpClient:
    """One deployment's connection pool. `timeout_s` bounds connecting, waiting for a pooled
    connection and each read (so a long stream lives as long as it keeps sending). Every request
    goes through one path: transport failures classified, an error status read by the provider's
    `http_error`, so a provider's calls only ever see a response that succeeded."""

    def __init__(
        self,
        deployment: PooledDeployment,
        *,
        headers: Mapping[str, str],
        http_error: HttpErrorReader,
    ) -> None:
        self._headers = {"Content-Type": "application/json", **headers}
        # Calls take one of the pool's connections here first, waiting at most pool_wait_s, so
        # that aiohttp itself never waits for one and a full pool is told apart from a slow
        # deployment.
        self._connections = asyncio.Semaphore(deployment.max_connections)
        self._pool_wait_s = deployment.pool_wait_s
        timeout_s = deployment.timeout_s
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=timeout_s, sock_connect=min(10.0, timeout_s), sock_read=timeout_s
        )
        self._max_connections = deployment.max_connections
        self.max_response_bytes = deployment.max_response_bytes
        self._http_error = http_error
        self._session: aiohttp.ClientSession | None = None

    def post(self, url: URL, body: Mapping[str, Any]) -> contextlib.AbstractAsyncContextManager[aiohttp.ClientResponse]:
        """POST `body` as JSON: `async with client.post(...) as response`, a response that succeeded.
        Transport failures inside the block (reading the body included) are classified too."""
        headers = telemetry.with_trace_context(self._headers)
        return _Exchange(self, self._client().post(url, data=orjson.dumps(body), headers=headers))

    def post_signed(
        self, url: URL, data: bytes, headers: Mapping[str, str]
    ) -> contextlib.AbstractAsyncContextManager[aiohttp.ClientResponse]:
        """POST these exact bytes with these headers too (a signature covers both); as `post`."""
        headers = telemetry.with_trace_context({**self._headers, **headers})
        return _Exchange(self, self._client().post(url, data=data, headers=headers))

    @contextlib.asynccontextmanager
    async def events(
        self, url: URL, body: Mapping[str, Any], stray: list[str] | None = None
    ) -> AsyncIterator[AsyncIterator[list[ServerSentEvent]]]:
        """POST `body` and read the answer as server-sent events (see `server_sent_events`)."""
        async with self.post(url, body) as response:
            check_event_stream(response.content_type)
            yield server_sent_events(self.chunks(response), stray, max_event_bytes=self.max_response_bytes)

    async def body(self, response: aiohttp.ClientResponse) -> bytes:
        """The whole body of an answer, which may be at most `max_response_bytes`."""
        data = await _read_at_most(response.content, self.max_response_bytes)
        if len(data) > self.max_response_bytes:
            raise too_large("the answer", self.max_response_bytes)
        return data

    @staticmethod
    def chunks(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        """A streamed body as it arrives, all that the reader holds at a time: about
        STREAM_READ_BYTES at most once the connection's reads are bounded (the read that brought
        the answer's head may bring more). What one read passes on (a batch of events, one
        delta) is bounded, and while a client is slow to take it, only the reader's buffer
        fills before the upstream is paused. (`iter_chunked(n)` would raise that buffer to
        twice `n`.)"""
        return response.content.iter_any()

    async def _take_connection(self, request: aiohttp.client._RequestContextManager) -> None:
        """One of the pool's connections, waiting for it at most pool_wait_s."""
        if not self._connections.locked():
            await self._connections.acquire()  # one is free: taken without waiting
            return
        try:
            async with asyncio.timeout(self._pool_wait_s):
                await self._connections.acquire()
        except BaseException as error:
            request.close()  # never sent: its coroutine must not be left unawaited
            if not isinstance(error, TimeoutError):
                raise
            raise UpstreamError(
                pb.OUTCOME_OVERLOADED,
                f"every one of this gateway's connections to the deployment stayed busy for {self._pool_wait_s:g}s",
                local=True,
            ) from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _client(self) -> aiohttp.ClientSession:
        # Created on first use: a session belongs to the event loop that runs it.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections, limit_per_host=0),
                timeout=self._timeout,
                # Nothing here needs cookies; the default jar costs time on every response.
                cookie_jar=aiohttp.DummyCookieJar(),
                read_bufsize=STREAM_READ_BYTES // 2,
            )
        return self._session


class _Exchange:
    """One request's way through its client: a connection of the pool taken first, the request
    sent, an error status read into the provider's failure, transport failures classified (those
    while the caller reads an answer that succeeded carry the status the upstream sent), and the
    connection given back whatever happened. A class rather than generator-based context
    managers nested three deep: it is on every call's path."""

    __slots__ = ("_client", "_request", "_status")

    def __init__(self, client: HttpClient, request: aiohttp.client._RequestContextManager) -> None:
        self._client = client
        self._request = request
        self._status = 0

    async def __aenter__(self) -> aiohttp.ClientResponse:
        await self._client._take_connection(self._request)
        try:
            try:
                response = await self._request.__aenter__()
            except (TimeoutError, aiohttp.ClientError) as error:
                raise transport_failure(error) from error
            if response.connection is not None:
                _read_in_bounds(response.connection.transport)
            if response.status >= 400:
                try:
                    try:
                        detail = (await _read_at_most(response.content, ERROR_BODY_BYTES))[:ERROR_BODY_BYTES]
                    except (TimeoutError, aiohttp.ClientError) as error:
                        raise transport_failure(error) from error
                    raise self._client._http_error(response.status, response.headers, detail.decode(errors="replace"))
                except BaseException as failure:
                    await self._close(failure)
                    raise
        except BaseException:
            self._client._connections.release()
            raise
        self._status = response.status
        return response

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: object) -> None:
        try:
            if isinstance(error, (UpstreamError, TimeoutError, aiohttp.ClientError)):
                # Whatever went wrong in the body of an answer that succeeded (an error event in
                # a stream, a body cut off or unreadable), the status the upstream sent is this one.
                failure = error if isinstance(error, UpstreamError) else transport_failure(error)
                failure.status = self._status
                await self._close(failure)
                if failure is not error:
                    raise failure from error
            else:
                await self._close(error)
        finally:
            self._client._connections.release()

    async def _close(self, error: BaseException | None) -> None:
        """Ends the request (the response released), told of the failure that ends it, if any."""
        try:
            await self._request.__aexit__(type(error) if error else None, error, error.__traceback__ if error else None)
        except (TimeoutError, aiohttp.ClientError) as failure:
            raise transport_failure(failure) from failure


def _read_in_bounds(transport: asyncio.Transport | None) -> None:
    """Has the connection's reads handed to aiohttp at most CONNECTION_READ_BYTES at a time.

    The event loop reads up to 256 kB at once from a socket that has that much, as it does
    behind a fast upstream; aiohttp's parser feeds its buffer until the buffer is full and keeps
    the rest of the read, whatever its read_bufsize. A protocol that gives the loop its own
    buffer (asyncio's BufferedProtocol) decides how much one read brings: this one gives
    CONNECTION_READ_BYTES and passes what arrives on to aiohttp's protocol, which stays the
    connection's in every other respect. Over TLS it bounds the reads of decrypted data, and
    the TLS layer's own buffer is bounded too. Once a connection: a pooled one keeps it."""
    if transport is None or isinstance(protocol := transport.get_protocol(), _BoundedReads):
        return
    assert isinstance(protocol, asyncio.Protocol), protocol
    transport.set_protocol(_BoundedReads(protocol))
    # Over TLS, what the socket brought waits to be decrypted as it is read, in the TLS layer's
    # buffer, which by default takes up to 256 kB before the socket is paused.
    if (limit_reads := getattr(transport, "set_read_buffer_limits", None)) is not None:
        limit_reads(high=CONNECTION_READ_BYTES)


class _BoundedReads(asyncio.BufferedProtocol):
    """`protocol`, handed what the connection receives at most CONNECTION_READ_BYTES at a time."""

    def __init__(self, protocol: asyncio.Protocol) -> None:
        self.protocol = protocol
        # The loop reads into it at once after asking for it: a buffer only for that moment,
        # not one held by every pooled connection.
        self._buffer = _NO_BUFFER

    def get_buffer(self, sizehint: int) -> memoryview:
        self._buffer = memoryview(bytearray(CONNECTION_READ_BYTES))
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        data = bytes(self._buffer[:nbytes])
        self._buffer = _NO_BUFFER
        self.protocol.data_received(data)

    def eof_received(self) -> bool | None:
        return self.protocol.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.protocol.connection_lost(exc)

    def pause_writing(self) -> None:
        self.protocol.pause_writing()

    def resume_writing(self) -> None:
        self.protocol.resume_writing()


_NO_BUFFER = memoryview(b"")


async def _read_at_most(content: aiohttp.StreamReader, limit: int) -> bytes:
    """A body up to `limit` bytes and one more, which tells that there was more."""
    pieces: list[bytes] = []
    size = 0
    while size <= limit and (piece := await content.read(limit + 1 - size)):
        pieces.append(piece)
        size += len(piece)
    return b"".join(pieces)


def transport_failure(error: TimeoutError | aiohttp.ClientError) -> UpstreamError:
    if isinstance(error, TimeoutError):
        # aiohttp's connect and read timeouts subclass TimeoutError.
        return UpstreamError(pb.OUTCOME_TIMEOUT, f"{type(error).__name__}: {error}".rstrip(": "))
    return UpstreamError(pb.OUTCOME_CONNECTION_ERROR, f"{type(error).__name__}: {error}")


# How providers word a prompt that does not fit: OpenAI, vLLM, Anthropic, Gemini, Bedrock.
_CONTEXT_PHRASES = (
    "context length",
    "context window",
    "prompt is too long",
    "input is too long",
    "exceeds the maximum number of tokens",
)


def classified_error(
    status: int,
    message: str,
    *,
    kind: str = "",
    code: str = "",
    headers: Mapping[str, str] | None = None,
    outcome: pb.Outcome | None = None,
    retry_after_s: float | None = None,
) -> UpstreamError:
    """The one classification of an HTTP error for every provider: by status first, then by the
    provider's error type or code, then by its wording, unless the provider knows better
    (`outcome`). `status` stays what the upstream sent. Rate limits carry the provider's wait: its
    body's (`retry_after_s`), else its Retry-After."""
    lowered = message.lower()
    if outcome is not None:
        pass
    elif "insufficient_quota" in (kind, code):
        # OpenAI's 429 for an account out of credit: no wait brings it back, like a bad key.
        outcome = pb.OUTCOME_AUTH_ERROR
        message = f"the provider account's quota is exhausted (billing): {message}"
    elif status == 429 or kind in ("rate_limit_error", "RESOURCE_EXHAUSTED"):
        outcome = pb.OUTCOME_RATE_LIMITED
    elif status in (503, 529) or "overloaded" in kind:
        outcome = pb.OUTCOME_OVERLOADED
    elif status in (401, 403):
        outcome = pb.OUTCOME_AUTH_ERROR
    elif status == 404:
        outcome = pb.OUTCOME_SERVER_ERROR
        message = f"not found (check the deployment's base_url and model): {message}"
    elif code == "context_length_exceeded" or any(phrase in lowered for phrase in _CONTEXT_PHRASES):
        outcome = pb.OUTCOME_CONTEXT_WINDOW_EXCEEDED
    elif code in ("content_filter", "content_policy_violation"):
        outcome = pb.OUTCOME_CONTENT_FILTERED
    elif 400 <= status < 500:
        outcome = pb.OUTCOME_BAD_REQUEST
    else:
        outcome = pb.OUTCOME_SERVER_ERROR
    if outcome == pb.OUTCOME_RATE_LIMITED and retry_after_s is None and headers is not None:
        retry_after_s = retry_after(headers)
    return UpstreamError(
        outcome,
        message,
        status=status,
        retry_after_s=retry_after_s if outcome == pb.OUTCOME_RATE_LIMITED else None,
    )


def json_object(data: str | bytes, what: str) -> dict[str, Any]:
    """A JSON object from a stream, or a protocol error naming `what` it should have been."""
    try:
        value = orjson.loads(data)
    except ValueError as error:
        raise UpstreamError(pb.OUTCOME_PROTOCOL_ERROR, f"malformed {what}: {data[:200]!r}") from error
    if not isinstance(value, dict):
        raise UpstreamError(pb.OUTCOME_PROTOCOL_ERROR, f"{what} is not an object: {data[:200]!r}")
    return value


def check_event_stream(content_type: str) -> None:
    if content_type != "text/event-stream":
        raise UpstreamError(pb.OUTCOME_PROTOCOL_ERROR, f"not an event stream: Content-Type {content_type!r}")


def error_body(text: str) -> Any:
    """The JSON an error response carries, or None when it is not JSON."""
    try:
        return orjson.loads(text)
    except ValueError:
        return None


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `Retry-After` as seconds or an HTTP date."""
    if (millis := headers.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
