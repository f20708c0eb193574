"""The cluster's shared state through a real Redis (started here on a free loopback port):
over-admission of one rpm limit by 1, 2 and 3 host processes, each a router of its own joined
to Redis by a `ClusterLink`, reserving as fast as it can; and how long an opened circuit takes
to reach the other host.

    .venv/bin/python -m benches.cluster            # 1, 2, 3 hosts for 3 s; 200 circuits
    .venv/bin/python -m benches.cluster --quick    # 1 and 2 hosts for 0.5 s; 20 circuits (CI)

Over-admission is reported as for benches/shared_budgets.py: admitted against the most the
limit allows, rpm * (1 + seconds / 60). Propagation is the time from the failure that opens a
circuit on one host to the first refusal of that deployment on the other, polled every 0.5 ms.
Results: benches/results/cluster.json (cluster-quick.json with --quick).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import router_core
from benches.harness import RESULTS, admit, machine, timestamp
from service.cluster import ClusterLink
from service.config import StateSettings
from tests.redis_server import RedisServer

RPM = 60_000
CONFIG = json.dumps(
    {
        "deployments": [{"id": "d", "region": "local", "context_window": 100_000, "rpm": RPM}],
        "model_groups": [{"name": "g", "deployments": ["d"]}],
    }
)


def reserve_until(url: str, namespace: str, start_at: float, stop_at: float) -> int:
    async def host() -> int:
        router = router_core.Router(CONFIG)
        link = ClusterLink(router, StateSettings(backend="redis", url=url, namespace=namespace))
        await link.start()
        admitted = 0
        await asyncio.sleep(max(0.0, start_at - time.time()))
        while time.time() < stop_at:
            # As a gateway would: decisions between turns of the loop, where the link runs.
            admitted += sum(admit(router, "d") for _ in range(100))
            await asyncio.sleep(0)
        await link.aclose()
        return admitted

    return asyncio.run(host())


def over_admission(url: str, processes: int, seconds: float) -> dict[str, Any]:
    start_at = time.time() + 2.0  # every process built, linked and waiting
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        # A namespace per run: each starts on a full bucket of its own.
        arguments = (url, f"bench-{processes}", start_at, start_at + seconds)
        counts = pool.starmap(reserve_until, [arguments] * processes)
    allowed = RPM * (1 + seconds / 60)
    return {
        "hosts": processes,
        "seconds": seconds,
        "admitted": sum(counts),
        "by_host": counts,
        "allowed": round(allowed),
        "admitted_per_allowed": round(sum(counts) / allowed, 4),
    }


async def propagation(url: str, circuits: int) -> list[float]:
    config = json.dumps(
        {
            "deployments": [{"id": "d", "context_window": 1000}, {"id": "e", "context_window": 1000}],
            "model_groups": [{"name": "g", "deployments": ["d", "e"]}],
            "health": {"consecutive_failures": 1, "open_secs": 0.05, "probe_timeout_secs": 0.05},
        }
    )
    routers = [router_core.Router(config) for _ in range(2)]
    links = [ClusterLink(router, StateSettings(backend="redis", url=url)) for router in routers]
    for link in links:
        await link.start()
    await asyncio.sleep(0.1)  # subscribed
    here, there = routers
    took = []
    for _ in range(circuits):
        here.record(here.reserve("d"), outcome="server_error", latency_ms=1.0)
        opened = time.perf_counter()
        while True:
            try:
                there.release(there.reserve("d"))
            except router_core.DeploymentUnavailableError:
                break
            await asyncio.sleep(0.0005)
        took.append((time.perf_counter() - opened) * 1000)
        # Close it again (a successful probe), and wait until `there` heard that too.
        probe = await _lease_when_available(here)
        here.record(probe, outcome="ok", latency_ms=1.0)
        there.release(await _lease_when_available(there))
    for link in links:
        await link.aclose()
    return took


async def _lease_when_available(router: router_core.Router) -> router_core.Lease:
    while True:
        try:
            return router.reserve("d")
        except router_core.DeploymentUnavailableError:
            await asyncio.sleep(0.002)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 and 2 hosts for 0.5 s, 20 circuits")
    args = parser.parse_args()
    counts, seconds, circuits = ([1, 2], 0.5, 20) if args.quick else ([1, 2, 3], 3.0, 200)
    with tempfile.TemporaryDirectory() as directory:
        server = RedisServer(Path(directory))
        server.start()
        try:
            runs = []
            for processes in counts:
                result = over_admission(server.url, processes, seconds)
                print(json.dumps(result))
                runs.append(result)
            took = sorted(asyncio.run(propagation(server.url, circuits)))
        finally:
            server.stop()
    spread = {
        "circuits": circuits,
        "p50_ms": round(statistics.median(took), 2),
        "p99_ms": round(took[min(len(took) - 1, int(len(took) * 0.99))], 2),
        "max_ms": round(took[-1], 2),
    }
    print(json.dumps({"propagation": spread}))
    name = "cluster-quick.json" if args.quick else "cluster.json"
    report = {"date": timestamp(), "machine": machine(), "rpm": RPM, "runs": runs, "propagation": spread}
    (RESULTS / name).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
