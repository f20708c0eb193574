"""`switchboard serve` as a process of its own, as an operator runs it: started on a free port
with a config file, its stderr read until it listens, stopped with SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import grpc

from tests.loopback import free_port


class Serve:
    """`serve --config <config_path> --listen 127.0.0.1:<port>` and `arguments`, with the
    environment's provider keys left out and `env` added."""

    def __init__(
        self, config_path: Path, *arguments: str, port: int | None = None, env: Mapping[str, str] = {}
    ) -> None:
        self.port = port or free_port()
        environment = {**{k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}, **env}
        listen = f"127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "service", "serve", "--config", str(config_path), "--listen", listen]
        self.process = subprocess.Popen([*command, *arguments], stderr=subprocess.PIPE, text=True, env=environment)
        self.lines: list[str] = []

    def listening(self, count: int = 1) -> list[int]:
        """The pids of the next `count` gateways (workers) to say they are listening."""
        assert self.process.stderr is not None
        pids: list[int] = []
        deadline = time.monotonic() + 60
        while len(pids) < count and time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if not line:
                break
            self.lines.append(line)
            if match := re.search(r"listening on .* pid (\d+)\)", line):
                pids.append(int(match.group(1)))
        assert len(pids) == count, "the gateway did not start:\n" + "".join(self.lines)
        return pids

    def answering(self) -> None:
        """Waits until it answers on its port, whatever it logs (--log-level WARNING says nothing)."""
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=60)

    def stop(self) -> str:
        """Stops it (SIGTERM) and returns everything it wrote."""
        self.process.send_signal(signal.SIGTERM)
        _, rest = self.process.communicate(timeout=30)
        assert self.process.returncode == 0, "".join(self.lines) + rest
        return "".join(self.lines) + rest


def json_access_lines(output: str) -> list[dict[str, object]]:
    """The access-log lines of a gateway's JSON log, parsed."""
    lines = (json.loads(line) for line in output.splitlines() if line.startswith("{"))
    return [line for line in lines if line.get("logger") == "switchboard.access"]
