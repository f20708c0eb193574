"""The ledger: one record per call (`ledger.enabled`), written to the store in batches by a
background task, never on the request path. A call only appends its record to a bounded buffer;
every `batch_interval_s` the buffer goes to the store in one transaction.

When the store cannot be written (a full disk, a locked or vanished database), the batch stays
in the buffer and is tried again, with the interval doubling up to ten times, while calls go on:
nothing blocks and nothing fails. A buffer full to `max_buffered` drops its oldest records,
counted and logged once per outage; when the store takes records again the log says how many
waited and how many were lost. A crash loses what was buffered: with the store writable, the
calls since the last write began (about an interval's, and the write's own time).

Feedback on calls (`Gateway.Feedback`) goes the same way, in a buffer of its own."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from service.access import Call
from service.config.schema import LedgerSettings
from service.store import StoreThread
from service.store.records import SHADOW_METHOD, CallRecord, FeedbackRecord

log = logging.getLogger(__name__)

_LONGEST_BACKOFF = 10
# Records written in one transaction at most: a backlog goes in parts, so that no one write
# holds the store's thread (and the key refreshes behind it) for long.
MAX_BATCH = 10_000
# The methods whose calls are recorded: those that reach a provider.
LEDGERED = ("Chat", "ChatStream")


class Ledger:
    def __init__(self, store: StoreThread, settings: LedgerSettings) -> None:
        self._store = store
        self._interval_s = settings.batch_interval_s
        self._buffer: deque[CallRecord] = deque()
        self._feedback: deque[FeedbackRecord] = deque()
        self._max = settings.max_buffered
        self.written = 0
        self.dropped = 0
        self._failing_since: float | None = None
        self._dropped_in_outage = 0
        self._flushing = asyncio.Lock()

    def record(self, call: Call, status: str) -> None:
        """Appends the record of a chat (the calls that can spend) whose caller was known (with
        auth on, a stranger refused writes nothing); never waits."""
        if call.method not in LEDGERED or call.caller is None:
            return
        self.add_record(
            CallRecord(
                time.time(),
                call.request_id,
                call.tenant,
                call.key_id,
                call.method,
                call.model_group,
                call.deployment,
                status,
                call.outcome,
                call.input_tokens,
                call.output_tokens,
                call.cost_usd,
                round(call.elapsed_s() * 1000, 3),
                ttft_ms=None if call.ttft_ms is None else round(call.ttft_ms, 3),
                policy=call.policy,
                experiment=call.experiment,
                variant=call.variant,
                attempt_ms=None if call.attempt_ms is None else round(call.attempt_ms, 3),
                finish_reason=call.finish_reason,
            )
        )

    def add_record(self, record: CallRecord) -> None:
        """Appends a call's record as it is (a shadow call's: service/shadows.py); never waits.
        A full buffer drops a shadow call's record rather than make room for it: the calls
        callers made are what spending and budgets are read from."""
        self._append(self._buffer, record, make_room=record.method != SHADOW_METHOD)

    def record_feedback(self, record: FeedbackRecord) -> None:
        """Appends a report on a call; never waits."""
        self._append(self._feedback, record)

    def _append(self, buffer: deque[Any], record: Any, *, make_room: bool = True) -> None:
        """Appends to a bounded buffer: a full one drops its oldest record, or without
        `make_room` this one, counted either way."""
        if len(buffer) >= self._max:
            self._dropped(1)
            if not make_room:
                return
            buffer.popleft()
        buffer.append(record)

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    async def run(self) -> None:
        """Starts a write every interval, counted from the start of the last one (so that the
        writes' own time does not stretch the interval), longer while the store fails; until
        cancelled."""
        backoff, began = 1, time.monotonic()
        while True:
            await asyncio.sleep(max(0.0, began + self._interval_s * backoff - time.monotonic()))
            began = time.monotonic()
            backoff = 1 if await self.flush() else min(backoff * 2, _LONGEST_BACKOFF)

    async def flush(self) -> bool:
        """Writes what is buffered, at most MAX_BATCH records a transaction; False when the store
        would not take them (they stay buffered). One flush at a time; one whose caller is
        cancelled still finishes its write and puts back what the store refused."""
        async with self._flushing:
            store = self._store.store
            buffers: tuple[tuple[deque[Any], Callable[[list[Any]], None]], ...] = (
                (self._buffer, store.add_calls),
                (self._feedback, store.add_feedback),
            )
            for buffer, add in buffers:
                while buffer:
                    batch = [buffer.popleft() for _ in range(min(MAX_BATCH, len(buffer)))]
                    if not await asyncio.shield(asyncio.ensure_future(self._write(batch, buffer, add))):
                        return False
            return True

    async def _write(self, batch: list[Any], buffer: deque[Any], add: Callable[[list[Any]], None]) -> bool:
        try:
            await self._store.call(add, batch)
        except Exception as error:  # sqlite3.Error, psycopg.Error, OSError: the store is away; calls go on
            if self._failing_since is None:
                self._failing_since = time.monotonic()
                log.error("the ledger cannot write to the store (%s); buffering up to %d records", error, self._max)
            self._put_back(batch, buffer)
            return False
        self.written += len(batch)
        if self._failing_since is not None:
            away = time.monotonic() - self._failing_since
            log.warning(
                "the ledger writes again after %.1fs: %d records waited, %d were dropped",
                away,
                len(batch) + len(self._buffer),
                self._dropped_in_outage,
            )
            self._failing_since, self._dropped_in_outage = None, 0
        return True

    def _put_back(self, batch: list[Any], buffer: deque[Any]) -> None:
        """The unwritten batch goes back before what came meanwhile, the oldest dropped past the bound."""
        buffer.extendleft(reversed(batch))
        while len(buffer) > self._max:
            buffer.popleft()
            self._dropped(1)

    def _dropped(self, count: int) -> None:
        if self._dropped_in_outage == 0:
            log.error(
                "the ledger's buffer is full (%d records): dropping the oldest until the store takes them", self._max
            )
        self.dropped += count
        self._dropped_in_outage += count
