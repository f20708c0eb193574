"""Reading a streamed answer: server-sent events decoded within a bound, and the content of
events that arrived together batched into one delta."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from service.api.switchboard.v1 import gateway_pb2 as pb
from service.outcomes import Delta, UpstreamError

_Event = TypeVar("_Event")


def too_large(what: str, limit: int) -> UpstreamError:
    return UpstreamError(pb.OUTCOME_PROTOCOL_ERROR, f"{what} is larger than max_response_bytes ({limit})")


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    event: str
    data: str
    id: str | None = None


async def server_sent_events(
    chunks: AsyncIterable[bytes], stray: list[str] | None = None, *, max_event_bytes: int
) -> AsyncIterator[list[ServerSentEvent]]:
    """Decode an event stream as the HTML standard specifies: lines end in CR, LF or CRLF;
    `data` lines join with LF; a blank line dispatches; comments and unknown fields are
    ignored; an event left unfinished at the end of the stream is dropped.

    Yields, for each chunk read, the events it completed (never an empty list), so that a
    caller can pass on at once what arrived together rather than one message per event.
    Lines that are no field of the format go to `stray` when given (Gemini ends a failed
    stream with a bare JSON error object).

    An event, an unfinished line or the stray lines larger than `max_event_bytes` are a
    protocol error: what an upstream sends is held only so long."""
    decoder = _EventDecoder(stray, max_event_bytes)
    # The line not yet ended, in the pieces it came in: joined only once it ends, so that a
    # long line costs its length, not its length times the chunks it spans.
    unfinished: list[bytes] = []
    unfinished_bytes = 0
    async for chunk in chunks:
        # A line ends at a CR or LF; a CR ending the last piece may be half of a CRLF.
        if b"\n" in chunk or b"\r" in chunk or (unfinished and unfinished[-1].endswith(b"\r")):
            lines = b"".join((*unfinished, chunk)).splitlines(keepends=True)
            last = lines.pop() if lines and not lines[-1].endswith(b"\n") else b""
            unfinished, unfinished_bytes = ([last], len(last)) if last else ([], 0)
            if completed := [event for line in lines if (event := decoder.feed(line)) is not None]:
                yield completed
        else:
            unfinished.append(chunk)
            unfinished_bytes += len(chunk)
        if unfinished_bytes > max_event_bytes:
            raise too_large("a line of the event stream", max_event_bytes)
    if unfinished and unfinished[-1].endswith(b"\r") and (event := decoder.feed(b"".join(unfinished))) is not None:
        yield [event]


class _EventDecoder:
    def __init__(self, stray: list[str] | None, max_event_bytes: int) -> None:
        self._event = ""
        self._data: list[str] = []
        self._last_id: str | None = None
        self._stray = stray
        self._max_bytes = max_event_bytes
        # What `_data` and `stray` hold, together.
        self._held = 0

    def feed(self, raw: bytes) -> ServerSentEvent | None:
        """Take one line (with or without its ending); return the event a blank line completes."""
        line = raw.rstrip(b"\r\n").decode(errors="replace")
        if not line:
            event = ServerSentEvent(self._event or "message", "\n".join(self._data), self._last_id)
            dispatch = bool(self._data)
            self._held -= sum(map(len, self._data))
            self._event, self._data = "", []
            return event if dispatch else None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._hold(value)
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._last_id = value
        elif self._stray is not None and name not in ("", "retry"):
            self._hold(line)
            self._stray.append(line)
        return None

    def _hold(self, text: str) -> None:
        self._held += len(text)
        if self._held > self._max_bytes:
            raise too_large("an event of the stream", self._max_bytes)


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
