"""Building the API's response messages from the engine's results and the config."""

from __future__ import annotations

from google.protobuf import duration_pb2

from service.api.switchboard.v1 import gateway_pb2 as pb
from service.config import AnyDeployment, Config
from service.outcomes import Completion, Usage

DeploymentConfig = AnyDeployment


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


def chat_response(
    request_id: str,
    model_group: str,
    deployment: DeploymentConfig,
    completion: Completion,
    attempts: list[pb.Attempt],
) -> pb.ChatResponse:
    return pb.ChatResponse(
        id=request_id,
        served=served(model_group, deployment),
        message=pb.Message(
            role=pb.ROLE_ASSISTANT,
            content=[pb.ContentPart(text=completion.text)] if completion.text or not completion.tool_calls else [],
            tool_calls=completion.tool_calls,
        ),
        finish_reason=completion.finish_reason,
        usage=usage(completion.usage),
        cost_usd=cost(deployment, completion.usage),
        attempts=attempts,
        provider_request_id=completion.provider_request_id,
    )


def served(model_group: str, deployment: DeploymentConfig) -> pb.Served:
    return pb.Served(
        model_group=model_group,
        deployment=deployment.id,
        provider=deployment.type,
        provider_model=deployment.model,
    )


def usage(counts: Usage) -> pb.Usage:
    return pb.Usage(
        input_tokens=counts.input_tokens,
        output_tokens=counts.output_tokens,
        total_tokens=counts.input_tokens + counts.output_tokens,
        cached_input_tokens=counts.cached_input_tokens,
    )


def cost(deployment: DeploymentConfig, counts: Usage) -> float:
    return (
        counts.input_tokens * deployment.input_price_per_mtok + counts.output_tokens * deployment.output_price_per_mtok
    ) / 1_000_000


def duration(seconds: float) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromNanoseconds(round(seconds * 1e9))
    return value


def deployment_info(dep: DeploymentConfig) -> pb.Deployment:
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
