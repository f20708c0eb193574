"""The README's benchmark tables, written from the results files (benches/results/) so that the
figures it quotes are the last full run's, and capacity planning from them: what one core does,
and what a given traffic needs, with the inputs and the arithmetic shown.

    .venv/bin/python -m benches.readme_tables            # rewrites README.md's marked sections
    .venv/bin/python -m benches.readme_tables --quick    # prints them from the quick runs' results (CI)

Each section sits between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->` in README.md. Inputs:
route_boundary.json (decisions from Python per strategy and size), rpc.json (Route against the
floor), chat.json (overhead against a direct call, and a worker's RSS), floor.json (a worker's
CPU per call against grpc.aio's and aiohttp's), servicer.json (the service's Python alone),
held_streams.json (memory per held-open stream).
`make bench` runs them all, then this.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from typing import Any

from benches.harness import RESULTS, ROOT

README = ROOT / "README.md"

# The sizing's assumptions, stated in the table they shape.
PEAK_TO_AVERAGE = 3.0
# The share of a core a worker is planned to use at the peak: the rest absorbs bursts and GC.
UTILISATION = 0.7
# How long a streamed answer stays open, on average (an LLM writing a few hundred tokens).
STREAM_SECONDS = 10.0
DAILY_MILLIONS = (1, 10, 100)


class Results:
    """The results files of the full run, or of the quick one."""

    def __init__(self, quick: bool) -> None:
        self.quick = quick

    def __call__(self, name: str, *, full_only: bool = False) -> dict[str, Any]:
        suffix = "-quick" if self.quick and not full_only else ""
        data: dict[str, Any] = json.loads((RESULTS / f"{name}{suffix}.json").read_text())
        return data


def inputs(load: Results) -> dict[str, Any]:
    boundary, floor, held = load("route_boundary"), load("floor"), load("held_streams")
    rows = {(row["mode"], row["concurrency"]): row for row in floor["rows"]}
    chat = load("chat", full_only=True)  # its memory figure needs the full run's 100 000 calls
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


def capacity(load: Results) -> str:
    measured = inputs(load)
    decisions = 1e6 / measured["decision_us"]
    unary = 1000 / measured["unary_ms"]
    streams = 1000 / measured["stream_ms"]
    lines = [
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
        workers = max(1, math.ceil(cores))
        open_streams = peak * STREAM_SECONDS
        memory_gib = (workers * measured["worker_mib"] + open_streams * measured["stream_kib"] / 1024) / 1024
        lines.append(
            f"| {millions} million | {average:,.0f} | {peak:,.0f} | {cores:.2g} ({workers}) "
            f"| {open_streams:,.0f} | {memory_gib:.1f} GiB |"
        )
    dates = measured["dates"]
    lines += [
        "",
        f"Measured on this project's 2-core machine (figures: route_boundary {dates['route_boundary']}, "
        f"floor {dates['floor']}, held_streams {dates['held_streams']}). Unary calls cost about half a stream's "
        "CPU, so an all-unary load needs about half the cores; the provider's own time (the stream staying "
        "open) costs the gateway memory, not CPU.",
    ]
    return "\n".join(lines)


def routing(load: Results) -> str:
    """route + release from Python, per strategy and fleet size (medians over rounds)."""
    data = load("route_boundary")
    figures = data["us_per_decision"]
    lines = ["| strategy | 4 deployments | 64 | 256 |", "| --- | ---: | ---: | ---: |"]
    for strategy in ("weighted", "priority", "round_robin", "balanced"):
        cells = [f"{statistics.median(figures[f'{strategy}/{n}']):.2f} µs" for n in (4, 64, 256)]
        lines.append(f"| {strategy} | {' | '.join(cells)} |")
    return "\n".join(lines) + f"\n\n(`benches.route_boundary`, {data['date']}.)"


def rpc(load: Results) -> str:
    data = load("rpc")
    lines = [
        "| target | concurrency | calls/s | p50 ms | p99 ms | vs floor |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in data["results"]:
        target = row["target"].replace("worker(s)", "worker" if "1 worker" in row["target"] else "workers")
        lines.append(
            f"| {target} | {row['concurrency']} | {row['rps']:.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} "
            f"| {row['rps_vs_floor']:.0%} |"
        )
    return "\n".join(lines) + f"\n\n(`benches.rpc`, {data['date']}, {data['calls_per_point']} calls per point.)"


def floor(load: Results) -> str:
    data = load("floor")
    lines = [
        "| call | concurrency | grpc.aio floor | aiohttp | floor total | gateway | ours | target (floor + 0.15 ms) "
        "| both floors in one process | ours above it |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for row in data["rows"]:
        total = row["grpc_floor_ms"] + row["aiohttp_ms"]
        verdict = "met" if row["met"] else "not met"
        lines.append(
            f"| {row['mode']} | {row['concurrency']} | {row['grpc_floor_ms']:.3f} ms | {row['aiohttp_ms']:.3f} ms "
            f"| {total:.3f} ms | {row['gateway_ms']:.3f} ms ({row['gateway_over_floor']:.2f}x) "
            f"| {row['ours_ms']:+.3f} ms | {row['target_ms']:.3f} ms: {verdict} "
            f"| {row['both_in_one_ms']:.3f} ms | {row['ours_over_both_ms']:+.3f} ms |"
        )
    alone = load("servicer")
    worker = {row["mode"]: row["ours_over_both_ms"] * 1000 for row in data["rows"] if row["concurrency"] == 16}
    return "\n".join(lines) + (
        f"\n\n(`benches.floor`, {data['date']}, {data['calls_per_round']} calls per point, "
        f"median of {data['rounds']} rounds.)\n\n"
        f"The gateway's own Python alone, in one process without gRPC or HTTP (`benches.servicer`, "
        f"{alone['date']}): {alone['chat_us']:.0f} µs per unary call and {alone['stream_us']:.0f} µs per "
        f"stream, against {worker['unary']:.0f} µs and {worker['stream']:.0f} µs in the worker above both "
        f"floors in one process at concurrency 16 ({worker['unary'] / alone['chat_us']:.1f}x and "
        f"{worker['stream'] / alone['stream_us']:.1f}x): between grpc's and aiohttp's work, the same code "
        f"costs more."
    )


def chat(load: Results) -> str:
    data = load("chat")
    index = {(r["mode"], r["path"], r["concurrency"]): r for r in data["results"]}
    lines = [
        "| mode | concurrency | direct p50 / p99 ms | gateway p50 / p99 ms | added p50 / p99 ms "
        "| direct / gateway TTFT p50 ms | calls/s direct / gateway |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in data["overhead"]:
        direct, gateway = (index[(row["mode"], path, row["concurrency"])] for path in ("direct", "gateway"))
        ttft = f"{direct['ttft_p50_ms']:.2f} / {gateway['ttft_p50_ms']:.2f}" if row["mode"] == "stream" else ""
        lines.append(
            f"| {row['mode']} | {row['concurrency']} | {direct['p50_ms']:.2f} / {direct['p99_ms']:.2f} "
            f"| {gateway['p50_ms']:.2f} / {gateway['p99_ms']:.2f} "
            f"| {row['added_p50_ms']:.2f} / {row['added_p99_ms']:.2f} | {ttft} "
            f"| {direct['rps']:.0f} / {gateway['rps']:.0f} |"
        )
    rss = data["gateway_rss_mib"]
    more = next(key for key in rss if key.startswith("after_") and key != "after_runs")  # after_<N>_more
    return "\n".join(lines) + (
        f"\n\n(`benches.chat`, {data['date']}, {data['requests_per_point']} requests per point. The worker's "
        f"RSS: {rss['idle']:.1f} MiB idle, {rss['after_runs']:.1f} MiB after these runs, "
        f"{rss[more]:.1f} MiB after {int(more.split('_')[1]):,} more requests.)"
    )


SECTIONS = {"routing": routing, "rpc": rpc, "floor": floor, "chat": chat, "capacity": capacity}


def rewrite(readme: str, name: str, text: str) -> str:
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    before, rest = readme.split(start, 1)
    _, after = rest.split(end, 1)
    return f"{before}{start}\n{text}\n{end}{after}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="print the sections from the quick runs' results")
    options = parser.parse_args()
    load = Results(options.quick)
    texts = {name: render(load) for name, render in SECTIONS.items()}
    if options.quick:
        for name, text in texts.items():
            print(f"--- {name}\n{text}")
        return
    readme = README.read_text()
    for name, text in texts.items():
        readme = rewrite(readme, name, text)
    README.write_text(readme)
    print(f"README.md: {', '.join(texts)} rewritten")


if __name__ == "__main__":
    main()
