"""Reading a streamed answer: server-sent events decoded within a bound, and the content of
events that arrived together batched into one delta."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from typing import NamedTuple, TypeVar

from service.api.switchboard.v1 import gateway_pb2 as pb
from service.outcomes import Delta, UpstreamError

_Event = TypeVar("_Event")


def too_large(what: str, limit: int) -> UpstreamError:
    return UpstreamError(pb.OUTCOME_PROTOCOL_ERROR, f"{what} is larger than max_response_bytes ({limit})")


class ServerSentEvent(NamedTuple):
    # A tuple: one is made for every event of every stream.
    event: str
    data: str
    id: str | None = None


def server_sent_events(
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
    return _EventBatches(chunks, _EventDecoder(stray, max_event_bytes), max_event_bytes)


class _EventBatches:
    """`server_sent_events`' iterator. Between two batches it keeps only the line not yet
    ended: neither the chunk read nor its lines nor the batch handed on, which an async
    generator's frame would hold for as long as its caller takes to pass the batch on (a
    client that stops reading keeps a write to it pending indefinitely)."""

    def __init__(self, chunks: AsyncIterable[bytes], decoder: _EventDecoder, max_event_bytes: int) -> None:
        self._chunks = aiter(chunks)
        self._decoder = decoder
        self._max_event_bytes = max_event_bytes
        # The line not yet ended, in the pieces it came in: joined only once it ends, so that
        # a long line costs its length, not its length times the chunks it spans.
        self._unfinished: list[bytes] = []
        self._unfinished_bytes = 0
        self._ended = False

    def __aiter__(self) -> _EventBatches:
        return self

    async def __anext__(self) -> list[ServerSentEvent]:
        while True:
            # Checked once the events before it are handed on: what was read before the
            # bound was passed still reaches the caller.
            if self._unfinished_bytes > self._max_event_bytes:
                raise too_large("a line of the event stream", self._max_event_bytes)
            if self._ended:
                raise StopAsyncIteration
            try:
                chunk = await anext(self._chunks)
            except StopAsyncIteration:
                self._ended = True
                return self._last()
            if completed := self._read(chunk):
                return completed

    def _read(self, chunk: bytes) -> list[ServerSentEvent]:
        """The events that `chunk` completed."""
        unfinished = self._unfinished
        # A line ends at a CR or LF; a CR ending the last piece may be half of a CRLF.
        if b"\n" in chunk or b"\r" in chunk or (unfinished and unfinished[-1].endswith(b"\r")):
            text = b"".join((*unfinished, chunk))
            if b"\r" in text:
                lines = text.splitlines(keepends=True)
                last = lines.pop() if lines and not lines[-1].endswith(b"\n") else b""
                events = self._decoder.feed(lines)
            else:  # lines ended by LF alone, as nearly every server writes them
                end = text.rfind(b"\n") + 1
                last = text[end:]
                events = self._decoder.feed_blocks(text[:end])
            self._unfinished, self._unfinished_bytes = ([last], len(last)) if last else ([], 0)
            return events
        unfinished.append(chunk)
        self._unfinished_bytes += len(chunk)
        return []

    def _last(self) -> list[ServerSentEvent]:
        """At the end of the stream, the event that a last line ended by a lone CR completes."""
        unfinished = self._unfinished
        if unfinished and unfinished[-1].endswith(b"\r") and (events := self._decoder.feed([b"".join(unfinished)])):
            return events
        raise StopAsyncIteration


def _data_value(line: bytes) -> str:
    """The value of a line that starts with `data:`: what follows the colon and one space, if any."""
    return (line[6:] if line.startswith(b" ", 5) else line[5:]).decode(errors="replace")


class _EventDecoder:
    def __init__(self, stray: list[str] | None, max_event_bytes: int) -> None:
        self._event = ""
        self._data: list[str] = []
        self._last_id: str | None = None
        self._stray = stray
        self._max_bytes = max_event_bytes
        # What `_data` and `stray` hold, together.
        self._held = 0

    def feed(self, lines: list[bytes]) -> list[ServerSentEvent]:
        """Take whole lines (with or without their endings); return the events blank lines complete.

        `data` lines, most of any stream, are read as bytes up to their value, and decoded
        alone; other lines are decoded whole first."""
        events: list[ServerSentEvent] = []
        for raw in lines:
            line = raw.rstrip(b"\r\n")
            if not line:
                if self._data:
                    events.append(ServerSentEvent(self._event or "message", "\n".join(self._data), self._last_id))
                    self._held -= sum(map(len, self._data))
                    self._data = []
                self._event = ""
            elif line.startswith(b"data:"):
                text = _data_value(line)
                self._hold(text)
                self._data.append(text)
            else:
                self._field(line.decode(errors="replace"))
        return events

    def feed_blocks(self, text: bytes) -> list[ServerSentEvent]:
        """Take whole lines ended by LF alone; return the events they complete. Blank lines part
        them into blocks, and a block of one data line, with nothing before it pending, is an
        event at once: most events of most streams. The rest go through `feed`."""
        *blocks, pending = text.split(b"\n\n")
        events: list[ServerSentEvent] = []
        new = tuple.__new__  # a named tuple's own constructor and `_make` are Python functions
        # Nothing pending from an earlier read; after a block's blank line, never.
        idle = not self._data and not self._event
        for block in blocks:
            if idle and block.startswith(b"data:") and b"\n" not in block:
                # `_data_value(block)`, inlined: a call per event costs this loop a tenth more.
                data = (block[6:] if block.startswith(b" ", 5) else block[5:]).decode(errors="replace")
                self._hold(data)  # and let go at once: the event is dispatched here
                self._held -= len(data)
                events.append(new(ServerSentEvent, ("message", data, self._last_id)))
            else:
                events += self.feed([*block.split(b"\n"), b""])
                idle = True
        if pending:  # lines after the last blank one, each ended by its LF
            events += self.feed(pending.split(b"\n")[:-1])
        return events

    def _field(self, line: str) -> None:
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._last_id = value
        elif name == "data":  # a line of "data" alone: `feed` reads the others
            self._hold(value)
            self._data.append(value)
        elif self._stray is not None and name not in ("", "retry"):
            self._hold(line)
            self._stray.append(line)

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
        delta, failure = _gathered(batch, take)
        # Only the batch's content goes on: its events are let go before the delta is handed
        # on, which may take as long as the client takes to read.
        del batch
        if delta is not None:
            yield delta
        if failure is not None:
            raise failure
        if stop():
            return


def _gathered(
    batch: Iterable[_Event], take: Callable[[_Event, PendingDelta], None]
) -> tuple[Delta | None, UpstreamError | None]:
    """The content of a batch as one Delta (None without content), and the failure of the
    event that failed (the content before it gathered)."""
    pending = PendingDelta()
    try:
        for event in batch:
            take(event, pending)
    except UpstreamError as error:
        return pending.delta(), error
    return pending.delta(), None
