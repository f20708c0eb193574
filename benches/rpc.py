"""Route RPC over loopback: the gateway against the floor of its stack, with ghz.

    .venv/bin/python -m benches.rpc            # 20 000 calls per point
    .venv/bin/python -m benches.rpc --quick    # a smoke run (CI): a few hundred calls

The floor (benches/floor_server.py) is a grpc.aio server on uvloop, like the gateway,
answering the same Route call with a prebuilt answer of the same size. Both run as
separate processes on 127.0.0.1, loaded by ghz at concurrency 1, 16 and 64, on the same
machine: a one-process server pinned to CPU 0 and ghz to CPU 1. The gateway runs with 1
and with 2 worker processes; two workers need both cores, so they share them with ghz. Results go to
benches/results/rpc.json (with machine, versions and date) and print as a table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any

from benches.harness import BIN, RESULTS, ROOT, free_port, machine, pinned, running, timestamp

CONCURRENCY = (1, 16, 64)

CONFIG = """
default_group: bench
model_groups:
  - name: bench
    deployments:
""" + "".join(
    f"""      - id: echo-{i}
        type: echo
        model: echo
        region: local
        context_window: 100000
"""
    for i in range(4)
)

REQUEST = {
    "model": "bench",
    "messages": [{"role": "ROLE_USER", "content": [{"text": "How long is this prompt, in tokens? About a dozen."}]}],
}


def ghz(ghz_path: str, port: int, concurrency: int, total: int, cpu: int | None) -> dict[str, float]:
    command = [
        ghz_path,
        "--insecure",
        "--proto",
        "protos/switchboard/v1/gateway.proto",
        "--import-paths",
        "protos",
        "--call",
        "switchboard.v1.Gateway.Route",
        "--data",
        json.dumps(REQUEST),
        "--concurrency",
        str(concurrency),
        "--total",
        str(total),
        "--format",
        "json",
        f"127.0.0.1:{port}",
    ]
    command = pinned(command, cpu)
    report = json.loads(subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT).stdout)
    errors = sum(count for code, count in report.get("statusCodeDistribution", {}).items() if code != "OK")
    if errors:
        raise RuntimeError(f"{errors} calls failed: {report.get('errorDistribution')}")
    percentiles = {row["percentage"]: row["latency"] / 1e6 for row in report["latencyDistribution"]}
    return {"rps": report["rps"], "p50_ms": percentiles[50], "p99_ms": percentiles[99]}


def ghz_version(ghz_path: str) -> str:
    """The module version `go install` built (ghz itself prints "dev" then)."""
    built = subprocess.run(["go", "version", "-m", ghz_path], capture_output=True, text=True, check=False).stdout
    for line in built.splitlines():
        fields = line.split()
        if fields[:2] == ["mod", "github.com/bojand/ghz"]:
            return fields[2]
    printed = subprocess.run([ghz_path, "--version"], capture_output=True, text=True, check=True)
    return (printed.stdout or printed.stderr).strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few hundred calls per point (smoke test)")
    options = parser.parse_args()
    total = 300 if options.quick else int(os.environ.get("RPC_CALLS", 20_000))
    ghz_path = shutil.which("ghz") or str(BIN / "ghz")
    version = ghz_version(ghz_path)

    rows: list[dict[str, Any]] = []
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as config:
        config.write(CONFIG)
        config.flush()
        targets = [("floor", [sys.executable, "-m", "benches.floor_server"], "floor listening", 1)]
        for workers in (1, 2):
            serve = [sys.executable, "-m", "service", "serve", "--config", config.name, "--workers", str(workers)]
            targets.append((f"gateway, {workers} worker(s)", serve, "switchboard listening", workers))
        for name, command, ready, processes in targets:
            port = free_port()
            listen = ["--listen", f"127.0.0.1:{port}"] if name != "floor" else [str(port)]
            # One process gets CPU 0 and ghz CPU 1; two workers need both cores, shared with ghz.
            server_cpu, ghz_cpu = (0, 1) if processes == 1 else (None, None)
            with running(pinned(command + listen, server_cpu), ready, port, processes):
                ghz(ghz_path, port, 8, max(100, total // 20), ghz_cpu)  # warm-up
                for concurrency in CONCURRENCY:
                    result = ghz(ghz_path, port, concurrency, total, ghz_cpu)
                    rows.append({"target": name, "concurrency": concurrency, "pinned": processes == 1, **result})

    floor = {row["concurrency"]: row for row in rows if row["target"] == "floor"}
    for row in rows:
        row["rps_vs_floor"] = row["rps"] / floor[row["concurrency"]]["rps"]
    report = {
        "date": timestamp(),
        "machine": machine(),
        "ghz": version,
        "calls_per_point": total,
        "results": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / ("rpc-quick.json" if options.quick else "rpc.json")).write_text(json.dumps(report, indent=2) + "\n")
    print(f"Route over loopback, {total} calls per point; {os.cpu_count()} CPUs; ghz {version}")
    print("| target | concurrency | calls/s | p50 ms | p99 ms | calls/s vs floor |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(
            f"| {row['target']} | {row['concurrency']} | {row['rps']:.0f} | {row['p50_ms']:.2f} | "
            f"{row['p99_ms']:.2f} | {row['rps_vs_floor']:.0%} |"
        )


if __name__ == "__main__":
    main()
