"""Secrets never leave the process: every provider credential the gateway holds is registered
here, and any text bound for a client or a log passes through `redact`, whatever path it took
(an upstream that reflects request headers in its error body, an exception's message, a
traceback). Redaction is by value, so it holds however the text was built."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

REDACTED = "[redacted]"
# Shorter values are not secrets worth the false positives (and would match everywhere).
MIN_SECRET_CHARS = 8
# The longest line a log gets; the rest is counted, not written.
MAX_LOG_LINE_CHARS = 4096


class Secrets:
    """The secret values of this process. Values are only added: a call that began before a
    reload may still meet an old key."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None

    def add(self, values: Iterable[str | None]) -> None:
        new = {v for v in values if v and len(v) >= MIN_SECRET_CHARS} - self._values
        if not new:
            return
        self._values |= new
        # Longest first, so that a secret holding another is replaced whole.
        alternatives = sorted(self._values, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(value) for value in alternatives))

    def redact(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(REDACTED, text)


SECRETS = Secrets()


def redact(text: str) -> str:
    return SECRETS.redact(text)


def bounded(text: str, limit: int) -> str:
    """`text`, cut to `limit` characters with a note of how much was left out: what a stranger
    sent or an upstream said goes into errors and logs only so long."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


class RedactingFormatter(logging.Formatter):
    """A formatter whose whole output, exception and stack text included, is redacted, and whose
    every line is bounded: whatever a stranger got into a message, a log line stays a few KB."""

    def format(self, record: logging.LogRecord) -> str:
        return bounded_lines(redact(super().format(record)))


def bounded_lines(text: str) -> str:
    """`text` with each of its lines bounded to a log line's size."""
    if len(text) <= MAX_LOG_LINE_CHARS:
        return text
    return "\n".join(bounded(line, MAX_LOG_LINE_CHARS) for line in text.split("\n"))
