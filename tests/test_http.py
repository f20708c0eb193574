"""The shared HTTP pieces: the event-stream decoder and its bounds, Retry-After and transport failure classes."""

from __future__ import annotations

import random
import re
import tracemalloc
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from service.api.switchboard.v1 import gateway_pb2 as pb
from service.outcomes import UpstreamError
from service.providers.events import ServerSentEvent, server_sent_events
from service.providers.http import retry_after

LIMIT = 1 << 20


async def decode(*chunks: bytes) -> list[ServerSentEvent]:
    async def source() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    return [event async for events in server_sent_events(source(), max_event_bytes=LIMIT) for event in events]


async def test_events_split_on_blank_lines_whatever_the_line_ending() -> None:
    events = await decode(b"data: a\n\ndata: b\r\n\r\ndata: c\r\r")
    assert [e.data for e in events] == ["a", "b", "c"]


async def test_lines_and_crlf_split_across_chunks_are_joined() -> None:
    events = await decode(b"da", b"ta: one\r", b"\n\r", b"\ndata: t", b"wo\n", b"\n")
    assert [e.data for e in events] == ["one", "two"]


async def test_data_lines_join_with_newlines_and_fields_follow_the_standard() -> None:
    events = await decode(
        b": a comment\nevent: content_block_delta\nid: 7\ndata: first\ndata:second\ndata\nretry: 5\nx: y\n\n"
        b"data: {}\n\n"
    )
    assert events == [
        ServerSentEvent("content_block_delta", "first\nsecond\n", "7"),
        # The event name resets after each dispatch; the last id carries over.
        ServerSentEvent("message", "{}", "7"),
    ]


async def test_blank_lines_without_data_dispatch_nothing() -> None:
    assert await decode(b"\n\nevent: ping\n\n: keep-alive\n\n") == []


async def test_an_unfinished_event_at_the_end_is_dropped() -> None:
    assert [e.data for e in await decode(b"data: done\n\ndata: half")] == ["done"]
    assert [e.data for e in await decode(b"data: done\n\ndata: half\n")] == ["done"]


async def test_events_completed_by_one_read_come_as_one_batch() -> None:
    async def source() -> AsyncIterator[bytes]:
        yield b"data: 1\n\ndata: 2\n\ndata: 3"
        yield b"\n\n"

    batches = [[e.data for e in events] async for events in server_sent_events(source(), max_event_bytes=LIMIT)]
    assert batches == [["1", "2"], ["3"]]


async def test_a_batch_handed_on_leaves_nothing_of_its_read_behind() -> None:
    """A caller may take as long as its client takes to read to pass a batch on (a client that
    stops reading holds the write): meanwhile the decoder keeps neither the read, nor its lines,
    nor the events it handed on, only the line not yet ended."""
    reads = [(b"data: " + b"x" * 200 + b"\n\n") * 2000 + b"data: not yet ended"]

    async def source() -> AsyncIterator[bytes]:
        while reads:
            yield reads.pop()

    batches = server_sent_events(source(), max_event_bytes=LIMIT)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        assert len(await anext(batches)) == 2000  # taken, and let go at once
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 4096


async def test_lines_that_are_no_field_can_be_kept() -> None:
    async def source() -> AsyncIterator[bytes]:
        yield b'data: 1\n\n{\n  "error": {"code": 503}\n}\n'

    stray: list[str] = []
    events = [e.data async for batch in server_sent_events(source(), stray, max_event_bytes=LIMIT) for e in batch]
    assert events == ["1"]
    assert stray == ["{", '  "error": {"code": 503}', "}"]


async def too_large(chunks: list[bytes], stray: list[str] | None = None) -> tuple[list[str], str]:
    """The events decoded from `chunks` before the bound stopped them, and what it said."""

    async def source() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    seen: list[str] = []
    with pytest.raises(UpstreamError) as caught:
        async for events in server_sent_events(source(), stray, max_event_bytes=LIMIT):
            seen += [event.data for event in events]
    assert caught.value.outcome == pb.OUTCOME_PROTOCOL_ERROR
    return seen, caught.value.message


async def test_an_event_may_be_as_large_as_the_bound() -> None:
    data = "x" * (LIMIT - 1)
    assert [e.data for e in await decode(b"data: " + data.encode() + b"\n\n")] == [data]


async def test_a_line_that_never_ends_is_refused_once_it_passes_the_bound() -> None:
    piece = b"x" * 16 * 1024
    seen, message = await too_large([b"data: ok\n\ndata: ", *[piece] * 100])
    assert seen == ["ok"]
    assert message == f"a line of the event stream is larger than max_response_bytes ({LIMIT})"


async def test_an_event_of_many_lines_never_dispatched_is_refused() -> None:
    seen, message = await too_large([b"data: " + b"y" * 1000 + b"\n"] * 2000)
    assert seen == []
    assert message == f"an event of the stream is larger than max_response_bytes ({LIMIT})"


async def test_stray_lines_are_kept_only_up_to_the_bound() -> None:
    stray: list[str] = []
    _, message = await too_large([b"z" * 1000 + b"\n"] * 2000, stray)
    assert message == f"an event of the stream is larger than max_response_bytes ({LIMIT})"
    assert sum(map(len, stray)) <= LIMIT


async def test_the_bound_is_on_what_is_held_not_on_the_whole_stream() -> None:
    chunk = b"data: " + b"w" * 1000 + b"\n\n"
    assert len(await decode(*[chunk] * 3000)) == 3000


async def test_invalid_utf8_is_replaced_not_fatal() -> None:
    (event,) = await decode(b"data: \xff ok\n\n")
    assert event.data == "\ufffd ok"


def reference_events(stream: bytes) -> list[ServerSentEvent]:
    """The HTML standard's event-stream interpretation, line by line and as plainly as it reads."""
    events: list[ServerSentEvent] = []
    data: list[str] = []
    name, last_id = "", None
    *lines, _unfinished = re.split(r"\r\n|\r|\n", stream.decode(errors="replace"))
    for line in lines:
        if not line:
            if data:
                events.append(ServerSentEvent(name or "message", "\n".join(data), last_id))
            data, name = [], ""
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            data.append(value)
        elif field == "event":
            name = value
        elif field == "id" and "\0" not in value:
            last_id = value
    return events


_LINES = ["data: a", "data:b", "data", 'data: {"x": 1}', "event: e", "id: 7", "id", ": note", "retry: 5", "f: v", ""]


@pytest.mark.parametrize("endings", [("\n",), ("\n", "\r\n", "\r")])
async def test_random_streams_decode_as_the_standard_says(endings: tuple[str, ...]) -> None:
    """Against `reference_events` on random streams cut into random reads: LF alone takes the
    decoder's fast way for single data lines, mixed endings its line-by-line one."""
    rng = random.Random(7)
    for _ in range(400):
        stream = "".join(rng.choice(_LINES) + rng.choice(endings) for _ in range(rng.randrange(1, 30))).encode()
        cuts = sorted(rng.sample(range(1, len(stream)), min(len(stream) - 1, rng.randrange(0, 6))))
        chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
        assert await decode(*chunks) == reference_events(stream), stream


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": "-3"}, 0.0),
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert retry_after(headers) == expected


def test_retry_after_as_an_http_date() -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    seconds = retry_after({"retry-after": when})
    assert seconds is not None
    assert 28 <= seconds <= 30
