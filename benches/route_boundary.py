"""Time router_core.Router.route called from a Python loop (the PyO3 boundary included).

    .venv/bin/python benches/route_boundary.py [--quick]

Prints the median time per call over several rounds for groups of 4 and 64 deployments.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import router_core


def routing_config(deployments: int) -> str:
    ids = [f"d{i}" for i in range(deployments)]
    return json.dumps(
        {
            "default_group": "g",
            "deployments": [
                {
                    "id": dep,
                    "region": "eu" if i % 4 else "us",
                    "context_window": 128_000,
                    "capabilities": ["streaming", "tools"],
                    "input_price_per_mtok": 1.0,
                    "output_price_per_mtok": 2.0,
                    "weight": 1.0 + i % 3,
                    "priority": 0,
                }
                for i, dep in enumerate(ids)
            ],
            "model_groups": [{"name": "g", "strategy": "weighted", "deployments": ids}],
        }
    )


def median_call_us(router: router_core.Router, calls: int, rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(calls):
            router.route("g", input_tokens=1000, max_output_tokens=500, capabilities=["streaming"], regions=["eu"])
        samples.append((time.perf_counter() - started) / calls * 1e6)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few calls only (smoke test)")
    options = parser.parse_args()
    calls, rounds = (100, 3) if options.quick else (20_000, 15)
    for deployments in (4, 64):
        router = router_core.Router(routing_config(deployments))
        median = median_call_us(router, calls, rounds)
        print(f"route from Python, {deployments:>2} deployments: {median:6.2f} µs median")


if __name__ == "__main__":
    main()
