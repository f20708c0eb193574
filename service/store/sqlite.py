"""The store in a SQLite file (WAL mode: the workers of a host, and readers such as the CLI,
share it): keys now; the ledger of calls alongside them."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from service.identity.keys import KeyRecord

_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL,
    revoked_at REAL,
    version INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS keys_by_tenant ON keys (tenant);
"""
_COLUMNS = "id, tenant, name, key_hash, created_at, expires_at, revoked_at"


class SqliteStore:
    """One connection, used from one thread at a time (see `service.store.Store`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def add_key(self, record: KeyRecord) -> None:
        with self._db:
            self._db.execute(
                f"INSERT INTO keys ({_COLUMNS}, version) VALUES (?, ?, ?, ?, ?, ?, ?, {_NEXT_VERSION})",
                (record.id, record.tenant, record.name, record.key_hash, record.created_at, record.expires_at, None),
            )

    def revoke_key(self, key_id: str) -> KeyRecord | None:
        """Revokes the key (once: its first revocation time stays); None if there is none."""
        with self._db:
            self._db.execute(
                f"UPDATE keys SET revoked_at = ?, version = {_NEXT_VERSION} WHERE id = ? AND revoked_at IS NULL",
                (time.time(), key_id),
            )
            row = self._db.execute(f"SELECT {_COLUMNS} FROM keys WHERE id = ?", (key_id,)).fetchone()
        return None if row is None else KeyRecord(*row)

    def keys(self, tenant: str | None = None) -> list[KeyRecord]:
        if tenant is None:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM keys ORDER BY created_at").fetchall()
        else:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM keys WHERE tenant = ? ORDER BY created_at", (tenant,)
            ).fetchall()
        return [KeyRecord(*row) for row in rows]

    def keys_version(self) -> int:
        """Rises with every change to the keys."""
        (version,) = self._db.execute("SELECT coalesce(max(version), 0) FROM keys").fetchone()
        return int(version)


_NEXT_VERSION = "(SELECT coalesce(max(version), 0) + 1 FROM keys)"
