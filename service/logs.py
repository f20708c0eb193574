"""Logging set-up shared by the command and its worker processes."""

from __future__ import annotations

import logging

from service.redaction import RedactingFormatter

FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"


def configure_logging(level: str) -> None:
    """Logs to stderr, every line redacted of the provider credentials the process holds."""
    handler = logging.StreamHandler()
    handler.setFormatter(RedactingFormatter(FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
