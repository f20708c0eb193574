"""An OTLP receiver of traces and metrics, over gRPC and over HTTP (protobuf bodies POSTed to
/v1/traces and /v1/metrics), built from the official opentelemetry-proto definitions: what the
gateway exports is received as any collector would receive it, and kept for the test to read."""

from __future__ import annotations

import gzip
from typing import Self

import grpc
from aiohttp import web
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.trace.v1 import trace_pb2


class OtlpReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans: list[trace_pb2.Span] = []
        self.metrics: list[metrics_pb2.Metric] = []
        self.resources: list[dict[str, object]] = []
        self._server = grpc.aio.server()
        self.port = 0
        self._http: web.AppRunner | None = None
        self.http_port = 0

    async def start(self) -> Self:
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self._server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_Metrics(self), self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()
        app = web.Application()
        app.router.add_post("/v1/traces", self._post_traces)
        app.router.add_post("/v1/metrics", self._post_metrics)
        self._http = web.AppRunner(app, access_log=None)
        await self._http.setup()
        site = web.TCPSite(self._http, "127.0.0.1", 0)
        await site.start()
        self.http_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        await self._server.stop(0)
        if self._http is not None:
            await self._http.cleanup()

    async def Export(  # noqa: N802
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.aio.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.take_spans(request)
        return trace_service_pb2.ExportTraceServiceResponse()

    def take_spans(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        for resource_spans in request.resource_spans:
            self.resources.append({a.key: attribute(a.value) for a in resource_spans.resource.attributes})
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend(scope_spans.spans)

    def take_metrics(self, request: metrics_service_pb2.ExportMetricsServiceRequest) -> None:
        for resource_metrics in request.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                self.metrics.extend(scope_metrics.metrics)

    async def _post_traces(self, request: web.Request) -> web.Response:
        self.take_spans(trace_service_pb2.ExportTraceServiceRequest.FromString(await _body(request)))
        return _protobuf(trace_service_pb2.ExportTraceServiceResponse())

    async def _post_metrics(self, request: web.Request) -> web.Response:
        self.take_metrics(metrics_service_pb2.ExportMetricsServiceRequest.FromString(await _body(request)))
        return _protobuf(metrics_service_pb2.ExportMetricsServiceResponse())


async def _body(request: web.Request) -> bytes:
    assert request.content_type == "application/x-protobuf", request.content_type
    body = await request.read()
    return gzip.decompress(body) if request.headers.get("Content-Encoding") == "gzip" else body


def _protobuf(
    message: trace_service_pb2.ExportTraceServiceResponse | metrics_service_pb2.ExportMetricsServiceResponse,
) -> web.Response:
    return web.Response(body=message.SerializeToString(), content_type="application/x-protobuf")


class _Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self.receiver = receiver

    async def Export(  # noqa: N802
        self, request: metrics_service_pb2.ExportMetricsServiceRequest, context: grpc.aio.ServicerContext
    ) -> metrics_service_pb2.ExportMetricsServiceResponse:
        self.receiver.take_metrics(request)
        return metrics_service_pb2.ExportMetricsServiceResponse()


def attribute(value: object) -> object:
    """An OTLP AnyValue as Python."""
    kind = value.WhichOneof("value")  # type: ignore[attr-defined]
    if kind == "array_value":
        return [attribute(v) for v in value.array_value.values]  # type: ignore[attr-defined]
    return getattr(value, kind) if kind else None


def attributes(span: trace_pb2.Span) -> dict[str, object]:
    return {a.key: attribute(a.value) for a in span.attributes}
