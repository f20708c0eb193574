"""What the benchmark scripts share: free ports, servers run for the length of a block,
the machine's description and process memory."""

from __future__ import annotations

import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import router_core

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benches" / "results"
# The Go tools `make tools` builds: the upstream, the load generator, ghz.
BIN = ROOT / ".cache" / "bin"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def running(command: list[str], ready: str, port: int, processes: int = 1, *, grpc_ready: bool = True) -> Iterator[int]:
    """Run `command` until the block ends, once `processes` of its output lines matched `ready`
    (and, for a gRPC server, a channel to it is ready); yields its pid."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    assert process.stdout is not None
    seen = 0
    for line in process.stdout:
        seen += bool(re.search(ready, line))
        if seen == processes:
            break
    else:
        raise RuntimeError(f"{command} did not start")
    # Keep reading, so that a chatty server never blocks on a full pipe.
    threading.Thread(target=process.stdout.read, daemon=True).start()
    try:
        if grpc_ready:
            # Imported here: route_boundary measures the RSS of a process holding only the router.
            import grpc

            grpc.channel_ready_future(grpc.insecure_channel(f"127.0.0.1:{port}")).result(timeout=10)
        yield process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)


def mock_upstream(port: int, cpu: int | None = 1) -> AbstractContextManager[int]:
    """benches/mockupstream answering on `port` until the block ends, on `cpu` (by default the
    load generator's, away from the server under test); yields its pid."""
    return running(pinned([str(BIN / "mockupstream"), str(port)], cpu), "mock listening", port, grpc_ready=False)


@contextmanager
def gateway(config_yaml: str, port: int) -> Iterator[int]:
    """One gateway process on CPU 0, serving `config_yaml` on `port` until the block ends;
    yields the pid of its worker (whose memory is the gateway's)."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as config:
        config.write(config_yaml)
        config.flush()
        serve = [sys.executable, "-m", "service", "serve", "--config", config.name, "--listen", f"127.0.0.1:{port}"]
        with running(pinned(serve, 0), "switchboard listening", port) as pid:
            yield worker_pid(pid)


def worker_pid(parent: int) -> int:
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return int(children[0]) if children else parent


def pinned(command: list[str], cpu: int | None) -> list[str]:
    """`command` restricted to one CPU (none: any), when the machine has more than one.

    The benchmarks give the server under test CPU 0 and its load generator CPU 1, so
    that the two do not take turns on the same core."""
    if cpu is None or (os.cpu_count() or 1) < 2:
        return command
    return ["taskset", "-c", str(cpu), *command]


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    return {"cpus": os.cpu_count(), "cpu": cpu, "kernel": platform.release(), "python": platform.python_version()}


def timestamp() -> str:
    """Now, in UTC, as each result file records when it was measured."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def admit(router: router_core.Router, deployment: str) -> bool:
    """One attempt's lease on `deployment`, recorded at once as a success; False when refused."""
    try:
        lease = router.reserve(deployment)
    except router_core.DeploymentUnavailableError:
        return False
    router.record(lease, outcome="ok", latency_ms=1.0)
    return True


def per_round_ratio(values: Sequence[float], baseline: Sequence[float]) -> float:
    """The median of each round's value over the same round's baseline. Each round runs every
    mode once, in turns: a ratio within a round is spared the machine's drift between rounds."""
    return statistics.median(value / base for value, base in zip(values, baseline, strict=True))


def report_cpu_per_chat(costs: dict[str, list[float]], chats: int, name: str) -> None:
    """Prints each mode's median CPU per chat against "off" and writes the runs and medians to
    benches/results/`name`."""
    medians = {mode: statistics.median(values) for mode, values in costs.items()}
    paired = {mode: per_round_ratio(values, costs["off"]) for mode, values in costs.items()}
    for mode, median in medians.items():
        print(
            f"worker CPU per chat, {mode}: {median:.3f} ms ({median / medians['off'] - 1:+.1%};"
            f" per round {paired[mode] - 1:+.1%})"
        )
    report: dict[str, Any] = {
        "date": timestamp(),
        "machine": machine(),
        "chats_per_run": chats,
        "cpu_per_chat_ms": costs,
        "median_ms": medians,
        "over_off": {mode: round(median / medians["off"], 4) for mode, median in medians.items()},
        "over_off_per_round": {mode: round(ratio, 4) for mode, ratio in paired.items()},
    }
    (RESULTS / name).write_text(json.dumps(report, indent=2) + "\n")
