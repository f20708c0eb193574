"""Chat overhead: the same request sent directly to a fast local upstream and through the gateway.

    .venv/bin/python -m benches.chat            # 5 000 requests per point, then 100 000 for memory
    .venv/bin/python -m benches.chat --quick    # a smoke run (CI)

The upstream is benches/mockupstream (Go, answers at once: unary JSON, or a 50-chunk SSE
stream). benches/loadgen (Go) drives both paths at concurrency 1, 16 and 64: HTTP straight
to the upstream, and gRPC through one gateway worker. For unary calls it measures latency;
for streams, time to first token and to last token. On a machine with two or more cores
the gateway is pinned to CPU 0 and the upstream and load generator share CPU 1, for both
paths, so that the gateway's own cost is what differs between them. The gateway's RSS is
read idle and after the runs. Results: benches/results/chat.json and benches/results/chat.png.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benches.harness import (
    BIN,
    RESULTS,
    ROOT,
    free_port,
    gateway,
    machine,
    mock_upstream,
    pinned,
    rss_mib,
    timestamp,
)
from service.api.switchboard.v1 import gateway_pb2 as pb

CONCURRENCY = (1, 16, 64)
PROMPT = "Say fifty tokens, please."


def gateway_config(upstream_port: int) -> str:
    return f"""
default_group: bench
model_groups:
  - name: bench
    deployments:
      - id: mock
        type: openai_compatible
        model: bench-model
        base_url: http://127.0.0.1:{upstream_port}/v1
        context_window: 100000
        max_connections: 200
"""


@contextmanager
def request_bodies() -> Iterator[dict[str, Path]]:
    """The same question as upstream JSON (unary and stream) and as a serialized ChatRequest."""
    messages = [{"role": "user", "content": PROMPT}]
    bodies: dict[str, bytes] = {
        "http-unary": json.dumps({"model": "bench-model", "messages": messages}).encode(),
        "http-stream": json.dumps(
            {"model": "bench-model", "messages": messages, "stream": True, "stream_options": {"include_usage": True}}
        ).encode(),
        "grpc": pb.ChatRequest(
            model="bench", messages=[pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text=PROMPT)])]
        ).SerializeToString(),
    }
    with tempfile.TemporaryDirectory() as folder:
        paths = {name: Path(folder) / name for name in bodies}
        for name, body in bodies.items():
            paths[name].write_bytes(body)
        yield paths


def loadgen(mode: str, port: int, body: Path, concurrency: int, total: int) -> dict[str, float]:
    command = [str(BIN / "loadgen"), "-mode", mode, "-target", f"127.0.0.1:{port}"]
    command += ["-c", str(concurrency), "-n", str(total), "-body", str(body)]
    done = subprocess.run(pinned(command, 1), capture_output=True, text=True, check=False, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip()}")
    result: dict[str, float] = json.loads(done.stdout)
    return result


def measure(upstream_port: int, gateway_port: int, bodies: dict[str, Path], total: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for mode in ("unary", "stream"):
        for concurrency in CONCURRENCY:
            direct = loadgen(f"http-{mode}", upstream_port, bodies[f"http-{mode}"], concurrency, total)
            gateway = loadgen(f"grpc-{mode}", gateway_port, bodies["grpc"], concurrency, total)
            for path, result in (("direct", direct), ("gateway", gateway)):
                rows.append({"mode": mode, "path": path, "concurrency": concurrency, **result})
    return rows


def compare(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Gateway minus direct (added latency) and gateway / direct (throughput), per mode and concurrency."""
    index = {(r["mode"], r["path"], r["concurrency"]): r for r in rows}
    out = []
    for mode in ("unary", "stream"):
        for concurrency in CONCURRENCY:
            direct, gateway = index[(mode, "direct", concurrency)], index[(mode, "gateway", concurrency)]
            out.append(
                {
                    "mode": mode,
                    "concurrency": concurrency,
                    "added_p50_ms": gateway["p50_ms"] - direct["p50_ms"],
                    "added_p99_ms": gateway["p99_ms"] - direct["p99_ms"],
                    "added_ttft_p50_ms": gateway["ttft_p50_ms"] - direct["ttft_p50_ms"],
                    "throughput_vs_direct": gateway["rps"] / direct["rps"],
                }
            )
    return out


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    panels = [("unary", "p50_ms", "unary: p50 latency"), ("stream", "ttft_p50_ms", "stream: p50 time to first token")]
    for axis, (mode, metric, title) in zip(axes, panels, strict=True):
        for path_name, style in (("direct", "o-"), ("gateway", "s-")):
            points = [r for r in rows if r["mode"] == mode and r["path"] == path_name]
            axis.plot([r["concurrency"] for r in points], [r[metric] for r in points], style, label=path_name)
        axis.set(title=title, xlabel="concurrency", ylabel="ms", xscale="log")
        axis.set_xticks(CONCURRENCY, [str(c) for c in CONCURRENCY])
        axis.legend()
    figure.suptitle("Direct to a local upstream vs through the gateway (1 worker on its own core, Go load generator)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few dozen requests per point (smoke test)")
    options = parser.parse_args()
    total, soak_requests = (40, 200) if options.quick else (5_000, 100_000)
    upstream_port, gateway_port = free_port(), free_port()
    with (
        request_bodies() as bodies,
        mock_upstream(upstream_port),
        gateway(gateway_config(upstream_port), gateway_port) as worker,
    ):
        idle = rss_mib(worker)
        rows = measure(upstream_port, gateway_port, bodies, total)
        after_runs = rss_mib(worker)
        loadgen("grpc-unary", gateway_port, bodies["grpc"], 64, soak_requests)
        after_soak = rss_mib(worker)
    overhead = compare(rows)
    rss = {"idle": idle, "after_runs": after_runs, f"after_{soak_requests}_more": after_soak}
    report: dict[str, Any] = {
        "date": timestamp(),
        "machine": machine(),
        "load_generator": "benches/loadgen (Go), pinned with the upstream to CPU 1; gateway on CPU 0",
        "requests_per_point": total,
        "results": rows,
        "overhead": overhead,
        "gateway_rss_mib": rss,
    }
    RESULTS.mkdir(exist_ok=True)
    name = "chat-quick" if options.quick else "chat"
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    if not options.quick:
        plot(rows, RESULTS / "chat.png")
    print(f"Chat through the gateway vs direct, {total} requests per point, {report['machine']['cpus']} CPUs")
    print(
        "| mode | concurrency | direct p50 / p99 ms | gateway p50 / p99 ms | direct / gateway TTFT p50 ms "
        "| calls/s direct / gateway |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    index = {(r["mode"], r["path"], r["concurrency"]): r for r in rows}
    for mode in ("unary", "stream"):
        for c in CONCURRENCY:
            d, g = index[(mode, "direct", c)], index[(mode, "gateway", c)]
            ttft = f"{d['ttft_p50_ms']:.2f} / {g['ttft_p50_ms']:.2f}" if mode == "stream" else ""
            print(
                f"| {mode} | {c} | {d['p50_ms']:.2f} / {d['p99_ms']:.2f} | {g['p50_ms']:.2f} / {g['p99_ms']:.2f} | "
                f"{ttft} | {d['rps']:.0f} / {g['rps']:.0f} |"
            )
    print()
    print("| mode | concurrency | added p50 ms | added p99 ms | added TTFT p50 ms | throughput vs direct |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for row in overhead:
        print(
            f"| {row['mode']} | {row['concurrency']} | {row['added_p50_ms']:.2f} | {row['added_p99_ms']:.2f} | "
            f"{row['added_ttft_p50_ms']:.2f} | {row['throughput_vs_direct']:.0%} |"
        )
    print("gateway RSS (MiB): " + ", ".join(f"{k} {v:.1f}" for k, v in rss.items()))


if __name__ == "__main__":
    main()
