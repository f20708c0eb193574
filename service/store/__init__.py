"""Where keys and the ledger are kept (`store:`): a SQLite file by default, PostgreSQL at scale.
Its calls block, so the service makes them on one thread of their own (`StoreThread`), never on
the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote, urlsplit

from service.config import ConfigError
from service.config.schema import StoreSettings
from service.redaction import SECRETS, redact
from service.store.sql import SqlStore
from service.store.sqlite import open_sqlite

Store = SqlStore
T = TypeVar("T")


def open_store(settings: StoreSettings, config_dir: Path | None, environ: Mapping[str, str]) -> Store:
    """The store the settings name, its tables made if missing; ConfigError naming the key."""
    if settings.backend == "postgres":
        from service.store.postgres import open_postgres  # psycopg only when it is used

        url = environ.get(settings.url_env or "", "")
        if not url:
            raise ConfigError(f"store.url_env: {settings.url_env or '(unset)'} must hold the PostgreSQL URL")
        password = urlsplit(url).password
        # The URL may carry a password: it, and the password alone (quoted or not), are never shown.
        SECRETS.add([url, password, None if password is None else unquote(password)])
        try:
            return open_postgres(url)
        except Exception as error:  # psycopg.Error: the server is away or refuses
            raise ConfigError(f"store: cannot open the PostgreSQL store: {redact(str(error))}") from error
    path = settings.path if settings.path.is_absolute() or config_dir is None else config_dir / settings.path
    try:
        return open_sqlite(path)
    except Exception as error:  # sqlite3.Error, OSError: a path that cannot hold a database
        raise ConfigError(f"store.path: cannot open {path}: {error}") from error


class StoreThread:
    """The store's calls, made one at a time on a thread of their own."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="switchboard-store")

    async def call(self, method: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, method, *args)

    def close(self) -> None:
        self._thread.submit(self.store.close).result()
        self._thread.shutdown()
