"""A real PostgreSQL server (Debian's package, installed by `make system-deps`) on a free loopback
port with a data directory of its own, for the store's tests: started and stopped by PID, and
restartable on the same port and data to play a database that goes away and comes back. As root
it runs as the `postgres` user, since the server refuses to run as root."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time

import psycopg
import pytest

from tests.loopback import free_port


def _binaries() -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not found:
        pytest.fail("PostgreSQL is missing: `make system-deps` installs it")
    return os.path.dirname(found[-1])


class PostgresServer:
    def __init__(self) -> None:
        self.bin = _binaries()
        self.port = free_port()
        # Not under pytest's tmp_path: the `postgres` user cannot enter root's 0700 directories.
        self.directory = tempfile.mkdtemp(prefix="switchboard-pg-")
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.data = os.path.join(self.directory, "data")
        subprocess.run(
            [*self.as_user, f"{self.bin}/initdb", "-D", self.data, "-U", "switchboard", "-A", "trust", "--no-sync"],
            check=True,
            capture_output=True,
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql://switchboard@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [*self.as_user, f"{self.bin}/postgres", "-D", self.data, "-p", str(self.port), "-h", "127.0.0.1",
             "-k", self.directory, "-F", "-c", "logging_collector=off"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                psycopg.connect(self.url, connect_timeout=1).close()
                return
            except psycopg.OperationalError:
                time.sleep(0.05)
        self.stop()
        pytest.fail(f"PostgreSQL did not answer on port {self.port}")

    def stop(self) -> None:
        """A fast shutdown (SIGINT): connections are cut, the data stays."""
        if self.process is not None:
            # The server's own pid (runuser, in between, does not pass signals on).
            with open(os.path.join(self.data, "postmaster.pid")) as pid_file:
                os.kill(int(pid_file.readline()), signal.SIGINT)
            self.process.wait(timeout=30)
            self.process = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
