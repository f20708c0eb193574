"""The store in PostgreSQL, for gateways on several hosts. The connection is made again when the
server went away (a restart, a failover): the call that found it gone fails, as a write to a
store that is away does, and the next one reconnects."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from service.store.sql import POSTGRES, SqlStore

CONNECT_TIMEOUT_S = 5


class _Reconnecting:
    """A connection, made again when the last one broke."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._connection: psycopg.Connection[Any] | None = None

    def current(self) -> psycopg.Connection[Any]:
        if self._connection is None or self._connection.closed or self._connection.broken:
            # A connection the network left half-open is noticed within seconds (keepalives,
            # TCP's own timeout), and no statement runs forever: the store's one thread is never
            # held indefinitely.
            self._connection = psycopg.connect(
                self._url,
                connect_timeout=CONNECT_TIMEOUT_S,
                autocommit=True,
                keepalives=1,
                keepalives_idle=10,
                keepalives_interval=5,
                keepalives_count=3,
                tcp_user_timeout=15_000,
                options="-c statement_timeout=15000",
            )
        return self._connection

    def cursor(self) -> Any:
        return self.current().cursor()

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()


def open_postgres(url: str) -> SqlStore:
    connection = _Reconnecting(url)

    @contextmanager
    def transaction() -> Iterator[None]:
        with connection.current().transaction():
            yield

    return SqlStore(connection, POSTGRES, transaction)
