"""Traces, after the OpenTelemetry GenAI semantic conventions: a server span per call, a client
span per attempt under it, the W3C trace context taken from the caller's metadata and sent on to
the provider (`traceparent`). Exported over OTLP when `telemetry.otlp_endpoint` is set;
otherwise nothing is created at all, so tracing costs nothing when it is off.

Prompts and answers are never recorded; neither is anything secret (span attributes are the
call's shape: models, deployments, outcomes, token counts, cost)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from service.access import Call
from service.config import Deployment, TelemetrySettings
from service.otlp import span_exporter

if TYPE_CHECKING:
    from service.attempts.attempt import Attempt

# The provider names of the GenAI conventions (`gen_ai.provider.name`), by provider type.
PROVIDER_NAMES = {
    "openai_compatible": "openai",
    "azure_openai": "azure.ai.openai",
    "anthropic": "anthropic",
    "gemini": "gcp.gemini",
    "bedrock": "aws.bedrock",
    "echo": "switchboard.echo",
}
# A routing decision's lists are cut to this many entries on a span.
MAX_LISTED = 16

_tracer: trace.Tracer | None = None
# What a call enters for its spans when there are none: one shared block that does nothing,
# rather than a generator made and run on every call.
_UNTRACED = contextlib.nullcontext()


class Tracing:
    """The process's tracer while a gateway with `telemetry.otlp_endpoint` runs."""

    def __init__(self, settings: TelemetrySettings) -> None:
        self._provider: TracerProvider | None = None
        if settings.otlp_endpoint is None:
            return
        self._provider = TracerProvider(
            resource=Resource.create({"service.name": settings.service_name}),
            sampler=ParentBased(TraceIdRatioBased(settings.trace_sample_ratio)),
        )
        self._provider.add_span_processor(BatchSpanProcessor(span_exporter(settings)))

    def start(self) -> None:
        global _tracer
        if self._provider is not None:
            _tracer = self._provider.get_tracer("switchboard")

    def shutdown(self) -> None:
        global _tracer
        if self._provider is not None:
            _tracer = None
            self._provider.shutdown()


def server_span(
    call: Call, context: grpc.aio.ServicerContext, operation: str
) -> contextlib.AbstractContextManager[None]:
    """The call's span, a child of the caller's trace context when it sent one; what the call
    came to is set on it as it ends."""
    if _tracer is None:
        return _UNTRACED
    return _server_span(_tracer, call, context, operation)


@contextmanager
def _server_span(tracer: trace.Tracer, call: Call, context: grpc.aio.ServicerContext, operation: str) -> Iterator[None]:
    metadata = context.invocation_metadata() or ()
    parent = propagate.extract({key: value for key, value in metadata if isinstance(value, str)})
    name = f"{operation} {call.shown_model}" if call.model else operation
    with tracer.start_as_current_span(
        name, context=parent, kind=SpanKind.SERVER, record_exception=False, set_status_on_exception=False
    ) as span:
        try:
            yield
        except asyncio.CancelledError:
            _failed(span, "CANCELLED")
            raise
        except Exception as error:
            code = getattr(error, "code", None)
            _failed(span, code.name if isinstance(code, grpc.StatusCode) else type(error).__name__)
            raise
        finally:
            if span.is_recording():  # not when sampled out: nothing would keep them
                span.set_attributes(_call_attributes(call, operation))


def attempt_span(attempt: Attempt) -> Span | None:
    """A client span for one attempt, under the current call's span; None when not tracing or
    when the call was sampled out (the call's own context then goes upstream, unsampled)."""
    if _tracer is None or not trace.get_current_span().is_recording():
        return None
    provider = attempt.deployment.provider
    return _tracer.start_span(
        f"chat {provider.model}",
        kind=SpanKind.CLIENT,
        attributes=_attempt_span_attributes(attempt.deployment, attempt.tier),
    )


def within(span: Span | None) -> contextlib.AbstractContextManager[None]:
    """Makes `span` the current one (so that requests made here carry it upstream)."""
    return _UNTRACED if span is None else _current(span)


@contextmanager
def _current(span: Span) -> Iterator[None]:
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        yield
    finally:
        otel_context.detach(token)


def end_attempt(span: Span | None, outcome: str, input_tokens: int = 0, output_tokens: int = 0) -> None:
    if span is None:
        return
    if outcome == "ok":
        span.set_attributes({"gen_ai.usage.input_tokens": input_tokens, "gen_ai.usage.output_tokens": output_tokens})
    else:
        _failed(span, outcome)
    span.end()


def with_trace_context(headers: Mapping[str, str]) -> Mapping[str, str]:
    """`headers` and the current trace context (`traceparent`) when tracing; as they are if not."""
    if _tracer is None:
        return headers
    carrier = dict(headers)
    propagate.inject(carrier)
    return carrier


def _failed(span: Span, error_type: str) -> None:
    span.set_attribute("error.type", error_type)
    span.set_status(Status(StatusCode.ERROR))


def _call_attributes(call: Call, operation: str) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": operation,
        "switchboard.request_id": call.request_id,
        "switchboard.attempts": call.attempts,
    }
    optional: dict[str, Any] = {
        "gen_ai.request.model": call.shown_model,
        "gen_ai.response.model": call.response_model,
        "switchboard.model_group": call.model_group,
        "switchboard.tenant": call.tenant,
        "switchboard.key_id": call.key_id,
        "switchboard.deployment": call.deployment,
        "switchboard.outcome": call.outcome,
        "switchboard.retries": call.retries,
        "switchboard.fallbacks": call.fallbacks,
        "switchboard.hedges": call.hedges,
        "switchboard.cost_usd": call.cost_usd,
        "gen_ai.usage.input_tokens": call.input_tokens,
        "gen_ai.usage.output_tokens": call.output_tokens,
        "switchboard.route.policy": call.policy,
        "switchboard.route.strategy": call.strategy,
        "switchboard.experiment.id": call.experiment,
        "switchboard.experiment.variant": call.variant,
        "switchboard.route.candidates": call.candidates[:MAX_LISTED],
        "switchboard.route.rejected": call.rejected[:MAX_LISTED],
    }
    if call.finish_reason:
        attributes["gen_ai.response.finish_reasons"] = [call.finish_reason]
    attributes.update({key: value for key, value in optional.items() if value not in ("", None, 0, 0.0, [])})
    return attributes


def attempt_attributes(deployment: Deployment) -> dict[str, str]:
    """What names an attempt on `deployment`, in spans and metrics alike."""
    provider = deployment.provider
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": PROVIDER_NAMES.get(provider.type, provider.type),
        "gen_ai.request.model": provider.model,
        "switchboard.deployment": deployment.id,
    }


def _attempt_span_attributes(deployment: Deployment, tier: int) -> dict[str, Any]:
    attributes: dict[str, Any] = {**attempt_attributes(deployment), "switchboard.tier": tier}
    provider = deployment.provider
    base_url = getattr(provider, "base_url", None)
    if base_url is not None and base_url.host:
        attributes["server.address"] = base_url.host
        if base_url.port:
            attributes["server.port"] = base_url.port
    return attributes
