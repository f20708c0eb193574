"""Over-admission of a shared rate limit: N processes, each with its own router on one shared
region (`Router(shared_state=…)`, as the workers of `serve --workers N` are), reserve as fast as
they can from one deployment with an rpm budget, for a few seconds.

    .venv/bin/python -m benches.shared_budgets            # 1, 2 and 3 processes, 3 s each
    .venv/bin/python -m benches.shared_budgets --quick    # 1 and 2 processes, 0.5 s (CI)

The most the limit allows in `seconds` is the full bucket plus its refill meanwhile:
rpm * (1 + seconds / 60). Each process records every lease it gets (the request stays taken),
and the admitted total is reported against that most, with the same run for routers each on a
budget of their own (no shared_state) beside it. Results: benches/results/shared_budgets.json
(shared_budgets-quick.json with --quick).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import tempfile
import time
from pathlib import Path
from typing import Any

import router_core
from benches.harness import RESULTS, admit, machine, timestamp

RPM = 60_000
CONFIG = json.dumps(
    {
        "deployments": [{"id": "d", "region": "local", "context_window": 100_000, "rpm": RPM}],
        "model_groups": [{"name": "g", "deployments": ["d"]}],
    }
)


def reserve_until(shared_state: str | None, start_at: float, stop_at: float) -> int:
    router = router_core.Router(CONFIG, shared_state=shared_state)
    admitted = 0
    while time.time() < start_at:
        time.sleep(0.001)
    while time.time() < stop_at:
        admitted += admit(router, "d")
    return admitted


def run(processes: int, seconds: float, shared: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as directory:
        state = str(Path(directory) / "state") if shared else None
        start_at = time.time() + 1.0  # every process built and waiting
        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            counts = pool.starmap(reserve_until, [(state, start_at, start_at + seconds)] * processes)
    allowed = RPM * (1 + seconds / 60)
    return {
        "processes": processes,
        "shared": shared,
        "seconds": seconds,
        "admitted": sum(counts),
        "allowed": round(allowed),
        "admitted_per_allowed": round(sum(counts) / allowed, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 and 2 processes for 0.5 s, as a smoke run")
    args = parser.parse_args()
    counts, seconds = ([1, 2], 0.5) if args.quick else ([1, 2, 3], 3.0)
    runs = []
    for processes in counts:
        for shared in (True, False):
            result = run(processes, seconds, shared)
            print(json.dumps(result))
            runs.append(result)
    name = "shared_budgets-quick.json" if args.quick else "shared_budgets.json"
    report = {"date": timestamp(), "machine": machine(), "rpm": RPM, "runs": runs}
    (RESULTS / name).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
