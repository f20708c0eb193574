"""Metrics, with OpenTelemetry's SDK and names from its GenAI conventions, scraped by Prometheus
at `http://<telemetry.metrics_listen>/metrics`, pushed over OTLP to `telemetry.otlp_endpoint`
every `metrics_push_interval_s`, or both (nothing is recorded when neither is asked for). Labels
are the config's names (deployments, model groups, providers, models), outcome and status names:
their number is bounded by the config, never by what clients send.

- `gen_ai.client.operation.duration` (s) and `gen_ai.client.token.usage` ({token}) per attempt,
  by provider, model, deployment and `error.type`;
- `switchboard.calls` and `switchboard.call.duration` (s) per call, by method, status and model
  group; `switchboard.time_to_first_token` (s) per stream; `switchboard.cost` (USD) per
  deployment;
- from the router, at each scrape: attempts in flight, circuit state and rate-limit headroom per
  deployment (with `--workers N`, the host's: the workers share that state)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from aiohttp import web
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

import router_core
from service.access import Call
from service.config import Deployment, TelemetrySettings
from service.outcomes import Usage
from service.telemetry import attempt_attributes

# The conventions' advised buckets: durations in seconds, token counts in powers of 4.
DURATION_BUCKETS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]
TOKEN_BUCKETS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864]
CIRCUIT_STATES = ("closed", "open", "half_open")

_metrics: Metrics | None = None


class Metrics:
    """The process's instruments and its /metrics endpoint, while a gateway that asks for them runs."""

    def __init__(self, settings: TelemetrySettings, router: router_core.Router) -> None:
        self.listen = settings.metrics_listen
        self.registry = CollectorRegistry()
        self._router = router
        readers: list[MetricReader] = []
        if settings.metrics_listen is not None:
            readers.append(PrometheusMetricReader(registry=self.registry))
        if settings.otlp_endpoint is not None and settings.metrics_push_interval_s > 0:
            exporter = OTLPMetricExporter(endpoint=settings.otlp_endpoint, insecure=settings.insecure)
            interval_ms = settings.metrics_push_interval_s * 1000
            readers.append(PeriodicExportingMetricReader(exporter, export_interval_millis=interval_ms))
        self._provider = MeterProvider(
            metric_readers=readers, resource=Resource.create({"service.name": settings.service_name})
        )
        meter = self._provider.get_meter("switchboard")
        self.operation_duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="Duration of one attempt on a deployment",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.token_usage = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Tokens one successful attempt used",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        self.calls = meter.create_counter("switchboard.calls", unit="{call}", description="Calls, by how they ended")
        self.call_duration = meter.create_histogram(
            "switchboard.call.duration",
            unit="s",
            description="Duration of a whole call",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.time_to_first_token = meter.create_histogram(
            "switchboard.time_to_first_token",
            unit="s",
            description="Time from a stream's attempt to its first token",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.cost = meter.create_counter("switchboard.cost", unit="USD", description="Cost of the answers")
        meter.create_observable_gauge(
            "switchboard.deployment.in_flight", [self._in_flight], unit="{attempt}", description="Attempts in flight"
        )
        meter.create_observable_gauge(
            "switchboard.deployment.circuit",
            [self._circuit],
            description="1 for the deployment's circuit state, 0 for the others",
        )
        meter.create_observable_gauge(
            "switchboard.deployment.rate_limit.headroom",
            [self._headroom],
            description="The fuller of its rate-limit buckets' fill, 0 to 1",
        )
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        global _metrics
        _metrics = self
        if self.listen is None:
            return
        host, _, port = self.listen.rpartition(":")
        app = web.Application()
        app.router.add_get("/metrics", self._scrape)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, int(port))
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    @property
    def where(self) -> str | None:
        """Where /metrics is served; None when metrics are only pushed."""
        if self.listen is None:
            return None
        host = self.listen.rpartition(":")[0]
        return f"{host}:{self.port}"

    async def stop(self) -> None:
        global _metrics
        if _metrics is self:
            _metrics = None
        if self._runner is not None:
            await self._runner.cleanup()
        # Pushes what is left; off the loop, since the exporter blocks.
        await asyncio.to_thread(self._provider.shutdown)

    async def _scrape(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    def _in_flight(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(s.in_flight, {"switchboard.deployment": s.deployment}) for s in self._router.stats()]

    def _circuit(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(int(s.state == state), {"switchboard.deployment": s.deployment, "switchboard.circuit": state})
            for s in self._router.stats()
            for state in CIRCUIT_STATES
        ]

    def _headroom(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(s.headroom, {"switchboard.deployment": s.deployment}) for s in self._router.stats()]


def record_attempt(deployment: Deployment, duration_s: float, outcome: str, usage: Usage | None = None) -> None:
    """One attempt's end: `outcome` is `ok` or the failure's class."""
    if _metrics is None:
        return
    labels = attempt_attributes(deployment)
    if outcome != "ok":
        labels["error.type"] = outcome
    _metrics.operation_duration.record(duration_s, labels)
    if usage is not None:
        _metrics.token_usage.record(usage.input_tokens, {**labels, "gen_ai.token.type": "input"})
        _metrics.token_usage.record(usage.output_tokens, {**labels, "gen_ai.token.type": "output"})


def record_call(call: Call, status: str) -> None:
    if _metrics is None:
        return
    labels = {"rpc.method": call.method, "rpc.grpc.status_code": status, "switchboard.model_group": call.model_group}
    _metrics.calls.add(1, labels)
    _metrics.call_duration.record(call.elapsed_s(), labels)
    if call.ttft_ms is not None:
        served = {"switchboard.model_group": call.model_group, "switchboard.deployment": call.deployment}
        _metrics.time_to_first_token.record(call.ttft_ms / 1000, served)
    if call.cost_usd:
        _metrics.cost.add(call.cost_usd, {"switchboard.deployment": call.deployment})
