"""What the router has measured, as metrics named after the OpenTelemetry GenAI conventions,
read at collection time (a scrape, a push) and never on the request path: the router counts
every attempt as its lease settles and every call as it ends, in histograms of atomic counters
(in the host's shared region with `--workers N`, so any process reports the host).

Labels are the config's names (deployments, model groups, providers, models), outcome, method
and status names: their number is bounded by the config, never by what clients send.

- `gen_ai.client.operation.duration` (s) per attempt, by provider, model, deployment and
  `error.type`; `gen_ai.client.token.usage` ({token}) per successful attempt;
- `switchboard.attempts` by outcome, `switchboard.time_to_first_token` (s) of successful
  streamed attempts and `switchboard.cost` (USD), per deployment;
- `switchboard.calls` by method, status and model group; `switchboard.call.duration` (s) and the
  attempts beyond the first (`switchboard.retries`, `.fallbacks`, `.hedges`) by method and model
  group;
- gauges per deployment: attempts in flight, circuit state, rate-limit headroom."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

import grpc

import router_core
from service.config import Deployment
from service.telemetry import attempt_attributes

Kind = Literal["counter", "gauge", "histogram"]
Attributes: TypeAlias = Mapping[str, str]
CIRCUIT_STATES = ("closed", "open", "half_open")
# gRPC status names by code number, as the router counts calls.
STATUS_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


@dataclass(slots=True)
class Family:
    """One metric: its OpenTelemetry name, unit and kind, and a value per label set."""

    name: str
    unit: str
    kind: Kind
    description: str
    points: list[tuple[Attributes, float | router_core.Distribution]] = field(default_factory=list)


def families(router: router_core.Router, deployments: Iterable[Deployment]) -> list[Family]:
    """Everything the router has measured, for `deployments` (the config's) and its model groups."""
    named = {d.id: attempt_attributes(d) for d in deployments}
    duration = Family("gen_ai.client.operation.duration", "s", "histogram", "Duration of one attempt on a deployment")
    tokens = Family("gen_ai.client.token.usage", "{token}", "histogram", "Tokens one successful attempt used")
    attempts = Family("switchboard.attempts", "{attempt}", "counter", "Attempts, by outcome")
    first_token = Family(
        "switchboard.time_to_first_token", "s", "histogram", "Time to the first token of a successful streamed attempt"
    )
    cost = Family("switchboard.cost", "USD", "counter", "Cost of the answers")
    for measures in router.measures():
        labels = named.get(measures.deployment)
        if labels is None:  # dropped by a reload since the config was read
            continue
        duration.points.append((labels, measures.latency.coarsened()))
        for outcome, failed in measures.failed_latency.items():
            duration.points.append(({**labels, "error.type": outcome}, failed))
        tokens.points.append(({**labels, "gen_ai.token.type": "input"}, measures.input_tokens))
        tokens.points.append(({**labels, "gen_ai.token.type": "output"}, measures.output_tokens))
        for outcome, count in measures.outcomes.items():
            attempts.points.append(({**labels, "switchboard.outcome": outcome}, count))
        served = {"switchboard.deployment": measures.deployment}
        if measures.first_token.count:
            first_token.points.append((served, measures.first_token.coarsened()))
        cost.points.append((served, measures.cost_usd))
    return [duration, tokens, attempts, first_token, cost, *_calls(router), *_gauges(router)]


def _calls(router: router_core.Router) -> list[Family]:
    calls = Family("switchboard.calls", "{call}", "counter", "Calls, by how they ended")
    duration = Family("switchboard.call.duration", "s", "histogram", "Duration of a whole call")
    extra = {
        "retries": Family(
            "switchboard.retries", "{attempt}", "counter", "Attempts on a deployment again after it failed"
        ),
        "fallbacks": Family(
            "switchboard.fallbacks", "{attempt}", "counter", "Attempts on the next candidate after a failure"
        ),
        "hedges": Family("switchboard.hedges", "{attempt}", "counter", "Attempts alongside one slow to answer"),
    }
    for measures in router.call_measures():
        labels = {"rpc.method": measures.method, "switchboard.model_group": measures.model_group}
        for code, count in measures.statuses.items():
            calls.points.append(({**labels, "rpc.grpc.status_code": STATUS_NAMES[code]}, count))
        duration.points.append((labels, measures.duration))
        for name, family in extra.items():
            family.points.append((labels, getattr(measures, name)))
    return [calls, duration, *extra.values()]


def _gauges(router: router_core.Router) -> list[Family]:
    in_flight = Family("switchboard.deployment.in_flight", "{attempt}", "gauge", "Attempts in flight")
    circuit = Family("switchboard.deployment.circuit", "1", "gauge", "1 for the circuit's state, 0 for the others")
    headroom = Family(
        "switchboard.deployment.rate_limit.headroom", "1", "gauge", "The fuller of its rate-limit buckets' fill, 0 to 1"
    )
    for stats in router.stats():
        labels = {"switchboard.deployment": stats.deployment}
        in_flight.points.append((labels, stats.in_flight))
        headroom.points.append((labels, stats.headroom))
        for state in CIRCUIT_STATES:
            circuit.points.append(({**labels, "switchboard.circuit": state}, int(stats.state == state)))
    return [in_flight, circuit, headroom]
