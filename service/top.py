"""`switchboard top --admin HOST:PORT`: every deployment's live figures (the Admin API's
GetStats) as a table that refreshes in place. `s` sorts by the next column, `r` reverses the
order, `q` quits (Ctrl-C too)."""

from __future__ import annotations

import contextlib
import os
import select
import sys
import termios
import time
import tty
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from service.api.switchboard.admin.v1 import admin_pb2, admin_pb2_grpc

Stats = admin_pb2.DeploymentStats


@dataclass(frozen=True)
class Column:
    title: str
    value: Callable[[Stats], float | str]
    shown: Callable[[Stats], str]


def _ms(value: float | None) -> str:
    """Whole milliseconds, with a tenth below 10 (a local deployment answers in under one)."""
    if value is None:
        return "-"
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"


def _state(stats: Stats) -> str:
    """Why it is out of rotation, if it is, else its circuit's state."""
    return stats.unavailable_reason or stats.circuit_state


def _optional(stats: Stats, name: str) -> float | None:
    return getattr(stats, name) if stats.HasField(name) else None


def _percentile(stats: Stats, name: str, which: str) -> float | None:
    """A percentile of the `latency_ms` or `ttft_ms` histograms; None before any."""
    return getattr(getattr(stats, name), which) if stats.HasField(name) else None


COLUMNS = [
    Column("deployment", lambda s: s.deployment, lambda s: s.deployment),
    Column("state", _state, _state),
    Column("in flight", lambda s: s.in_flight, lambda s: str(s.in_flight)),
    Column("requests", lambda s: s.requests, lambda s: str(s.requests)),
    Column("failures", lambda s: s.failures, lambda s: str(s.failures)),
    Column(
        "error %",
        lambda s: _optional(s, "error_rate") or 0.0,
        lambda s: "-" if (rate := _optional(s, "error_rate")) is None else f"{rate * 100:.1f}",
    ),
    Column("p50 ms", lambda s: s.latency_ms.p50, lambda s: _ms(_percentile(s, "latency_ms", "p50"))),
    Column("p99 ms", lambda s: s.latency_ms.p99, lambda s: _ms(_percentile(s, "latency_ms", "p99"))),
    Column("ttft p50 ms", lambda s: s.ttft_ms.p50, lambda s: _ms(_percentile(s, "ttft_ms", "p50"))),
    Column("tokens in", lambda s: s.input_tokens, lambda s: str(s.input_tokens)),
    Column("tokens out", lambda s: s.output_tokens, lambda s: str(s.output_tokens)),
    Column("cost $", lambda s: s.cost_usd, lambda s: f"{s.cost_usd:.4f}"),
    Column("headroom %", lambda s: s.headroom, lambda s: f"{s.headroom * 100:.0f}"),
]


def table(stats: list[Stats], sort: int, descending: bool, where: str) -> Table:
    ordered = sorted(stats, key=COLUMNS[sort].value, reverse=descending)
    arrow = "v" if descending else "^"
    view = Table(title=f"switchboard top: {where}", caption="s: sort by the next column  r: reverse  q: quit")
    for index, column in enumerate(COLUMNS):
        title = f"{column.title} {arrow}" if index == sort else column.title
        view.add_column(title, justify="left" if index < 2 else "right", no_wrap=True)
    for row in ordered:
        view.add_row(*(Text(column.shown(row)) for column in COLUMNS))
    return view


@contextlib.contextmanager
def _keys() -> Iterator[Callable[[float], str]]:
    """A reader of single key presses (none: "") within a timeout, the terminal in cbreak mode
    meanwhile; without a terminal, it only waits."""
    if not sys.stdin.isatty():

        def wait(timeout: float) -> str:
            time.sleep(timeout)
            return ""

        yield wait
        return
    descriptor = sys.stdin.fileno()
    saved = termios.tcgetattr(descriptor)
    tty.setcbreak(descriptor)
    try:

        def read(timeout: float) -> str:
            ready, _, _ = select.select([descriptor], [], [], timeout)
            return os.read(descriptor, 1).decode(errors="replace") if ready else ""

        yield read
    finally:
        termios.tcsetattr(descriptor, termios.TCSADRAIN, saved)


def run_top(admin: str, interval_s: float, sort: str, metadata: tuple[tuple[str, str], ...] = ()) -> int:
    names = [column.title for column in COLUMNS]
    if sort not in names:
        print(f"switchboard: --sort must be one of {', '.join(names)}", file=sys.stderr)
        return 2
    index, descending = names.index(sort), sort != "deployment"
    console = Console()
    with grpc.insecure_channel(admin) as channel, _keys() as key:
        stub = admin_pb2_grpc.AdminStub(channel)
        with Live(console=console, auto_refresh=False, screen=False) as live:
            while True:
                try:
                    stats = list(
                        stub.GetStats(
                            admin_pb2.GetStatsRequest(), timeout=max(1.0, interval_s), metadata=metadata
                        ).deployments
                    )
                except grpc.RpcError as error:
                    live.stop()
                    print(f"switchboard: {admin}: {error.code().name}: {error.details()}", file=sys.stderr)
                    return 1
                live.update(table(stats, index, descending, admin), refresh=True)
                pressed = key(interval_s)
                if pressed in ("q", "Q"):
                    return 0
                if pressed == "s":
                    index = (index + 1) % len(COLUMNS)
                elif pressed == "r":
                    descending = not descending
