"""Logging set-up shared by the command and its worker processes: text for a person at a
terminal, one JSON object per line otherwise (for a log pipeline), every line redacted of the
credentials the process holds and bounded in size.

Lines are formatted where they are logged and written to stderr by a thread of their own, every
few hundredths of a second, from a bounded queue: a stderr that blocks (a log shipper that
stalls, a pipe nobody reads) never holds up the event loop. While it blocks, lines past the
queue are dropped, counted, and said so once stderr takes lines again."""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from service.redaction import MAX_LOG_LINE_CHARS, RedactingFormatter, bounded, bounded_lines, redact

FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"
LogFormat = Literal["auto", "json", "text"]
ACCESS_LOGGER = "switchboard.access"
# What one JSON line keeps of a message and of a traceback, so that it stays one valid object
# within the line bound.
_MAX_MESSAGE_CHARS = MAX_LOG_LINE_CHARS // 2
_MAX_EXCEPTION_CHARS = MAX_LOG_LINE_CHARS // 4
# The most lines waiting for stderr (a few MB at most): beyond them, lines are dropped.
MAX_QUEUED_LINES = 10_000
# How often the writer thread writes what waits.
WRITE_INTERVAL_S = 0.05
STOP_WAIT_S = 5.0


def resolved(log_format: LogFormat) -> Literal["json", "text"]:
    """`auto`: text on a terminal, JSON otherwise."""
    if log_format == "auto":
        return "text" if sys.stderr.isatty() else "json"
    return log_format


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC), level, process, logger, message, the access-log
    fields when the record has them (`extra={"access": {...}}`), and the exception if any."""

    def format(self, record: logging.LogRecord) -> str:
        line = _json_head(record.created, record.levelname, record.processName, record.name)
        access = getattr(record, "access", None)
        if isinstance(access, dict):
            line.update(access)
        else:
            line["message"] = bounded(redact(record.getMessage()), _MAX_MESSAGE_CHARS)
        if record.exc_info:
            line["exception"] = bounded(redact(self.formatException(record.exc_info)), _MAX_EXCEPTION_CHARS)
        return _json_line(line)


def _json_head(created: float, level: str, process: str | None, logger: str) -> dict[str, Any]:
    return {
        "time": _utc_time(created),
        "level": level,
        "process": process,
        "logger": logger,
    }


class _SecondStamp:
    """A time's text up to its second, made once per second (a line per call would otherwise
    format the same date and time again each time)."""

    def __init__(self, render: Callable[[float], str]) -> None:
        self._render = render
        self._second = -1
        self._text = ""

    def __call__(self, at: float) -> str:
        second = int(at)
        if second != self._second:
            self._second, self._text = second, self._render(second)
        return self._text


_utc_second = _SecondStamp(lambda second: datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
_local_second = _SecondStamp(lambda second: time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second)))


def _utc_time(at: float) -> str:
    """ISO 8601 in UTC to the millisecond, as `datetime.isoformat(timespec="milliseconds")` writes it."""
    return f"{_utc_second(at)}.{int((at - int(at)) * 1000):03d}+00:00"


def _json_line(line: dict[str, Any]) -> str:
    # Compact, and several times faster than the standard library's: one is written per call.
    return redact(orjson.dumps(line, default=str).decode())


@dataclass(frozen=True)
class LogSettings:
    """How a process logs; the parent resolves `auto` once and hands the result to its workers."""

    level: str = "INFO"
    format: Literal["json", "text"] = "text"
    # The access log (one line per call) is written whatever `level` is, unless turned off.
    access: bool = True


class _Queued(logging.Handler):
    """Formats a record where it is logged and leaves the line for the writer, or counts it
    dropped when too many wait."""

    def __init__(self, lines: deque[str]) -> None:
        super().__init__()
        self._lines = lines
        self._dropped = 0
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.queue(line)

    def queue(self, line: str) -> None:
        """Leaves a line already formatted (and redacted) for the writer."""
        if len(self._lines) < MAX_QUEUED_LINES:
            self._lines.append(line)
        else:
            with self._lock:
                self._dropped += 1

    def take_dropped(self) -> int:
        with self._lock:
            dropped, self._dropped = self._dropped, 0
        return dropped


class _Writer(threading.Thread):
    """Writes the waiting lines to stderr every `WRITE_INTERVAL_S`, all in one write, after a
    line saying how many were dropped since the last, if any. Waking a few times a second, not
    once a line, it costs the event loop next to nothing."""

    def __init__(self, lines: deque[str], queued: _Queued) -> None:
        super().__init__(name="log writer", daemon=True)
        self._lines = lines
        self._queued = queued
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.wait(WRITE_INTERVAL_S):
            self._write()
        self._write()

    def _write(self) -> None:
        batch = [self._lines.popleft() for _ in range(len(self._lines))]
        dropped = self._queued.take_dropped()
        if not batch and not dropped:
            return
        text = "".join(f"{line}\n" for line in batch)
        if dropped:
            text = self._notice(dropped) + text
        try:
            sys.stderr.write(text)
            sys.stderr.flush()
        except (OSError, ValueError):
            pass  # stderr closed or gone: nowhere left to say so

    def _notice(self, dropped: int) -> str:
        notice = logging.makeLogRecord({"name": __name__, "levelno": logging.WARNING, "levelname": "WARNING"})
        notice.msg = f"{dropped} log lines were dropped: stderr did not take them in time"
        return f"{self._queued.format(notice)}\n"

    def stop(self) -> None:
        """Writes what waits, a few seconds at most (a stderr that stays blocked must not hold
        up the end of the process)."""
        self._stopping.set()
        self.join(STOP_WAIT_S)


_writer: _Writer | None = None
# Where access lines go without a LogRecord, and in which format; None unless `configure_logging`
# set up this process's logging (embedded, or under a test's capture, they take the usual path).
_access_sink: tuple[_Queued, Literal["json", "text"]] | None = None


def emit_access(fields: dict[str, Any], text: Callable[[], str]) -> bool:
    """Formats an access line as the configured handler would (JSON from `fields`, or a text line
    around `text()`) and queues it, skipping the logging machinery that one line per call would
    otherwise pay for; False when this process's logging is not the one set up here (the caller
    logs the usual way)."""
    sink = _access_sink
    if sink is None or logging.getLogger().handlers != [sink[0]]:
        return False
    queued, log_format = sink
    now = time.time()
    process = multiprocessing.current_process().name
    if log_format == "json":
        line = _json_head(now, "INFO", process, ACCESS_LOGGER)
        line.update(fields)
        queued.queue(_json_line(line))
        return True
    # `FORMAT` with logging's default time format: local time, then milliseconds after a comma.
    stamp = f"{_local_second(now)},{int((now - int(now)) * 1000):03d}"
    queued.queue(bounded_lines(redact(f"{stamp} INFO {process} {ACCESS_LOGGER}: {text()}")))
    return True


def configure_logging(settings: LogSettings) -> None:
    """Logs to stderr (through the writer thread), every line redacted of the provider
    credentials the process holds."""
    global _writer, _access_sink
    if _writer is not None:
        _writer.stop()
    lines: deque[str] = deque()
    queued = _Queued(lines)
    if settings.format == "json":
        queued.setFormatter(JsonFormatter())
    else:
        queued.setFormatter(RedactingFormatter(FORMAT))
    _writer = _Writer(lines, queued)
    _writer.start()
    _access_sink = (queued, settings.format)
    logging.basicConfig(level=settings.level, handlers=[queued], force=True)
    logging.getLogger(ACCESS_LOGGER).setLevel(logging.INFO if settings.access else logging.CRITICAL + 1)


@atexit.register
def _flush() -> None:
    """Writes what waits before the process ends."""
    if _writer is not None:
        _writer.stop()
