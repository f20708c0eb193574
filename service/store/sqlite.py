"""The store in a SQLite file (WAL mode: the workers of a host, and readers such as the CLI,
share it): keys now; the ledger of calls alongside them."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

from service.identity.keys import KeyRecord
from service.store.records import CallRecord, Spend

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
CREATE TABLE IF NOT EXISTS calls (
    time REAL NOT NULL,
    request_id TEXT NOT NULL,
    tenant TEXT NOT NULL,
    key_id TEXT NOT NULL,
    method TEXT NOT NULL,
    model_group TEXT NOT NULL,
    deployment TEXT NOT NULL,
    status TEXT NOT NULL,
    outcome TEXT NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    latency_ms REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS calls_by_time ON calls (time);
CREATE INDEX IF NOT EXISTS calls_by_tenant ON calls (tenant, time);
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

    def add_calls(self, records: Sequence[CallRecord]) -> None:
        """One transaction: all of them or none."""
        with self._db:
            self._db.executemany(f"INSERT INTO calls ({_CALL_COLUMNS}) VALUES ({_CALL_PLACES})", records)

    def spend(self, since: float, tenant: str = "", key_id: str = "") -> list[Spend]:
        """Calls, tokens and cost since `since` (seconds since the epoch), per UTC day, tenant,
        key and model group; of one tenant or key when given."""
        where, arguments = ["time >= ?"], list[float | str]([since])
        for column, value in (("tenant", tenant), ("key_id", key_id)):
            if value:
                where.append(f"{column} = ?")
                arguments.append(value)
        rows = self._db.execute(
            "SELECT date(time, 'unixepoch'), tenant, key_id, model_group, count(*), sum(input_tokens),"
            " sum(output_tokens), sum(cost_usd) FROM calls WHERE "
            + " AND ".join(where)
            + " GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4",
            arguments,
        ).fetchall()
        return [Spend(*row) for row in rows]

    def keys_version(self) -> int:
        """Rises with every change to the keys."""
        (version,) = self._db.execute("SELECT coalesce(max(version), 0) FROM keys").fetchone()
        return int(version)


_NEXT_VERSION = "(SELECT coalesce(max(version), 0) + 1 FROM keys)"
_CALL_COLUMNS = ", ".join(CallRecord._fields)
_CALL_PLACES = ", ".join("?" for _ in CallRecord._fields)
