"""The store in a SQLite file, in WAL mode: the workers of a host, and readers such as the CLI,
share it."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from service.store.sql import SQLITE, SqlStore


def open_sqlite(path: Path) -> SqlStore:
    db = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")

    @contextmanager
    def transaction() -> Iterator[None]:
        db.execute("BEGIN")
        try:
            yield
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    return SqlStore(db, SQLITE, transaction)
