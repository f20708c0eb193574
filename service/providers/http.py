"""What every HTTP-speaking provider shares: a pooled client, failure classification,
server-sent events, streamed content batched into deltas, and Retry-After.

The client is aiohttp's. The architecture first named httpx; profiling a loaded gateway
worker (py-spy, benches/chat.py) put 54% of its CPU inside httpx and httpcore, and a
request cost 1.2-1.3 ms of CPU with httpx against 0.33-0.40 ms with aiohttp on the same
upstream, more than the whole latency budget the gateway has (issue 4).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from yarl import URL

from service.api.switchboard.v1 import gateway_pb2 as pb
from service.outcomes import Delta, UpstreamError

_Event = TypeVar("_Event")


# How a provider reads an HTTP error answer (status, headers, body text) into a classified failure.
HttpErrorReader = Callable[[int, Mapping[str, str], str], UpstreamError]


class HttpClient:
    """One deployment's connection pool. `timeout_s` bounds connecting, waiting for a pooled
    connection and each read (so a long stream lives as long as it keeps sending). Every request
    goes through one path: transport failures classified, an error status read by the provider's
    `http_error`, so a provider's calls only ever see a response that succeeded."""

    def __init__(
        self,
        *,
        headers: Mapping[str, str],
        timeout_s: float,
        max_connections: int,
        http_error: HttpErrorReader,
        pool_wait_s: float = 1.0,
    ) -> None:
        self._headers = {"Content-Type": "application/json", **headers}
        # Calls take one of the pool's connections here first, waiting at most pool_wait_s, so
        # that aiohttp itself never waits for one and a full pool is told apart from a slow
        # deployment.
        self._connections = asyncio.Semaphore(max_connections)
        self._pool_wait_s = pool_wait_s
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=timeout_s, sock_connect=min(10.0, timeout_s), sock_read=timeout_s
        )
        self._max_connections = max_connections
        self._http_error = http_error
        self._session: aiohttp.ClientSession | None = None

    def post(self, url: URL, body: Mapping[str, Any]) -> contextlib.AbstractAsyncContextManager[aiohttp.ClientResponse]:
        """POST `body` as JSON: `async with client.post(...) as response`, a response that succeeded.
        Transport failures inside the block (reading the body included) are classified too."""
        request = self._client().post(url, data=json.dumps(body).encode(), headers=self._headers)
        return self._succeeded(request)

    def post_signed(
        self, url: URL, data: bytes, headers: Mapping[str, str]
    ) -> contextlib.AbstractAsyncContextManager[aiohttp.ClientResponse]:
        """POST these exact bytes with these headers too (a signature covers both); as `post`."""
        return self._succeeded(self._client().post(url, data=data, headers={**self._headers, **headers}))

    @contextlib.asynccontextmanager
    async def events(
        self, url: URL, body: Mapping[str, Any], stray: list[str] | None = None
    ) -> AsyncIterator[AsyncIterator[list[ServerSentEvent]]]:
        """POST `body` and read the answer as server-sent events (see `server_sent_events`)."""
        async with self.post(url, body) as response:
            check_event_stream(response.content_type)
            yield server_sent_events(response.content.iter_any(), stray)

    @contextlib.asynccontextmanager
    async def _succeeded(self, request: aiohttp.client._RequestContextManager) -> AsyncIterator[aiohttp.ClientResponse]:
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
        try:
            async with self._request(request) as response:
                yield response
        finally:
            self._connections.release()

    @contextlib.asynccontextmanager
    async def _request(self, request: aiohttp.client._RequestContextManager) -> AsyncIterator[aiohttp.ClientResponse]:
        with classified():
            async with request as response:
                if response.status >= 400:
                    detail = (await response.read()).decode(errors="replace")
                    raise self._http_error(response.status, response.headers, detail)
                try:
                    yield response
                except (UpstreamError, TimeoutError, aiohttp.ClientError) as error:
                    # Whatever went wrong in the body of an answer that succeeded (an error event
                    # in a stream, a body cut off or unreadable), the status the upstream sent
                    # is this one.
                    failure = error if isinstance(error, UpstreamError) else transport_failure(error)
                    failure.status = response.status
                    if failure is error:
                        raise
                    raise failure from error

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
            )
        return self._session


@contextlib.contextmanager
def classified() -> Iterator[None]:
    """Turn the client's transport failures into classified UpstreamErrors."""
    try:
        yield
    except (TimeoutError, aiohttp.ClientError) as error:
        raise transport_failure(error) from error


def transport_failure(error: TimeoutError | aiohttp.ClientError) -> UpstreamError:
    if isinstance(error, TimeoutError):
        # aiohttp's connect and read timeouts subclass TimeoutError.
        return UpstreamError(pb.OUTCOME_TIMEOUT, f"{type(error).__name__}: {error}".rstrip(": "))
    return UpstreamError(pb.OUTCOME_CONNECTION_ERROR, f"{type(error).__name__}: {error}")


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    event: str
    data: str
    id: str | None = None


async def server_sent_events(
    chunks: AsyncIterable[bytes], stray: list[str] | None = None
) -> AsyncIterator[list[ServerSentEvent]]:
    """Decode an event stream as the HTML standard specifies: lines end in CR, LF or CRLF;
    `data` lines join with LF; a blank line dispatches; comments and unknown fields are
    ignored; an event left unfinished at the end of the stream is dropped.

    Yields, for each chunk read, the events it completed (never an empty list), so that a
    caller can pass on at once what arrived together rather than one message per event.
    Lines that are no field of the format go to `stray` when given (Gemini ends a failed
    stream with a bare JSON error object)."""
    decoder = _EventDecoder(stray)
    pending = b""
    async for chunk in chunks:
        pending += chunk
        lines = pending.splitlines(keepends=True)
        # A last piece not ending in LF is unfinished, or its CR may be half of a CRLF.
        pending = lines.pop() if lines and not lines[-1].endswith(b"\n") else b""
        if completed := [event for line in lines if (event := decoder.feed(line)) is not None]:
            yield completed
    if pending.endswith(b"\r") and (event := decoder.feed(pending)) is not None:
        yield [event]


class _EventDecoder:
    def __init__(self, stray: list[str] | None) -> None:
        self._event = ""
        self._data: list[str] = []
        self._last_id: str | None = None
        self._stray = stray

    def feed(self, raw: bytes) -> ServerSentEvent | None:
        """Take one line (with or without its ending); return the event a blank line completes."""
        line = raw.rstrip(b"\r\n").decode(errors="replace")
        if not line:
            event = ServerSentEvent(self._event or "message", "\n".join(self._data), self._last_id)
            dispatch = bool(self._data)
            self._event, self._data = "", []
            return event if dispatch else None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._last_id = value
        elif self._stray is not None and name not in ("", "retry"):
            self._stray.append(line)
        return None


class PendingDelta:
    """The content gathered from one batch of upstream events, to go on as one Delta."""

    __slots__ = ("calls", "texts")

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.calls: list[pb.ToolCallDelta] = []

    def add_arguments(self, index: int, piece: str) -> None:
        """Add a piece of a streamed tool call's arguments, joined to the last piece when that is of
        the same call, so that pieces read together go on as one."""
        if self.calls and self.calls[-1].index == index:
            self.calls[-1].arguments += piece
        else:
            self.calls.append(pb.ToolCallDelta(index=index, arguments=piece))

    def delta(self) -> Delta | None:
        """What was gathered, as one Delta; None when nothing was."""
        return Delta("".join(self.texts), tuple(self.calls)) if self.texts or self.calls else None


async def batched_deltas(
    batches: AsyncIterable[Iterable[_Event]],
    take: Callable[[_Event, PendingDelta], None],
    *,
    stop: Callable[[], bool] = lambda: False,
) -> AsyncIterator[Delta]:
    """One Delta for each batch of upstream events (those that arrived in one read) that had
    content: `take` reads each event, keeping what the stream says in the caller's state and
    adding its content to the batch's PendingDelta. Ends after a batch when `stop()` is true
    (the stream said it is over).

    Content that arrived in one read goes on as one delta: fewer, larger messages when the
    upstream outpaces the client, and no waiting when it does not. When an event fails, the
    content the batch gathered before it goes on first, then the failure: what was read before
    an error still reaches the client."""
    async for batch in batches:
        pending = PendingDelta()
        try:
            for event in batch:
                take(event, pending)
        except UpstreamError:
            if (delta := pending.delta()) is not None:
                yield delta
            raise
        if (delta := pending.delta()) is not None:
            yield delta
        if stop():
            return


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
        value = json.loads(data)
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
        return json.loads(text)
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
