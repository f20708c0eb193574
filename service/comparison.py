"""Comparing deployments on the calls they served: per side, the success rate, latency and
time-to-first-token percentiles, cost per call and per thousand output tokens, the mean feedback
score and, for a shadow, the rate at which its answers agreed with those it copied, each with a
95% interval; and a plain verdict only where two sides' intervals do not overlap.

Intervals: Wilson's score interval for rates; the normal approximation (mean ± 1.96 standard
errors) for means; a percentile bootstrap (1 000 resamples, seeded, so the same calls give the
same answer) for percentiles. Non-overlapping 95% intervals are a conservative
test of a difference: a verdict that is given is well supported, and a real but small difference
may go unsaid."""

from __future__ import annotations

import bisect
import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Z_95 = 1.959963984540054
BOOTSTRAP_RESAMPLES = 1000
# The most calls a side's bootstrap resamples (a uniform sample of them beyond): it bounds the
# time a comparison of a busy deployment takes.
MAX_BOOTSTRAP_CALLS = 5000


@dataclass(frozen=True, slots=True)
class Served:
    """One call as the comparison reads it."""

    ok: bool
    latency_ms: float
    cost_usd: float
    output_tokens: int
    score: float | None = None  # the mean of its feedback scores, if it has any
    ttft_ms: float | None = None  # a stream's time to its first token
    agrees: bool | None = None  # a shadow call's answer against the one it copied, if compared


@dataclass(frozen=True, slots=True)
class Interval:
    estimate: float
    low: float
    high: float

    def below(self, other: Interval) -> bool:
        """Whether this one lies wholly below `other`."""
        return self.high < other.low


@dataclass(frozen=True, slots=True)
class Side:
    name: str
    calls: int
    success_rate: Interval
    latency_p50_ms: Interval | None
    latency_p95_ms: Interval | None
    cost_per_call_usd: Interval | None
    cost_per_1k_output_usd: Interval | None
    feedback_score: Interval | None
    scored_calls: int
    ttft_p50_ms: Interval | None = None
    ttft_p95_ms: Interval | None = None
    agreement_rate: Interval | None = None
    compared_answers: int = 0
    # Counts of the successful calls' latencies and times to first token in HISTOGRAM_BOUNDS_MS.
    latency_counts: tuple[int, ...] = ()
    ttft_counts: tuple[int, ...] = ()


def wilson(successes: int, trials: int) -> Interval:
    if trials == 0:
        return Interval(math.nan, 0.0, 1.0)
    p = successes / trials
    denominator = 1 + Z_95**2 / trials
    centre = (p + Z_95**2 / (2 * trials)) / denominator
    spread = Z_95 * math.sqrt(p * (1 - p) / trials + Z_95**2 / (4 * trials**2)) / denominator
    return Interval(p, max(0.0, centre - spread), min(1.0, centre + spread))


def mean_interval(values: Sequence[float]) -> Interval | None:
    if not values:
        return None
    mean = statistics.fmean(values)
    if len(values) < 2:
        return Interval(mean, -math.inf, math.inf)
    error = statistics.stdev(values) / math.sqrt(len(values))
    return Interval(mean, mean - Z_95 * error, mean + Z_95 * error)


def ratio_interval(numerators: Sequence[float], denominators: Sequence[float], scale: float) -> Interval | None:
    """sum(numerators) / sum(denominators), times `scale`, with the delta method's normal interval."""
    n, total = len(numerators), sum(denominators)
    if n < 2 or total <= 0:
        return None
    ratio = sum(numerators) / total
    mean_denominator = total / n
    residuals = [x - ratio * y for x, y in zip(numerators, denominators, strict=True)]
    error = statistics.stdev(residuals) / (mean_denominator * math.sqrt(n))
    return Interval(ratio * scale, (ratio - Z_95 * error) * scale, (ratio + Z_95 * error) * scale)


def percentile_intervals(values: Sequence[float], qs: Sequence[float], rng: random.Random) -> list[Interval | None]:
    """Each quantile in `qs` of `values` with its bootstrap interval; one sort of each resample
    serves every quantile."""
    if len(values) < 2:
        return [None] * len(qs)
    sample = list(values) if len(values) <= MAX_BOOTSTRAP_CALLS else rng.sample(list(values), MAX_BOOTSTRAP_CALLS)
    ordered = sorted(values)
    resampled: list[list[float]] = [[] for _ in qs]
    for _ in range(BOOTSTRAP_RESAMPLES):
        resample = sorted(rng.choices(sample, k=len(sample)))
        for estimates, q in zip(resampled, qs, strict=True):
            estimates.append(_quantile(resample, q))
    intervals: list[Interval | None] = []
    for estimates, q in zip(resampled, qs, strict=True):
        estimates.sort()
        intervals.append(Interval(_quantile(ordered, q), _quantile(estimates, 0.025), _quantile(estimates, 0.975)))
    return intervals


# Where the plotted distributions are counted: eight buckets a decade from 1 ms to 100 s.
HISTOGRAM_BOUNDS_MS = tuple(round(10 ** (i / 8), 3) for i in range(41))


def histogram(values: Sequence[float]) -> tuple[int, ...]:
    """Counts of `values` per bucket of HISTOGRAM_BOUNDS_MS (at or below each bound, above the
    one before), with one more for those above every bound."""
    counts = [0] * (len(HISTOGRAM_BOUNDS_MS) + 1)
    for value in values:
        counts[bisect.bisect_left(HISTOGRAM_BOUNDS_MS, value)] += 1
    return tuple(counts)


def _quantile(ordered: Sequence[float], q: float) -> float:
    """Linear interpolation between the closest ranks."""
    position = q * (len(ordered) - 1)
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def summarize(name: str, calls: Sequence[Served], seed: int = 0) -> Side:
    rng = random.Random(seed)
    ok = [c for c in calls if c.ok]
    latencies = [c.latency_ms for c in ok]
    ttfts = [c.ttft_ms for c in ok if c.ttft_ms is not None]
    scored = [c.score for c in calls if c.score is not None]
    compared = [c.agrees for c in calls if c.agrees is not None]
    latency_p50, latency_p95 = percentile_intervals(latencies, (0.5, 0.95), rng)
    ttft_p50, ttft_p95 = percentile_intervals(ttfts, (0.5, 0.95), rng)
    return Side(
        name=name,
        calls=len(calls),
        success_rate=wilson(len(ok), len(calls)),
        latency_p50_ms=latency_p50,
        latency_p95_ms=latency_p95,
        cost_per_call_usd=mean_interval([c.cost_usd for c in calls]),
        cost_per_1k_output_usd=ratio_interval([c.cost_usd for c in ok], [float(c.output_tokens) for c in ok], 1000.0),
        feedback_score=mean_interval(scored),
        scored_calls=len(scored),
        ttft_p50_ms=ttft_p50,
        ttft_p95_ms=ttft_p95,
        agreement_rate=wilson(sum(compared), len(compared)) if compared else None,
        compared_answers=len(compared),
        latency_counts=histogram(latencies),
        ttft_counts=histogram(ttfts),
    )


def verdict(a: Side, b: Side) -> list[str]:
    """What can be said of `b` against `a`: one clause per measure whose intervals separate."""
    said: list[str] = []
    if a.cost_per_call_usd and b.cost_per_call_usd and a.cost_per_call_usd.estimate > 0:
        change = b.cost_per_call_usd.estimate / a.cost_per_call_usd.estimate - 1
        if b.cost_per_call_usd.below(a.cost_per_call_usd):
            said.append(f"{b.name} is {-change:.0%} cheaper per call")
        elif a.cost_per_call_usd.below(b.cost_per_call_usd):
            said.append(f"{b.name} is {change:.0%} dearer per call")
    for label, left, right in (
        ("p50 latency", a.latency_p50_ms, b.latency_p50_ms),
        ("p95 latency", a.latency_p95_ms, b.latency_p95_ms),
        ("p50 TTFT", a.ttft_p50_ms, b.ttft_p50_ms),
        ("p95 TTFT", a.ttft_p95_ms, b.ttft_p95_ms),
    ):
        if left and right and (left.below(right) or right.below(left)):
            said.append(f"{label} {right.estimate - left.estimate:+.0f} ms")
    if a.success_rate.below(b.success_rate) or b.success_rate.below(a.success_rate):
        said.append(f"success {b.success_rate.estimate:.1%} against {a.success_rate.estimate:.1%}")
    if (
        a.feedback_score
        and b.feedback_score
        and (a.feedback_score.below(b.feedback_score) or b.feedback_score.below(a.feedback_score))
    ):
        said.append(f"feedback {b.feedback_score.estimate:.2f} against {a.feedback_score.estimate:.2f}")
    if b.agreement_rate is not None:
        # Not a difference between the sides but how often they said the same: stated whenever measured.
        rate = b.agreement_rate
        said.append(f"agreement {rate.estimate:.0%} ({rate.low:.0%} to {rate.high:.0%})")
    return said


def served_calls(rows: Sequence[Sequence[Any]]) -> list[Served]:
    """The store's rows (`SqlStore.served` and its kin: SERVED_COLUMNS) as the comparison reads them."""
    return [
        Served(
            ok=status == "OK",
            latency_ms=float(latency),
            cost_usd=float(cost),
            output_tokens=int(tokens),
            score=None if score is None else float(score),
            ttft_ms=None if ttft is None else float(ttft),
            agrees=None if agrees is None else bool(agrees),
        )
        for status, latency, cost, tokens, ttft, score, agrees in rows
    ]


METHOD = (
    "95% intervals: Wilson's score interval for the success and agreement rates; mean ± 1.96 standard"
    " errors for the cost per call and the feedback score (the delta method for cost per 1k output"
    f" tokens); a percentile bootstrap of {BOOTSTRAP_RESAMPLES} resamples for latency and TTFT"
    " percentiles. A difference is stated only where two intervals do not overlap."
)


def compare(named: Sequence[tuple[str, Sequence[Served]]]) -> list[tuple[Side, list[str]]]:
    """Each side summarized, with its verdict against the first (none for the first)."""
    sides = [summarize(name, calls) for name, calls in named]
    return [(side, [] if i == 0 else verdict(sides[0], side)) for i, side in enumerate(sides)]
