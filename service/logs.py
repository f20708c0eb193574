"""Logging set-up shared by the command and its worker processes."""

from __future__ import annotations

import logging


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s")
    # httpx logs every upstream request at INFO: a line per call, and 8% of a
    # worker's CPU under load (py-spy). Its warnings and errors still show.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
