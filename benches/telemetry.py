"""What telemetry costs a gateway worker: CPU per unary Chat with metrics, traces or both on,
against off, in turns.

    .venv/bin/python -m benches.telemetry            # 10 000 chats per run, 3 runs each
    .venv/bin/python -m benches.telemetry --quick    # 300 chats, 1 run each (CI)

One worker pinned to CPU 0 serves benches/loadgen's unary Chats (concurrency 16) to
benches/mockupstream; the load generator, the upstream and an OTLP receiver (tests/otlp_receiver.py,
which takes every span) share CPU 1. The modes:

- off: no telemetry section;
- metrics: /metrics served (scraped once per run);
- traces 1.0: every call's spans exported (trace_sample_ratio 1);
- traces 0.1: one call in ten sampled (the others' trace context still goes upstream);
- both 0.1: metrics and traces at 0.1.

The worker's CPU time (user + system, from /proc) is read around each run.
Results: benches/results/telemetry.json (telemetry-quick.json with --quick).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from benches.chat import gateway_config, request_bodies
from benches.harness import (
    BIN,
    ROOT,
    cpu_seconds,
    free_port,
    gateway,
    mock_upstream,
    pinned,
    report_cpu_per_chat,
)

RECEIVER = """
import asyncio, sys
from tests.otlp_receiver import OtlpReceiver
async def main():
    receiver = await OtlpReceiver().start()
    print("receiver listening", receiver.port, flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def cpu_per_chat_ms(worker: int, port: int, body: Path, total: int, headers: Sequence[str] = ()) -> float:
    """The worker's CPU time per unary chat over `total` of them at concurrency 16, each sent
    with `headers` ("name: value")."""
    command = [str(BIN / "loadgen"), "-mode", "grpc-unary", "-target", f"127.0.0.1:{port}"]
    command += ["-c", "16", "-n", str(total), "-warmup", "0", "-body", str(body)]
    for header in headers:
        command += ["-H", header]
    before = cpu_seconds(worker)
    subprocess.run(pinned(command, 1), capture_output=True, text=True, check=True, cwd=ROOT)
    return (cpu_seconds(worker) - before) / total * 1000


def run(config_yaml: str, body: Path, total: int, metrics_port: int | None) -> float:
    port = free_port()
    with gateway(config_yaml, port) as worker:
        cpu_per_chat_ms(worker, port, body, min(total, 500))  # warm up
        cost = cpu_per_chat_ms(worker, port, body, total)
        if metrics_port is not None:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as scrape:
                assert b"switchboard_calls_total" in scrape.read()
        return cost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="300 chats, one run each (smoke test)")
    options = parser.parse_args()
    total, runs = (300, 1) if options.quick else (10_000, 3)
    upstream_port, metrics_port = free_port(), free_port()
    receiver = subprocess.Popen(
        pinned([sys.executable, "-c", RECEIVER], 1), stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        assert receiver.stdout is not None
        receiver_port = int(receiver.stdout.readline().split()[-1])
        off = gateway_config(upstream_port)
        otlp = f"otlp_endpoint: '127.0.0.1:{receiver_port}'"
        scraped = f"metrics_listen: '127.0.0.1:{metrics_port}'"
        modes = {
            "off": "",
            "metrics": f"telemetry: {{{scraped}}}\n",
            "traces 1.0": f"telemetry: {{{otlp}}}\n",
            "traces 0.1": f"telemetry: {{{otlp}, trace_sample_ratio: 0.1}}\n",
            "both 0.1": f"telemetry: {{{otlp}, {scraped}, trace_sample_ratio: 0.1}}\n",
        }
        costs: dict[str, list[float]] = {mode: [] for mode in modes}
        with (
            request_bodies() as bodies,
            mock_upstream(upstream_port),
        ):
            for _ in range(runs):
                for mode, telemetry in modes.items():
                    scrape = metrics_port if "metrics_listen" in telemetry else None
                    costs[mode].append(run(telemetry + off, bodies["grpc"], total, scrape))
                print(json.dumps({k: round(v[-1], 4) for k, v in costs.items()}))
    finally:
        receiver.terminate()
        receiver.wait(timeout=10)
    report_cpu_per_chat(costs, total, "telemetry-quick.json" if options.quick else "telemetry.json")


if __name__ == "__main__":
    main()
