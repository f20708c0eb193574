"""Capacity planning from the measured figures: what one core does, and what a given traffic
needs, with the inputs and the arithmetic shown.

    .venv/bin/python -m benches.capacity            # rewrites README.md's capacity section
    .venv/bin/python -m benches.capacity --quick    # prints it from the quick runs' results (CI)

Inputs, each from its benchmark's results file (benches/results/): decisions per second from
route_boundary.json (route + release from Python, weighted); a worker's CPU per unary chat and
per 50-chunk stream from floor.json (concurrency 16); memory per held-open stream from
held_streams.json; a worker's RSS from chat.json. `make bench` runs them all, then this.
"""

from __future__ import annotations

import argparse
import json
import statistics
from typing import Any

from benches.harness import RESULTS, ROOT

README = ROOT / "README.md"
START, END = "<!-- capacity:start -->", "<!-- capacity:end -->"

# The sizing's assumptions, stated in the table they shape.
PEAK_TO_AVERAGE = 3.0
# The share of a core a worker is planned to use at the peak: the rest absorbs bursts and GC.
UTILISATION = 0.7
# How long a streamed answer stays open, on average (an LLM writing a few hundred tokens).
STREAM_SECONDS = 10.0
DAILY_MILLIONS = (1, 10, 100)


def inputs(quick: bool) -> dict[str, Any]:
    def load(name: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((RESULTS / f"{name}{'-quick' if quick else ''}.json").read_text())
        return data

    boundary, floor, held = load("route_boundary"), load("floor"), load("held_streams")
    rows = {(row["mode"], row["concurrency"]): row for row in floor["rows"]}
    chat = json.loads((RESULTS / "chat.json").read_text())  # its memory figure needs the full run's 100 000 calls
    return {
        "decision_us": statistics.median(boundary["us_per_decision"]["weighted/256"]),
        "unary_ms": rows[("unary", 16)]["gateway_ms"],
        "stream_ms": rows[("stream", 16)]["gateway_ms"],
        "stream_kib": max(held["runs"], key=lambda run: run["streams"])["per_stream_kib"],
        "worker_mib": chat["gateway_rss_mib"]["after_100000_more"],
        "dates": {
            name: data.get("date", "?")
            for name, data in (("route_boundary", boundary), ("floor", floor), ("held_streams", held))
        },
    }


def section(measured: dict[str, Any]) -> str:
    decisions = 1e6 / measured["decision_us"]
    unary = 1000 / measured["unary_ms"]
    streams = 1000 / measured["stream_ms"]
    lines = [
        START,
        "| per core (one worker) | measured | so one core serves |",
        "| --- | ---: | ---: |",
        f"| routing decision, 256 deployments (`benches.route_boundary`) | {measured['decision_us']:.2f} µs"
        f" | {decisions:,.0f} decisions/s |",
        f"| unary chat, worker CPU (`benches.floor`, concurrency 16) | {measured['unary_ms']:.3f} ms"
        f" | {unary:,.0f} chats/s |",
        f"| 50-chunk stream, worker CPU (`benches.floor`, concurrency 16) | {measured['stream_ms']:.3f} ms"
        f" | {streams:,.0f} streams/s |",
        f"| a held-open stream's memory (`benches.held_streams`) | {measured['stream_kib']:.0f} KiB | — |",
        f"| a worker's RSS after 100 000 calls (`benches.chat`) | {measured['worker_mib']:.1f} MiB | — |",
        "",
        f"Sizing for N million requests a day, all of them streamed (the costlier kind), at a peak "
        f"{PEAK_TO_AVERAGE:g}x the day's average, each worker planned at {UTILISATION:.0%} of its core, "
        f"streams open {STREAM_SECONDS:g} s on average: peak/s = N x 1e6 / 86 400 x {PEAK_TO_AVERAGE:g}; "
        f"cores = peak/s / ({streams:,.0f} x {UTILISATION:g}); streams open = peak/s x {STREAM_SECONDS:g}; "
        f"memory = cores x {measured['worker_mib']:.0f} MiB + streams open x {measured['stream_kib']:.0f} KiB.",
        "",
        "| requests/day | average/s | peak/s | cores (workers) | streams open at the peak | memory |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for millions in DAILY_MILLIONS:
        average = millions * 1e6 / 86_400
        peak = average * PEAK_TO_AVERAGE
        cores = peak / (streams * UTILISATION)
        open_streams = peak * STREAM_SECONDS
        memory_gib = (
            max(1, round(cores + 0.5)) * measured["worker_mib"] + open_streams * measured["stream_kib"] / 1024
        ) / 1024
        lines.append(
            f"| {millions} million | {average:,.0f} | {peak:,.0f} | {cores:.1f} ({max(1, round(cores + 0.5))}) "
            f"| {open_streams:,.0f} | {memory_gib:.1f} GiB |"
        )
    dates = measured["dates"]
    lines += [
        "",
        f"Measured on this project's 2-core machine (figures: route_boundary {dates['route_boundary']}, "
        f"floor {dates['floor']}, held_streams {dates['held_streams']}). Unary calls cost about half a stream's "
        "CPU, so an all-unary load needs about half the cores; the provider's own time (the stream staying "
        "open) costs the gateway memory, not CPU. Regenerated by `python -m benches.capacity` after `make bench`.",
        END,
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="print the section from the quick runs' results")
    options = parser.parse_args()
    text = section(inputs(options.quick))
    if options.quick:
        print(text)
        return
    readme = README.read_text()
    before, rest = readme.split(START, 1)
    _, after = rest.split(END, 1)
    README.write_text(before + text + after)
    print("README.md: capacity section rewritten")


if __name__ == "__main__":
    main()
