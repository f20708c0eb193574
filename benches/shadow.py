"""What shadow traffic costs the caller: its latency with a policy copying none, 5% or all of its
requests to a second deployment, in turns.

    .venv/bin/python -m benches.shadow            # 5 000 chats per run, 5 runs each
    .venv/bin/python -m benches.shadow --quick    # 300 chats, 1 run each (CI)

One worker pinned to CPU 0 serves benches/loadgen's unary Chats (concurrency 4: a gateway with
room to spare, as one would shadow on) to benches/mockupstream on CPU 1; the shadow deployment
is a second deployment on the same upstream. A copy starts once its call has answered, on the
same worker: what it can cost the caller is the worker's time, which the latency percentiles
and the CPU per chat show. The ledger is on in every mode (shadow calls are recorded there).
Results: benches/results/shadow.json (shadow-quick.json with --quick).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from benches.chat import gateway_config, loadgen, request_bodies
from benches.harness import (
    RESULTS,
    cpu_seconds,
    free_port,
    gateway,
    machine,
    mock_upstream,
    per_round_ratio,
    timestamp,
)

CONCURRENCY = 4


def modes(folder: Path, upstream_port: int) -> dict[str, str]:
    base = (
        gateway_config(upstream_port)
        + f"""
      - id: candidate
        type: openai_compatible
        model: bench-model
        base_url: http://127.0.0.1:{upstream_port}/v1
        context_window: 100000
        max_connections: 200
store: {{path: '{folder / "store.db"}'}}
ledger: {{enabled: true}}
"""
    )
    policy = """
policies:
  - id: evaluate
    route_to: {deployments: [mock]}
"""
    shadow = "    shadow: {deployments: [candidate], sample: %s, max_in_flight: 64}\n"
    return {"off": base + policy, "5%": base + policy + shadow % 0.05, "100%": base + policy + shadow % 1.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="300 chats, one run each (smoke test)")
    options = parser.parse_args()
    total, runs = (300, 1) if options.quick else (5_000, 5)
    upstream_port = free_port()
    results: dict[str, list[dict[str, float]]] = {}
    with (
        tempfile.TemporaryDirectory() as folder,
        request_bodies() as bodies,
        mock_upstream(upstream_port),
    ):
        configs = modes(Path(folder), upstream_port)
        results = {mode: [] for mode in configs}
        for _ in range(runs):
            for mode, config in configs.items():
                port = free_port()
                with gateway(config, port) as worker:
                    loadgen("grpc-unary", port, bodies["grpc"], CONCURRENCY, min(total, 500))  # warm up
                    before = cpu_seconds(worker)
                    run = loadgen("grpc-unary", port, bodies["grpc"], CONCURRENCY, total)
                    run["cpu_per_chat_ms"] = (cpu_seconds(worker) - before) / total * 1000
                    results[mode].append(run)
            latest = {mode: {k: round(v[-1][k], 3) for k in ("p50_ms", "p99_ms")} for mode, v in results.items()}
            print(json.dumps(latest), flush=True)
    report(results, total, "shadow-quick.json" if options.quick else "shadow.json")


def report(results: dict[str, list[dict[str, float]]], total: int, name: str) -> None:
    """Each mode's median p50, p99 and CPU per chat, and their per-round ratios to "off"."""
    summary: dict[str, Any] = {}
    for mode, runs in results.items():
        row: dict[str, float] = {}
        for measure in ("p50_ms", "p99_ms", "cpu_per_chat_ms", "errors"):
            row[measure] = statistics.median(run[measure] for run in runs)
            if measure != "errors":
                ratio = per_round_ratio([run[measure] for run in runs], [off[measure] for off in results["off"]])
                row[f"{measure}_over_off_per_round"] = round(ratio, 4)
        summary[mode] = row
        print(
            f"shadow {mode}: p50 {row['p50_ms']:.3f} ms ({row['p50_ms_over_off_per_round'] - 1:+.1%}),"
            f" p99 {row['p99_ms']:.3f} ms ({row['p99_ms_over_off_per_round'] - 1:+.1%}),"
            f" CPU per chat {row['cpu_per_chat_ms']:.3f} ms ({row['cpu_per_chat_ms_over_off_per_round'] - 1:+.1%}),"
            f" errors {row['errors']:.0f}"
        )
    document = {
        "date": timestamp(),
        "machine": machine(),
        "chats_per_run": total,
        "concurrency": CONCURRENCY,
        "runs": results,
        "median": summary,
    }
    (RESULTS / name).write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
