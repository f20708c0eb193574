"""Chat throughput of `serve --workers 2` against one worker, on this machine's cores.

    .venv/bin/python -m benches.workers            # 20 000 unary chats per run, 3 runs each
    .venv/bin/python -m benches.workers --quick    # 400 per run, 1 run (CI)

benches/loadgen (Go) sends unary Chats at concurrency 64 over 8 connections (the kernel hands
whole connections to the workers), to a gateway in front of benches/mockupstream (Go, answers
at once). Nothing is pinned: the load generator and the upstream share the machine's cores with
the workers, so on 2 cores the second worker competes with them. Results:
benches/results/workers.json (workers-quick.json with --quick).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benches.chat import gateway_config, request_bodies
from benches.harness import BIN, RESULTS, ROOT, free_port, machine, mock_upstream, running, timestamp

CONCURRENCY = 64
CONNECTIONS = 8


def chats_per_second(port: int, body: Path, total: int) -> float:
    command = [str(BIN / "loadgen"), "-mode", "grpc-unary", "-target", f"127.0.0.1:{port}"]
    command += ["-c", str(CONCURRENCY), "-conns", str(CONNECTIONS), "-n", str(total), "-body", str(body)]
    done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT)
    rate: float = json.loads(done.stdout)["rps"]
    return rate


def measure(workers: int, upstream_port: int, body: Path, total: int, runs: int) -> list[float]:
    port = free_port()
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as config:
        config.write(gateway_config(upstream_port))
        config.flush()
        serve = [sys.executable, "-m", "service", "serve", "--config", config.name, "--listen", f"127.0.0.1:{port}"]
        if workers > 1:
            serve += ["--workers", str(workers)]
        with running(serve, "switchboard listening", port, processes=workers):
            return [chats_per_second(port, body, total) for _ in range(runs)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="400 chats, one run each (smoke test)")
    options = parser.parse_args()
    total, runs = (400, 1) if options.quick else (20_000, 3)
    upstream_port = free_port()
    results: dict[str, Any] = {}
    with (
        request_bodies() as bodies,
        mock_upstream(upstream_port, cpu=None),
    ):
        for workers in (1, 2):
            rates = measure(workers, upstream_port, bodies["grpc"], total, runs)
            results[str(workers)] = {"chats_per_s": rates, "median": statistics.median(rates)}
            print(json.dumps({"workers": workers, "chats_per_s": [round(r) for r in rates]}))
    ratio = results["2"]["median"] / results["1"]["median"]
    print(f"2 workers / 1 worker: {ratio:.2f}x ({results['2']['median']:.0f} / {results['1']['median']:.0f} chats/s)")
    report = {
        "date": timestamp(),
        "machine": machine(),
        "load_generator": "benches/loadgen (Go), unpinned, sharing the cores with the workers and the upstream",
        "concurrency": CONCURRENCY,
        "connections": CONNECTIONS,
        "chats_per_run": total,
        "results": results,
        "ratio_2_to_1": round(ratio, 3),
    }
    name = "workers-quick.json" if options.quick else "workers.json"
    (RESULTS / name).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
