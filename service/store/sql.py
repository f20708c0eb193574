"""The store's tables and queries, one set for SQLite and PostgreSQL: keys (never their secrets)
and the ledger's calls. A `Dialect` says how each database spells what differs (placeholders,
a day of the epoch, real numbers); `SqlStore` runs the queries on one DB-API connection, used
from one thread at a time (see `service.store.StoreThread`)."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from service.identity.keys import KeyRecord
from service.store.records import SHADOW_METHOD, CallRecord, FeedbackRecord, Spend

_KEY_COLUMNS = "id, tenant, name, key_hash, created_at, expires_at, revoked_at, daily_usd, monthly_usd, total_usd"
_CALL_COLUMNS = ", ".join(CallRecord._fields)
_FEEDBACK_COLUMNS = ", ".join(FeedbackRecord._fields)


@dataclass(frozen=True)
class Dialect:
    placeholder: str  # "?" or "%s"
    real: str  # the type of seconds and dollars
    day_of: str  # a UTC YYYY-MM-DD of the `time` column
    columns_of: str  # the names of a table's columns, the table's name a parameter


SQLITE = Dialect("?", "REAL", "date(time, 'unixepoch')", "SELECT name FROM pragma_table_info(?)")
POSTGRES = Dialect(
    "%s",
    "DOUBLE PRECISION",
    "to_char(to_timestamp(time) AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
    "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = %s",
)


def added_call_columns(dialect: Dialect) -> list[tuple[str, str]]:
    """The columns of `calls` added after its first version: a store made before them gets them
    when it is opened, empty for the calls it holds."""
    text = "TEXT NOT NULL DEFAULT ''"
    return [
        ("ttft_ms", dialect.real),
        ("policy", text),
        ("experiment", text),
        ("variant", text),
        ("shadow_of", text),
        ("similarity", dialect.real),
        ("agrees", "INTEGER"),
        ("attempt_ms", dialect.real),
        ("finish_reason", text),
    ]


def schema(dialect: Dialect) -> list[str]:
    real = dialect.real
    return [
        f"""CREATE TABLE IF NOT EXISTS keys (
            id TEXT PRIMARY KEY, tenant TEXT NOT NULL, name TEXT NOT NULL, key_hash TEXT NOT NULL,
            created_at {real} NOT NULL, expires_at {real}, revoked_at {real},
            daily_usd {real}, monthly_usd {real}, total_usd {real})""",
        "CREATE INDEX IF NOT EXISTS keys_by_tenant ON keys (tenant)",
        f"""CREATE TABLE IF NOT EXISTS calls (
            time {real} NOT NULL, request_id TEXT NOT NULL, tenant TEXT NOT NULL, key_id TEXT NOT NULL,
            method TEXT NOT NULL, model_group TEXT NOT NULL, deployment TEXT NOT NULL, status TEXT NOT NULL,
            outcome TEXT NOT NULL, input_tokens BIGINT NOT NULL, output_tokens BIGINT NOT NULL,
            cost_usd {real} NOT NULL, latency_ms {real} NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS calls_by_time ON calls (time)",
        "CREATE INDEX IF NOT EXISTS calls_by_tenant ON calls (tenant, time)",
        # What each tenant and key spent in all, kept with every batch of calls, so that a start
        # reads it rather than summing the whole ledger.
        f"""CREATE TABLE IF NOT EXISTS spend_totals (
            tenant TEXT NOT NULL, key_id TEXT NOT NULL, cost_usd {real} NOT NULL, PRIMARY KEY (tenant, key_id))""",
        "CREATE TABLE IF NOT EXISTS store_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
        f"""CREATE TABLE IF NOT EXISTS feedback (
            time {real} NOT NULL, request_id TEXT NOT NULL, tenant TEXT NOT NULL, key_id TEXT NOT NULL,
            score {real}, label TEXT NOT NULL, comment TEXT NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS feedback_by_call ON feedback (request_id, tenant)",
    ]


class Connection(Protocol):
    def cursor(self) -> Any: ...
    def close(self) -> None: ...


class SqlStore:
    def __init__(self, connection: Connection, dialect: Dialect, transaction: Any) -> None:
        """`transaction`: a context manager factory that commits (or rolls back) what runs in it."""
        self._db = connection
        self._dialect = dialect
        self._transaction = transaction
        with self._cursor() as cursor:
            for statement in schema(dialect):
                cursor.execute(statement)
        self._add_columns("calls", added_call_columns(dialect))
        for index in ("calls_by_request ON calls (request_id)", "calls_by_policy ON calls (policy, time)"):
            self._create_index(index)
        with self._cursor() as cursor:
            # A ledger older than the totals is summed into them once, by whichever process
            # marks it first (the others wait for its transaction, then find it marked).
            cursor.execute(
                "INSERT INTO store_meta (name, value) VALUES ('spend_totals', 'summed') ON CONFLICT (name) DO NOTHING"
            )
            if cursor.rowcount == 1:
                cursor.execute(
                    "INSERT INTO spend_totals (tenant, key_id, cost_usd) SELECT tenant, key_id, sum(cost_usd)"
                    " FROM calls WHERE cost_usd > 0 GROUP BY tenant, key_id"
                )

    def close(self) -> None:
        self._db.close()

    def _columns(self, table: str) -> set[str]:
        with self._cursor() as cursor:
            cursor.execute(self._dialect.columns_of, (table,))
            return {str(row[0]) for row in cursor.fetchall()}

    def _create_index(self, index: str) -> None:
        """Processes opening one store at once may race to make the same index (PostgreSQL
        then fails the loser's statement): the loser's second try finds it made."""
        statement = f"CREATE INDEX IF NOT EXISTS {index}"
        try:
            with self._cursor() as cursor:
                cursor.execute(statement)
        except Exception:
            with self._cursor() as cursor:
                cursor.execute(statement)

    def _add_columns(self, table: str, columns: list[tuple[str, str]]) -> None:
        """Adds those of `columns` the table lacks. Processes opening one store at once may race
        to add the same column: the loser's error is let go once the column is seen to exist."""
        for name, kind in columns:
            if name in self._columns(table):
                continue
            try:
                with self._cursor() as cursor:
                    cursor.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
            except Exception:
                if name not in self._columns(table):
                    raise

    @contextmanager
    def _cursor(self) -> Iterator[Any]:
        with self._transaction():
            cursor = self._db.cursor()
            try:
                yield cursor
            finally:
                cursor.close()

    def _places(self, count: int) -> str:
        return ", ".join([self._dialect.placeholder] * count)

    def add_key(self, record: KeyRecord) -> None:
        with self._cursor() as cursor:
            columns = _KEY_COLUMNS.count(",") + 1
            cursor.execute(
                f"INSERT INTO keys ({_KEY_COLUMNS}) VALUES ({self._places(columns)})", tuple(_key_row(record))
            )

    def revoke_key(self, key_id: str) -> KeyRecord | None:
        """Revokes the key (once: its first revocation time stays); None if there is none."""
        p = self._dialect.placeholder
        with self._cursor() as cursor:
            cursor.execute(
                f"UPDATE keys SET revoked_at = {p} WHERE id = {p} AND revoked_at IS NULL", (time.time(), key_id)
            )
            cursor.execute(f"SELECT {_KEY_COLUMNS} FROM keys WHERE id = {p}", (key_id,))
            row = cursor.fetchone()
        return None if row is None else KeyRecord(*row)

    def keys(self, tenant: str | None = None) -> list[KeyRecord]:
        p = self._dialect.placeholder
        with self._cursor() as cursor:
            if tenant is None:
                cursor.execute(f"SELECT {_KEY_COLUMNS} FROM keys ORDER BY created_at")
            else:
                cursor.execute(f"SELECT {_KEY_COLUMNS} FROM keys WHERE tenant = {p} ORDER BY created_at", (tenant,))
            return [KeyRecord(*row) for row in cursor.fetchall()]

    def spent_by_owner(self, day_start: float, month_start: float) -> list[tuple[str, str, float, float, float]]:
        """Per tenant and key: the cost since `day_start`, since `month_start` (from the calls
        of the month, found by time) and in all (from the totals)."""
        p = self._dialect.placeholder
        with self._cursor() as cursor:
            cursor.execute(
                f"SELECT tenant, key_id, sum(CASE WHEN time >= {p} THEN cost_usd ELSE 0 END), sum(cost_usd)"
                f" FROM calls WHERE time >= {p} AND cost_usd > 0 AND method <> {p} GROUP BY tenant, key_id",
                (day_start, month_start, SHADOW_METHOD),
            )
            recent = {(t, k): (float(d), float(m)) for t, k, d, m in cursor.fetchall()}
            cursor.execute("SELECT tenant, key_id, cost_usd FROM spend_totals")
            totals = {(t, k): float(a) for t, k, a in cursor.fetchall()}
        return [
            (tenant, key_id, *recent.get((tenant, key_id), (0.0, 0.0)), total)
            for (tenant, key_id), total in totals.items()
        ]

    def keys_version(self) -> tuple[object, ...]:
        """Changes with every key made or revoked (keys are never deleted and revoked once, so
        the count of each only grows, whatever order concurrent writers commit in), and with
        what an operator changes by hand: a key deleted and another made, an expiry or a budget
        moved."""
        with self._cursor() as cursor:
            cursor.execute(
                "SELECT count(*), count(revoked_at), sum(created_at), sum(coalesce(revoked_at, 0)),"
                " sum(coalesce(expires_at, 0)), sum(coalesce(daily_usd, 0)), sum(coalesce(monthly_usd, 0)),"
                " sum(coalesce(total_usd, 0)), sum(length(key_hash)), max(id), min(id) FROM keys"
            )
            return tuple(cursor.fetchone())

    def add_calls(self, records: Sequence[CallRecord]) -> None:
        """One transaction, with the totals they add to: all of them or none."""
        spent: defaultdict[tuple[str, str], float] = defaultdict(float)
        for record in records:
            # Shadow calls are the gateway's own: no budget of the tenant's counts them.
            if record.cost_usd > 0 and record.method != SHADOW_METHOD:
                spent[record.tenant, record.key_id] += record.cost_usd
        rows = [_row(record) for record in records]
        with self._cursor() as cursor:
            cursor.executemany(
                f"INSERT INTO calls ({_CALL_COLUMNS}) VALUES ({self._places(len(CallRecord._fields))})", rows
            )
            cursor.executemany(
                f"INSERT INTO spend_totals (tenant, key_id, cost_usd) VALUES ({self._places(3)})"
                " ON CONFLICT (tenant, key_id) DO UPDATE SET cost_usd = spend_totals.cost_usd + excluded.cost_usd",
                [(tenant, key_id, cost) for (tenant, key_id), cost in spent.items()],
            )

    def add_feedback(self, records: Sequence[FeedbackRecord]) -> None:
        with self._cursor() as cursor:
            cursor.executemany(
                f"INSERT INTO feedback ({_FEEDBACK_COLUMNS}) VALUES ({self._places(len(FeedbackRecord._fields))})",
                records,
            )

    def feedback(self, request_id: str, tenant: str) -> list[FeedbackRecord]:
        """What `tenant` reported on its call `request_id`, oldest first."""
        p = self._dialect.placeholder
        with self._cursor() as cursor:
            cursor.execute(
                f"SELECT {_FEEDBACK_COLUMNS} FROM feedback WHERE request_id = {p} AND tenant = {p} ORDER BY time",
                (request_id, tenant),
            )
            return [FeedbackRecord(*row) for row in cursor.fetchall()]

    def served(self, deployment: str, since: float, limit: int) -> list[ServedRow]:
        """The latest `limit` calls `deployment` served since `since` (shadow calls included)."""
        p = self._dialect.placeholder
        return self._served(f"c.deployment = {p} AND c.time >= {p}", [deployment, since], limit)

    def variant_served(self, policy: str, experiment: str, variant: str, since: float, limit: int) -> list[ServedRow]:
        """The latest `limit` calls `policy` routed to `variant` of `experiment` since `since`."""
        p = self._dialect.placeholder
        where = f"c.policy = {p} AND c.time >= {p} AND c.experiment = {p} AND c.variant = {p} AND c.method <> {p}"
        return self._served(where, [policy, since, experiment, variant, SHADOW_METHOD], limit)

    def shadow_pairs(self, policy: str, deployment: str, since: float, limit: int) -> list[tuple[ServedRow, ServedRow]]:
        """The latest `limit` shadow calls `policy` sent to `deployment` since `since`, each with
        the call it copied: (that call, the shadow call). The copied call's latency is its
        answering attempt's, as the shadow's is. A client may reuse a request id: a shadow call
        is paired with the latest call of that id and tenant that ended before it, once."""
        p = self._dialect.placeholder
        where = f"c.policy = {p} AND c.time >= {p} AND c.method = {p} AND c.deployment = {p}"
        arguments: list[object] = [SHADOW_METHOD, policy, since, SHADOW_METHOD, deployment]
        joined = f" JOIN calls o ON o.request_id = c.shadow_of AND o.tenant = c.tenant AND o.method <> {p}"
        columns = ", ".join([*_served_columns("c"), *_served_columns("o", attempt_latency=True), "c.request_id"])
        with self._cursor() as cursor:
            cursor.execute(
                f"SELECT {columns} FROM calls c{joined} WHERE {where} AND o.time <= c.time"
                f" ORDER BY c.time DESC, o.time DESC LIMIT {p}",
                [*arguments, limit],
            )
            rows = cursor.fetchall()
        width, pairs, seen = len(SERVED_COLUMNS), [], set()
        for row in rows:
            if row[-1] not in seen:
                seen.add(row[-1])
                pairs.append((tuple(row[width : 2 * width]), tuple(row[:width])))
        return pairs

    def _served(self, where: str, arguments: list[object], limit: int) -> list[ServedRow]:
        """Rows of SERVED_COLUMNS of the latest `limit` calls `where` selects (as `c`)."""
        p = self._dialect.placeholder
        with self._cursor() as cursor:
            cursor.execute(
                f"SELECT {', '.join(_served_columns('c'))} FROM calls c WHERE {where} ORDER BY c.time DESC LIMIT {p}",
                [*arguments, limit],
            )
            return [tuple(row) for row in cursor.fetchall()]

    def spend(self, since: float, tenant: str = "", key_id: str = "") -> list[Spend]:
        """Calls, tokens and cost since `since` (seconds since the epoch), per UTC day, tenant,
        key and model group; of one tenant or key when given."""
        p = self._dialect.placeholder
        where, arguments = [f"time >= {p}"], list[float | str]([since])
        for column, value in (("tenant", tenant), ("key_id", key_id)):
            if value:
                where.append(f"{column} = {p}")
                arguments.append(value)
        day = self._dialect.day_of
        shadow = f"CASE WHEN method = {p} THEN 1 ELSE 0 END"
        with self._cursor() as cursor:
            cursor.execute(
                f"SELECT {day}, tenant, key_id, model_group, {shadow}, count(*), sum(input_tokens),"
                f" sum(output_tokens), sum(cost_usd) FROM calls WHERE {' AND '.join(where)}"
                " GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5",
                [SHADOW_METHOD, *arguments],
            )
            rows = cursor.fetchall()
        return [Spend(str(d), t, k, g, int(n), int(i), int(o), float(c), bool(s)) for d, t, k, g, s, n, i, o, c in rows]


# What a comparison reads of a call: status, latency, cost, output tokens, time to first token,
# the mean score of the feedback its own tenant gave it (None: none), and for a shadow call
# whether its answer agreed with the one it copied (1, 0; None: not compared).
SERVED_COLUMNS = ("status", "latency_ms", "cost_usd", "output_tokens", "ttft_ms", "score", "agrees")
ServedRow = tuple[Any, ...]


def _served_columns(alias: str, *, attempt_latency: bool = False) -> list[str]:
    """SERVED_COLUMNS of the call `alias`; with `attempt_latency`, its answering attempt's latency
    where it has one (older records do not) for its latency."""
    computed = {
        "score": (
            f"(SELECT avg(f.score) FROM feedback f WHERE f.request_id = {alias}.request_id"
            f" AND f.tenant = {alias}.tenant AND f.score IS NOT NULL)"
        ),
        "latency_ms": f"coalesce({alias}.attempt_ms, {alias}.latency_ms)" if attempt_latency else f"{alias}.latency_ms",
    }
    return [computed.get(name, f"{alias}.{name}") for name in SERVED_COLUMNS]


_AGREES = CallRecord._fields.index("agrees")


def _row(record: CallRecord) -> tuple[object, ...]:
    """The record as the calls table takes it: `agrees` as 0 or 1 (PostgreSQL would not take a
    boolean into an INTEGER column)."""
    row: list[object] = list(record)
    if record.agrees is not None:
        row[_AGREES] = int(record.agrees)
    return tuple(row)


def _key_row(record: KeyRecord) -> list[object]:
    return [getattr(record, column.strip()) for column in _KEY_COLUMNS.split(",")]
