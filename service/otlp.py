"""Where traces and metrics go over OTLP: `telemetry.otlp_endpoint`, over gRPC or protobuf over
HTTP (`otlp_protocol`), plaintext or TLS (`insecure`). One place that picks the SDK's exporters."""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk.metrics.export import MetricExporter
from opentelemetry.sdk.trace.export import SpanExporter

from service.config import TelemetrySettings


def span_exporter(settings: TelemetrySettings) -> SpanExporter:
    assert settings.otlp_endpoint is not None
    if settings.otlp_protocol == "grpc":
        return GrpcSpanExporter(endpoint=settings.otlp_endpoint, insecure=settings.insecure)
    return HttpSpanExporter(endpoint=_url(settings, "traces"))


def metric_exporter(settings: TelemetrySettings) -> MetricExporter:
    assert settings.otlp_endpoint is not None
    if settings.otlp_protocol == "grpc":
        return GrpcMetricExporter(endpoint=settings.otlp_endpoint, insecure=settings.insecure)
    return HttpMetricExporter(endpoint=_url(settings, "metrics"))


def _url(settings: TelemetrySettings, signal: str) -> str:
    """The OTLP/HTTP path of `signal` at the endpoint, as the specification names it."""
    scheme = "http" if settings.insecure else "https"
    return f"{scheme}://{settings.otlp_endpoint}/v1/{signal}"
