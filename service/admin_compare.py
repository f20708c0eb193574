"""Admin `CompareDeployments`: the calls to compare read from the ledger, by deployment or by a
policy's experiment and shadow, and the comparison (service/comparison.py) as the API answers it.
The bootstrap takes a while on busy sides, so the statistics run on a thread, off the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from service.admin_keys import SpendReader
from service.api.switchboard.admin.v1 import admin_pb2 as pb
from service.comparison import HISTOGRAM_BOUNDS_MS, METHOD, Interval, Served, Side, compare
from service.redaction import bounded

# How many deployments may be named at most.
MAX_COMPARED = 8


class Refused(Exception):
    """A request the comparison cannot answer: its status code's name and the message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def check_deployments(names: Sequence[str], known: set[str]) -> None:
    """Refused unless 2 to MAX_COMPARED deployments are named, each one the config has."""
    if not 2 <= len(names) <= MAX_COMPARED:
        raise Refused("INVALID_ARGUMENT", f"deployments: name 2 to {MAX_COMPARED}")
    unknown = [name for name in names if name not in known]
    if unknown:
        raise Refused("NOT_FOUND", f"no deployment {bounded(unknown[0], 128)!r}")


def policy_to_compare(policies: Sequence[Mapping[str, Any]], policy_id: str) -> Mapping[str, Any]:
    """The policy named (as the config describes it); Refused unless it has an experiment or a shadow."""
    policy = next((p for p in policies if p["id"] == policy_id), None)
    if policy is None:
        raise Refused("NOT_FOUND", f"no policy {bounded(policy_id, 128)!r}")
    if not policy.get("experiment") and not policy.get("shadow"):
        raise Refused("INVALID_ARGUMENT", f"policy {policy_id!r} has neither an experiment nor a shadow")
    return policy


async def by_deployments(spend: SpendReader, names: Sequence[str], since: float) -> pb.CompareDeploymentsResponse:
    calls = await spend.served(list(names), since)
    compared = await asyncio.to_thread(compare, list(zip(names, calls, strict=True)))
    return pb.CompareDeploymentsResponse(deployments=[_compared(side, said) for side, said in compared], method=METHOD)


async def by_policy(spend: SpendReader, policy: Mapping[str, Any], since: float) -> pb.CompareDeploymentsResponse:
    """The policy's experiment (its variants, the first the baseline), then each of its shadow
    deployments against the calls it copied."""
    policy_id, experiment, shadow = policy["id"], policy.get("experiment"), policy.get("shadow")
    comparisons: list[pb.Comparison] = []
    if experiment:
        variants = experiment["variants"]
        names = [variant["name"] for variant in variants]  # the config's description names every one
        calls = await spend.variants_served(policy_id, experiment["id"], names, since)
        routes = ["+".join([*variant["groups"], *variant["deployments"]]) for variant in variants]
        compared = await asyncio.to_thread(compare, list(zip(names, calls, strict=True)))
        comparisons.append(
            pb.Comparison(
                kind="experiment",
                title=f"experiment {experiment['id']} on policy {policy_id}",
                sides=[
                    _compared(side, said, deployment=route, label=side.name)
                    for (side, said), route in zip(compared, routes, strict=True)
                ],
            )
        )
    for deployment in shadow["deployments"] if shadow else ():
        copied, shadowed = await spend.shadowed(policy_id, deployment, since)
        comparisons.append(await _shadow_comparison(policy_id, deployment, copied, shadowed))
    return pb.CompareDeploymentsResponse(comparisons=comparisons, method=METHOD)


async def _shadow_comparison(
    policy_id: str, deployment: str, copied: list[Served], shadowed: list[Served]
) -> pb.Comparison:
    # The shadow side is named by its deployment, as its verdict speaks of it ("b is 38% cheaper").
    named: list[tuple[str, Sequence[Served]]] = [("primary", copied), (deployment, shadowed)]
    (primary, _), (shadow, said) = await asyncio.to_thread(compare, named)
    return pb.Comparison(
        kind="shadow",
        title=f"shadow {deployment} on policy {policy_id}",
        sides=[
            # The calls copied, served by whichever of the policy's deployments took them.
            _compared(primary, [], deployment=f"policy {policy_id}", label="primary"),
            _compared(shadow, said, deployment=deployment, label="shadow"),
        ],
    )


def _compared(side: Side, said: list[str], *, deployment: str | None = None, label: str = "") -> pb.ComparedDeployment:
    def interval(value: Interval | None) -> pb.Interval | None:
        return None if value is None else pb.Interval(estimate=value.estimate, low=value.low, high=value.high)

    def histogram(counts: tuple[int, ...]) -> pb.Histogram | None:
        return pb.Histogram(bounds=HISTOGRAM_BOUNDS_MS, counts=counts) if any(counts) else None

    return pb.ComparedDeployment(
        deployment=side.name if deployment is None else deployment,
        side=label,
        calls=side.calls,
        success_rate=interval(side.success_rate),
        latency_p50_ms=interval(side.latency_p50_ms),
        latency_p95_ms=interval(side.latency_p95_ms),
        ttft_p50_ms=interval(side.ttft_p50_ms),
        ttft_p95_ms=interval(side.ttft_p95_ms),
        cost_per_call_usd=interval(side.cost_per_call_usd),
        cost_per_1k_output_usd=interval(side.cost_per_1k_output_usd),
        feedback_score=interval(side.feedback_score),
        scored_calls=side.scored_calls,
        agreement_rate=interval(side.agreement_rate),
        compared_answers=side.compared_answers,
        latency_ms=histogram(side.latency_counts),
        ttft_ms=histogram(side.ttft_counts),
        verdict=said,
    )
