"""Every API message the gateway answers with, built from the engine's results and the config:
the only module that builds protobuf responses (errors.py packs them into statuses)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from google.protobuf import duration_pb2

import router_core
from service.api.switchboard.v1 import gateway_pb2 as pb
from service.config import Config, Deployment
from service.outcomes import AttemptRecord, Completion, Delta, StreamFinished, Usage

RouteCandidates = dict[str, pb.RouteCandidate]


def model_list(config: Config) -> pb.ListModelsResponse:
    return pb.ListModelsResponse(
        model_groups=[
            pb.ModelGroup(
                name=group.name,
                strategy=group.strategy,
                deployments=[deployment_info(dep) for dep in group.deployments],
            )
            for group in config.model_groups
        ],
        default_group=config.default_group or "",
    )


def route_candidates(config: Config) -> RouteCandidates:
    """What Route says of each deployment, which never changes: copying it beats building it (3x)."""
    return {
        dep.id: pb.RouteCandidate(deployment=dep.id, provider=dep.type, provider_model=dep.model, region=dep.region)
        for dep in config.deployments()
    }


def route_response(
    decision: router_core.Decision,
    input_tokens: int,
    candidates: RouteCandidates,
    visible: Callable[[str], bool] = lambda deployment: True,
) -> pb.RouteResponse:
    """The decision explained; of its deployments, only those `visible` (the caller's to use)."""
    response = pb.RouteResponse(
        model_group=decision.model_group,
        policy=decision.policy or "",
        strategy=decision.strategy,
        input_tokens=input_tokens,
    )
    for candidate in decision.candidates:
        if not visible(candidate.deployment):
            continue
        entry = response.candidates.add()
        entry.CopyFrom(candidates[candidate.deployment])
        entry.score = candidate.score
        entry.tier = candidate.tier
    for rejection in decision.rejected:
        if not visible(rejection.deployment):
            continue
        response.rejected.add(deployment=rejection.deployment, filter=rejection.filter, detail=rejection.detail)
    return response


def chat_response(
    request_id: str,
    served: pb.Served,
    completion: Completion,
    cost_usd: float,
    records: Sequence[AttemptRecord],
) -> pb.ChatResponse:
    return pb.ChatResponse(
        id=request_id,
        served=served,
        message=pb.Message(
            role=pb.ROLE_ASSISTANT,
            content=[pb.ContentPart(text=completion.text)] if completion.text or not completion.tool_calls else [],
            tool_calls=completion.tool_calls,
        ),
        finish_reason=completion.finish_reason,
        usage=usage(completion.usage),
        cost_usd=cost_usd,
        attempts=attempts(records),
        provider_request_id=completion.provider_request_id,
    )


def stream_start(request_id: str, served: pb.Served, records: Sequence[AttemptRecord]) -> pb.ChatStreamResponse:
    return pb.ChatStreamResponse(start=pb.StreamStart(id=request_id, served=served, failed_attempts=attempts(records)))


def stream_delta(delta: Delta) -> pb.ChatStreamResponse:
    return pb.ChatStreamResponse(delta=pb.StreamDelta(text=delta.text, tool_calls=delta.tool_calls))


def stream_end(finished: StreamFinished, cost_usd: float, records: Sequence[AttemptRecord]) -> pb.ChatStreamResponse:
    return pb.ChatStreamResponse(
        end=pb.StreamEnd(
            finish_reason=finished.finish_reason,
            usage=usage(finished.usage),
            cost_usd=cost_usd,
            attempts=attempts(records),
            provider_request_id=finished.provider_request_id,
        )
    )


def attempts(records: Sequence[AttemptRecord]) -> list[pb.Attempt]:
    return [attempt(record) for record in records]


def attempt(record: AttemptRecord) -> pb.Attempt:
    return pb.Attempt(
        deployment=record.deployment,
        outcome=record.outcome,
        latency=None if record.latency_s is None else duration(record.latency_s),
        upstream_status=record.upstream_status,
        error_message=record.error,
    )


def attempt_log(records: Sequence[AttemptRecord]) -> pb.AttemptLog:
    """Every attempt of a failed call, as the error's detail."""
    return pb.AttemptLog(attempts=attempts(records))


def served(model_group: str, deployment: Deployment, experiment: str = "", variant: str = "") -> pb.Served:
    """Who answered: the group, the deployment, and the experiment variant the call was assigned."""
    return pb.Served(
        model_group=model_group,
        deployment=deployment.id,
        provider=deployment.type,
        provider_model=deployment.model,
        experiment=experiment,
        variant=variant,
    )


def usage(counts: Usage) -> pb.Usage:
    return pb.Usage(
        input_tokens=counts.input_tokens,
        output_tokens=counts.output_tokens,
        total_tokens=counts.input_tokens + counts.output_tokens,
        cached_input_tokens=counts.cached_input_tokens,
    )


def duration(seconds: float) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromNanoseconds(round(seconds * 1e9))
    return value


def deployment_info(dep: Deployment) -> pb.Deployment:
    return pb.Deployment(
        id=dep.id,
        provider=dep.type,
        provider_model=dep.model,
        region=dep.region,
        context_window=dep.context_window,
        capabilities=dep.capabilities,
        price=pb.Price(input_per_mtok=dep.input_price_per_mtok, output_per_mtok=dep.output_price_per_mtok),
        weight=dep.weight,
        priority=dep.priority,
    )
