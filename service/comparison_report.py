"""A comparison of deployments (the Admin API's CompareDeployments) as a report to look at: the
sides' latency and time-to-first-token distributions overlaid, their estimates with 95% intervals
side by side, and, in HTML, a table of the figures with the verdicts against the baseline.

`.html` gives one self-contained page (figures as inline SVG, no scripts, nothing fetched);
`.png` and `.svg` give one image with every comparison stacked. Needs matplotlib, the
`switchboard[report]` extra; it is imported only when a report is rendered.

Every name, title and verdict in a response may have been chosen by someone else (a variant name,
a deployment id): each is escaped and bounded before it reaches the page or a plot."""

from __future__ import annotations

import contextlib
import datetime
import html
import io
import math
import pathlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from service.api.switchboard.admin.v1 import admin_pb2

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import FigureBase

Side = admin_pb2.ComparedDeployment
Interval = admin_pb2.Interval

SUFFIXES = (".html", ".png", ".svg")
MAX_TEXT = 200
# The method is our own server's sentence, longer than a name; still bounded, as it comes over the wire.
MAX_METHOD = 1000
MAX_LABEL = 60
# Beyond this ratio of the largest bucket bound to the smallest, a linear axis crushes the fast calls.
LOG_SPAN = 50.0
FIGURE_SIZE = (11.0, 6.5)
# A fixed salt makes matplotlib's SVG ids, and so the file, the same for the same response.
SVG_SALT = "switchboard-report"
DASH = "\u2013"  # en dash, between an interval's ends


@dataclass(frozen=True)
class Measure:
    """One estimate panel: which Interval field of a side it plots."""

    field: str
    title: str
    share: bool  # a rate in [0, 1], shown as a percentage


ESTIMATES = (
    Measure("success_rate", "success rate", True),
    Measure("cost_per_call_usd", "cost per call, USD", False),
    Measure("latency_p95_ms", "p95 latency, ms", False),
    Measure("agreement_rate", "agreement with the primary", True),
)


def render(
    response: admin_pb2.CompareDeploymentsResponse,
    path: pathlib.Path,
    *,
    title: str,
    generated_at: datetime.datetime,
) -> None:
    """Write the report to `path`, in the format its suffix names (.html, .png or .svg)."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"a report is written as {', '.join(SUFFIXES)}; not {path.suffix or 'no suffix'!r}")
    comparisons = _comparisons(response)
    with _matplotlib_rc():
        if suffix == ".html":
            path.write_text(_page(response.method, comparisons, title, generated_at), encoding="utf-8")
        else:
            _image(comparisons, path, suffix[1:])


def _comparisons(response: admin_pb2.CompareDeploymentsResponse) -> list[admin_pb2.Comparison]:
    if response.comparisons:
        return list(response.comparisons)
    return [admin_pb2.Comparison(kind="deployments", title="deployments", sides=response.deployments)]


@contextlib.contextmanager
def _matplotlib_rc() -> Iterator[None]:
    try:
        import matplotlib
    except ImportError as e:
        raise RuntimeError("the report needs matplotlib: pip install 'switchboard[report]'") from e
    with matplotlib.rc_context({"svg.hashsalt": SVG_SALT, "text.usetex": False}):
        yield


def _bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _h(text: str, limit: int = MAX_TEXT) -> str:
    """Text for the page: bounded first, so an entity is never cut in half."""
    return html.escape(_bounded(text, limit))


def _label(text: str) -> str:
    """Text for a plot: bounded, `$` escaped so a name is never parsed as mathtext, and never
    starting with `_`, which matplotlib reads as "leave out of the legend"."""
    text = _bounded(text, MAX_LABEL).replace("$", r"\$")
    return "\u200b" + text if text.startswith("_") else text


def _name(side: Side) -> str:
    """A side as the report names it: its role and, for a shadow, its deployment."""
    if side.side == "shadow" and side.deployment:
        return f"shadow: {side.deployment}"
    return side.side or side.deployment or "(unnamed)"


def _interval(side: Side, field: str) -> Interval | None:
    if not side.HasField(field):
        return None
    value: Interval = getattr(side, field)
    return value


def _num(value: float, decimals: int) -> str:
    if math.isnan(value):
        return "?"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return f"{value:.{decimals}f}"


def _ranged(i: Interval | None, decimals: int, *, scale: float = 1.0, prefix: str = "", unit: str = "") -> str:
    if i is None:
        return "—"
    low, high = _num(i.low * scale, decimals), _num(i.high * scale, decimals)
    return f"{prefix}{_num(i.estimate * scale, decimals)}{unit} ({low}{DASH}{high})"


def _ms(i: Interval | None) -> str:
    return _ranged(i, 1 if i is not None and abs(i.estimate) < 10 else 0, unit=" ms")


def _percent(i: Interval | None) -> str:
    return _ranged(i, 1, scale=100.0, unit="%")


def _usd(i: Interval | None) -> str:
    # Three significant digits of the estimate: a call can cost a hundredth of a cent.
    decimals = 2
    if i is not None and math.isfinite(i.estimate) and i.estimate != 0:
        decimals = min(10, max(2, 2 - math.floor(math.log10(abs(i.estimate)))))
    return _ranged(i, decimals, prefix="$")


def _counted(text: str, count: int, noun: str) -> str:
    return text if text == "—" else f"{text} · {count:,} {noun}"


Column = tuple[str, Callable[[Side], str]]
COLUMNS: tuple[Column, ...] = (
    ("side", lambda s: _h(_name(s))),
    ("deployment", lambda s: _h(s.deployment)),
    ("calls", lambda s: f"{s.calls:,}"),
    ("success rate", lambda s: _percent(_interval(s, "success_rate"))),
    ("p50 latency", lambda s: _ms(_interval(s, "latency_p50_ms"))),
    ("p95 latency", lambda s: _ms(_interval(s, "latency_p95_ms"))),
    ("p50 TTFT", lambda s: _ms(_interval(s, "ttft_p50_ms"))),
    ("p95 TTFT", lambda s: _ms(_interval(s, "ttft_p95_ms"))),
    ("cost per call", lambda s: _usd(_interval(s, "cost_per_call_usd"))),
    ("cost per 1k output tokens", lambda s: _usd(_interval(s, "cost_per_1k_output_usd"))),
    ("feedback score", lambda s: _counted(_ranged(_interval(s, "feedback_score"), 2), s.scored_calls, "scored")),
)
AGREEMENT: Column = (
    "agreement",
    lambda s: _counted(_percent(_interval(s, "agreement_rate")), s.compared_answers, "pairs"),
)

CSS = """
body { font: 15px/1.45 system-ui, sans-serif; color: #222; max-width: 1200px; margin: 2em auto; padding: 0 1em; }
.meta, .method { color: #555; } section { margin-top: 2.5em; border-top: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 13px; margin: 1em 0; } .table { overflow-x: auto; }
th, td { padding: 0.35em 0.7em; border-bottom: 1px solid #eee; text-align: right; white-space: nowrap; }
th:nth-child(-n+2), td:nth-child(-n+2) { text-align: left; } th { background: #f5f5f5; }
.verdict { margin: 0.4em 0; } svg { max-width: 100%; height: auto; }
"""


def _page(method: str, comparisons: Sequence[admin_pb2.Comparison], title: str, at: datetime.datetime) -> str:
    # A naive time is taken to be UTC already.
    at = at.replace(tzinfo=datetime.UTC) if at.tzinfo is None else at.astimezone(datetime.UTC)
    parts = [
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_h(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{_h(title)}</h1>",
        f'<p class="meta">Generated {at.isoformat(timespec="seconds")}</p>',
    ]
    if method:
        parts.append(f'<p class="method">{_h(method, MAX_METHOD)}</p>')
    parts.extend(_section(comparison) for comparison in comparisons)
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _section(comparison: admin_pb2.Comparison) -> str:
    sides = list(comparison.sides)
    columns = COLUMNS + ((AGREEMENT,) if any(s.HasField("agreement_rate") for s in sides) else ())
    head = "".join(f"<th>{name}</th>" for name, _ in columns)
    rows = "".join("<tr>" + "".join(f"<td>{cell(s)}</td>" for _, cell in columns) + "</tr>" for s in sides)
    return (
        f"<section><h2>{_h(comparison.title or comparison.kind)}</h2>"
        f'<div class="table"><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>'
        f"{_verdicts(sides)}<figure>{_svg(comparison)}</figure></section>"
    )


def _verdicts(sides: Sequence[Side]) -> str:
    if len(sides) < 2:
        return ""
    baseline = _h(_name(sides[0]))
    parts = []
    for side in sides[1:]:
        clauses = "; ".join(_h(clause) for clause in side.verdict) or "no measure's intervals separate it"
        parts.append(f'<p class="verdict"><strong>{_h(_name(side))}</strong> against {baseline}: {clauses}.</p>')
    return "".join(parts)


def _svg(comparison: admin_pb2.Comparison) -> str:
    from matplotlib.figure import Figure

    figure = Figure(figsize=FIGURE_SIZE, layout="constrained")
    _draw(figure, comparison)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue().decode("utf-8")
    # Inline in HTML the XML declaration and doctype have no place; the <svg> element stands alone.
    return text[text.index("<svg") :]


def _image(comparisons: Sequence[admin_pb2.Comparison], path: pathlib.Path, fmt: str) -> None:
    from matplotlib.figure import Figure

    width, height = FIGURE_SIZE
    figure = Figure(figsize=(width, height * len(comparisons)), layout="constrained")
    grid = figure.add_gridspec(len(comparisons), 1)
    for row, comparison in enumerate(comparisons):
        panel = figure.add_subfigure(grid[row, 0])
        panel.suptitle(_label(comparison.title or comparison.kind), fontweight="bold")
        _draw(panel, comparison)
    figure.savefig(path, format=fmt, dpi=120, metadata={"Date": None} if fmt == "svg" else None)


def _draw(target: FigureBase, comparison: admin_pb2.Comparison) -> None:
    """Distributions on top (latency, and TTFT when any side streamed), estimates below."""
    sides = list(comparison.sides)
    names = [_name(s) for s in sides]
    with_ttft = any(sum(s.ttft_ms.counts) > 0 for s in sides)
    measures = [m for m in ESTIMATES if m.field != "agreement_rate" or any(s.HasField(m.field) for s in sides)]
    grid = target.add_gridspec(2, 2 * len(measures), height_ratios=(3, 2))
    if with_ttft:
        half = len(measures)
        _distribution(target.add_subplot(grid[0, :half]), names, [s.latency_ms for s in sides], "latency")
        _distribution(target.add_subplot(grid[0, half:]), names, [s.ttft_ms for s in sides], "time to first token")
    else:
        _distribution(target.add_subplot(grid[0, :]), names, [s.latency_ms for s in sides], "latency")
    for j, measure in enumerate(measures):
        _estimates(target.add_subplot(grid[1, 2 * j : 2 * j + 2]), names, sides, measure, labelled=j == 0)


def _cdf(histogram: admin_pb2.Histogram) -> tuple[list[float], list[float]] | None:
    """The share of calls at or below each bound; None without calls. The curve ends below 100%
    by the share of calls above the last bound."""
    total = sum(histogram.counts)
    if total <= 0:
        return None
    xs: list[float] = []
    ys: list[float] = []
    running = 0
    for bound, count in zip(histogram.bounds, histogram.counts, strict=False):
        running += count
        if math.isfinite(bound):
            xs.append(bound)
            ys.append(running / total)
    return xs, ys


def _distribution(ax: Axes, names: Sequence[str], histograms: Sequence[admin_pb2.Histogram], what: str) -> None:
    from matplotlib.ticker import FuncFormatter, NullFormatter, PercentFormatter

    curves = [(i, curve) for i, h in enumerate(histograms) if (curve := _cdf(h)) is not None and curve[0]]
    ax.set_title(f"{what} of successful calls")
    if not curves:
        _empty(ax)
        return
    # Only the span the calls fill is drawn: from the bucket before the first call to the bound
    # that holds them all (the histogram's bounds reach far beyond most deployments).
    spans = [_filled(xs, ys) for _, (xs, ys) in curves]
    first, last = min(a for a, _ in spans), max(b for _, b in spans)
    positive = [x for _, (xs, _) in curves for x in xs[first : last + 1] if x > 0]
    log = bool(positive) and max(positive) > LOG_SPAN * min(positive)
    for i, (xs, ys) in curves:
        window = zip(xs[first : last + 1], ys[first : last + 1], strict=True)
        points = [(x, y) for x, y in window if x > 0 or not log]
        ax.plot([x for x, _ in points], [y for _, y in points], color=f"C{i % 10}", lw=2, label=_label(names[i]))
    if log:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.axhline(0.95, color="grey", lw=0.8, ls=":")
    ax.set_ylim(0, 1.02)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel("ms")
    ax.set_ylabel("calls at or below")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")


def _filled(xs: Sequence[float], ys: Sequence[float]) -> tuple[int, int]:
    """The indices of the bound before a curve's first call and of the first that holds them all."""
    start = next((i for i, y in enumerate(ys) if y > 0), 0)
    end = next((i for i, y in enumerate(ys) if y >= 1.0), len(ys) - 1)
    return max(start - 1, 0), end


def _estimates(ax: Axes, names: Sequence[str], sides: Sequence[Side], measure: Measure, *, labelled: bool) -> None:
    from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter

    points = [
        (i, iv)
        for i, side in enumerate(sides)
        if (iv := _interval(side, measure.field)) is not None and math.isfinite(iv.estimate)
    ]
    ax.set_title(measure.title, fontsize="medium")
    ax.set_yticks(range(len(sides)), labels=[_label(n) for n in names] if labelled else [])
    ax.set_ylim(max(len(sides), 1) - 0.5, -0.5)  # the baseline on top
    if not points:
        _empty(ax)
        return
    floor, ceiling = _clip_range(measure, [iv for _, iv in points])
    for i, iv in points:
        estimate = iv.estimate
        low = min(estimate, max(iv.low, floor)) if not math.isnan(iv.low) else floor
        high = max(estimate, min(iv.high, ceiling)) if not math.isnan(iv.high) else ceiling
        color = f"C{i % 10}"
        ax.errorbar([estimate], [i], xerr=[[estimate - low], [high - estimate]], fmt="o", color=color, capsize=3)
        # An end the data leave open (a single call) is clipped to the panel and marked with an arrowhead.
        if not math.isfinite(iv.low) or iv.low < floor:
            ax.plot([low], [i], marker="<", color=color)
        if not math.isfinite(iv.high) or iv.high > ceiling:
            ax.plot([high], [i], marker=">", color=color)
    if points[0][0] == 0:
        ax.axvline(points[0][1].estimate, color="grey", lw=0.8, ls=":")
    # A few ticks, so that long labels (dollars per call run to many decimals) never collide.
    ax.xaxis.set_major_locator(MaxNLocator(nbins=3))
    if measure.share:
        ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0 if _span(ax) > 0.03 else 1))
    elif "usd" in measure.field:
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.2g}"))
    ax.grid(axis="x", alpha=0.3)


def _span(ax: Axes) -> float:
    low, high = ax.get_xlim()
    return abs(high - low)


def _clip_range(measure: Measure, intervals: Sequence[Interval]) -> tuple[float, float]:
    """Where an open interval end is drawn: a rate's own bounds, else just past every finite value."""
    if measure.share:
        return 0.0, 1.0
    finite = [v for iv in intervals for v in (iv.estimate, iv.low, iv.high) if math.isfinite(v)]
    top = max(finite)  # every point has a finite estimate
    return min(0.0, *finite), top * 1.15 if top > 0 else 1.0


def _empty(ax: Axes) -> None:
    ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="grey")
    ax.set_xticks([])
