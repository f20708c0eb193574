"""Logging set-up shared by the command and its worker processes: text for a person at a
terminal, one JSON object per line otherwise (for a log pipeline), every line redacted of the
credentials the process holds and bounded in size."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from service.redaction import MAX_LOG_LINE_CHARS, RedactingFormatter, bounded, redact

FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"
LogFormat = Literal["auto", "json", "text"]
ACCESS_LOGGER = "switchboard.access"
# What one JSON line keeps of a message and of a traceback, so that it stays one valid object
# within the line bound.
_MAX_MESSAGE_CHARS = MAX_LOG_LINE_CHARS // 2
_MAX_EXCEPTION_CHARS = MAX_LOG_LINE_CHARS // 4


def resolved(log_format: LogFormat) -> Literal["json", "text"]:
    """`auto`: text on a terminal, JSON otherwise."""
    if log_format == "auto":
        return "text" if sys.stderr.isatty() else "json"
    return log_format


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC), level, process, logger, message, the access-log
    fields when the record has them (`extra={"access": {...}}`), and the exception if any."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "process": record.processName,
            "logger": record.name,
        }
        access = getattr(record, "access", None)
        if isinstance(access, dict):
            line.update(access)
        else:
            line["message"] = bounded(redact(record.getMessage()), _MAX_MESSAGE_CHARS)
        if record.exc_info:
            line["exception"] = bounded(redact(self.formatException(record.exc_info)), _MAX_EXCEPTION_CHARS)
        return redact(json.dumps(line, ensure_ascii=False, default=str))


@dataclass(frozen=True)
class LogSettings:
    """How a process logs; the parent resolves `auto` once and hands the result to its workers."""

    level: str = "INFO"
    format: Literal["json", "text"] = "text"
    # The access log (one line per call) is written whatever `level` is, unless turned off.
    access: bool = True


def configure_logging(settings: LogSettings) -> None:
    """Logs to stderr, every line redacted of the provider credentials the process holds."""
    handler = logging.StreamHandler()
    if settings.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(RedactingFormatter(FORMAT))
    logging.basicConfig(level=settings.level, handlers=[handler], force=True)
    logging.getLogger(ACCESS_LOGGER).setLevel(logging.INFO if settings.access else logging.CRITICAL + 1)
