"""The one rule every provider's stream follows (service.providers.events.batched_deltas): content
that arrived in one read goes on as one Delta, and content read before a failure goes on before it."""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator, Callable, Iterable

import pytest

from service.api.switchboard.v1 import gateway_pb2 as pb
from service.outcomes import Delta, UpstreamError
from service.providers.bedrock import _frames, _StreamState
from service.providers.events import PendingDelta, batched_deltas
from tests.mock_bedrock import event_frame

# A test event: text to add, ("call", index, id) to start a tool call, ("args", index, piece) to add
# to one, "fail" to raise, "" for an event without content (a ping, usage).
Event = str | tuple[str, int, str]


def take(event: Event, pending: PendingDelta) -> None:
    match event:
        case "fail":
            raise UpstreamError(pb.OUTCOME_SERVER_ERROR, "failed mid-stream")
        case ("call", index, call_id):
            pending.calls.append(pb.ToolCallDelta(index=index, id=call_id, name="f"))
        case ("args", index, piece):
            pending.add_arguments(index, piece)
        case str(text) if text:
            pending.texts.append(text)


async def source(batches: Iterable[list[Event]], read: list[int] | None = None) -> AsyncIterator[list[Event]]:
    for number, batch in enumerate(batches):
        if read is not None:
            read.append(number)
        yield batch


async def collect(
    batches: Iterable[list[Event]], *, stop: Callable[[], bool] = lambda: False, read: list[int] | None = None
) -> list[Delta]:
    return [delta async for delta in batched_deltas(source(batches, read), take, stop=stop)]


async def until_failure(deltas: AsyncIterator[Delta], error: type[Exception]) -> tuple[list[Delta], Exception]:
    """The deltas that went on before `deltas` failed with `error`, and the failure."""
    received: list[Delta] = []
    with pytest.raises(error) as caught:
        async for delta in deltas:
            received.append(delta)
    return received, caught.value


async def test_the_content_of_one_batch_goes_on_as_one_delta() -> None:
    deltas = await collect(
        [
            ["a", "b", ("call", 0, "c0"), ("args", 0, '{"x"'), ("args", 0, ": 1}"), ("call", 1, "c1"), "c"],
            [("args", 1, "{}"), ("args", 1, "")],
        ]
    )
    assert deltas == [
        Delta(
            "abc",
            (
                pb.ToolCallDelta(index=0, id="c0", name="f", arguments='{"x": 1}'),
                pb.ToolCallDelta(index=1, id="c1", name="f"),
            ),
        ),
        Delta("", (pb.ToolCallDelta(index=1, arguments="{}"),)),
    ]


def test_argument_pieces_join_only_the_last_piece_of_the_same_call() -> None:
    pending = PendingDelta()
    assert pending.delta() is None
    pending.add_arguments(0, "a")
    pending.add_arguments(0, "b")
    pending.add_arguments(1, "c")
    pending.add_arguments(0, "d")
    assert pending.calls == [
        pb.ToolCallDelta(index=0, arguments="ab"),
        pb.ToolCallDelta(index=1, arguments="c"),
        pb.ToolCallDelta(index=0, arguments="d"),
    ]


async def test_a_batch_is_let_go_before_its_delta_is_handed_on() -> None:
    """Handing a delta on may take as long as the client takes to read (a client that stops
    reading holds the write): the events it was made of are not held meanwhile."""

    class Batch(list[Event]):
        """A list that can be referred to weakly."""

    batches = [Batch(["a", "b"]), Batch(["c"])]
    first = weakref.ref(batches[0])

    async def source() -> AsyncIterator[list[Event]]:
        while batches:
            yield batches.pop(0)

    deltas = batched_deltas(source(), take)
    assert await anext(deltas) == Delta("ab")
    assert first() is None
    assert [delta async for delta in deltas] == [Delta("c")]


async def test_content_before_a_failure_in_the_same_batch_goes_on_first() -> None:
    taken_after: list[str] = []

    def take_and_note(event: Event, pending: PendingDelta) -> None:
        if event == "after":
            taken_after.append(event)
        take(event, pending)

    deltas = batched_deltas(source([["x"], ["a", "b", "fail", "after"]]), take_and_note)
    received, error = await until_failure(deltas, UpstreamError)
    assert received == [Delta("x"), Delta("ab")]
    assert str(error) == "server_error: failed mid-stream"
    assert taken_after == []


async def test_a_failure_without_content_before_it_yields_nothing() -> None:
    received, _ = await until_failure(batched_deltas(source([["", "fail"]]), take), UpstreamError)
    assert received == []


async def test_other_exceptions_pass_through_unflushed() -> None:
    def broken(event: Event, pending: PendingDelta) -> None:
        take(event, pending)
        if event == "b":
            raise KeyError(event)

    received, _ = await until_failure(batched_deltas(source([["a", "b"]]), broken), KeyError)
    assert received == []


async def test_batches_without_content_yield_nothing() -> None:
    assert await collect([[], ["", ""], ["a"], [""]]) == [Delta("a")]


async def test_stop_ends_the_stream_after_the_whole_batch() -> None:
    stopped = False
    read: list[int] = []

    def take_until_end(event: Event, pending: PendingDelta) -> None:
        nonlocal stopped
        if event == "end":
            stopped = True
        else:
            take(event, pending)

    deltas = [
        delta
        async for delta in batched_deltas(
            source([["a"], ["b", "end", "c"], ["d"]], read), take_until_end, stop=lambda: stopped
        )
    ]
    # The stopping batch is read to its end and goes on; the batch after it is never read.
    assert deltas == [Delta("a"), Delta("bc")]
    assert read == [0, 1]


async def test_bedrock_content_before_a_bad_frame_in_the_same_read_goes_on_first() -> None:
    good = event_frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "mock:"}})
    bad = bytearray(event_frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": " no"}}))
    bad[-1] ^= 0xFF  # the message CRC no longer matches

    async def chunks() -> AsyncIterator[bytes]:
        yield good + bytes(bad)

    received, error = await until_failure(
        batched_deltas(_frames(chunks(), 1 << 20), _StreamState().take), UpstreamError
    )
    assert received == [Delta("mock:")]
    assert isinstance(error, UpstreamError)
    assert error.outcome == pb.OUTCOME_PROTOCOL_ERROR
    assert error.message.startswith("bad event-stream frame: ")


async def test_a_bedrock_frame_larger_than_the_bound_fails_once_that_much_is_held() -> None:
    """A 2 MB frame against a 1 MiB bound: the frames before it go on, then a protocol error,
    before the big frame's end was read (nothing holds it whole)."""
    good = event_frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "mock:"}})
    big = event_frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "x" * 2_000_000}})
    read: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        data = good + big
        for start in range(0, len(data), 16 * 1024):
            read.append(start)
            yield data[start : start + 16 * 1024]

    received, error = await until_failure(
        batched_deltas(_frames(chunks(), 1 << 20), _StreamState().take), UpstreamError
    )
    assert received == [Delta("mock:")]
    assert isinstance(error, UpstreamError) and error.outcome == pb.OUTCOME_PROTOCOL_ERROR
    assert error.message == f"an event-stream frame is larger than max_response_bytes ({1 << 20})"
    held = read[-1] + 16 * 1024
    assert (1 << 20) < held <= (1 << 20) + 32 * 1024
