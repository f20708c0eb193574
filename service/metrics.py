"""The metrics of `service.measured`, scraped by Prometheus at
`http://<telemetry.metrics_listen>/metrics`, pushed over OTLP to `telemetry.otlp_endpoint` every
`metrics_push_interval_s`, or both. Nothing is recorded for them on the request path: each
scrape or push reads the router's counters, so turning them on costs a call nothing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator

from aiohttp import web
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric as PrometheusFamily

import router_core
from service.config import Deployment, TelemetrySettings
from service.measured import Attributes, Family, families
from service.otlp import metric_exporter

log = logging.getLogger(__name__)

Deployments = Callable[[], Iterable[Deployment]]


class Metrics:
    """The /metrics endpoint and the OTLP push, while a gateway that asks for them runs."""

    def __init__(self, settings: TelemetrySettings, router: router_core.Router, deployments: Deployments) -> None:
        self.listen = settings.metrics_listen
        self._router = router
        self._deployments = deployments
        self.registry = CollectorRegistry()
        self.registry.register(_Collector(self.read))
        self._started_ns = time.time_ns()
        self._resource = Resource.create({"service.name": settings.service_name})
        self._exporter: MetricExporter | None = None
        self._push_interval_s = settings.metrics_push_interval_s
        if settings.otlp_endpoint is not None and settings.metrics_push_interval_s > 0:
            self._exporter = metric_exporter(settings)
        self._runner: web.AppRunner | None = None
        self._pushing: asyncio.Task[None] | None = None
        self.port = 0

    def read(self) -> list[Family]:
        return families(self._router, self._deployments())

    async def start(self) -> None:
        if self._exporter is not None:
            self._pushing = asyncio.create_task(self._push_every_interval())
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
        if self._runner is not None:
            await self._runner.cleanup()
        if self._pushing is not None:
            self._pushing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pushing
        if self._exporter is not None:
            await self._push()  # what is left
            await asyncio.to_thread(self._exporter.shutdown)

    async def _scrape(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _push_every_interval(self) -> None:
        while True:
            await asyncio.sleep(self._push_interval_s)
            await self._push()

    async def _push(self) -> None:
        assert self._exporter is not None
        data = otlp_data(self.read(), self._resource, self._started_ns)
        # Off the loop: the exporter blocks, retrying for a while when the receiver is away.
        result = await asyncio.to_thread(self._exporter.export, data)
        if result.name != "SUCCESS":
            log.warning("metrics push to the OTLP endpoint failed (%s)", result.name)


class _Collector:
    """The metrics in Prometheus's terms, read at each scrape."""

    def __init__(self, read: Callable[[], list[Family]]) -> None:
        self._read = read

    def collect(self) -> Iterator[PrometheusFamily]:
        for family in self._read():
            yield prometheus_family(family)


def prometheus_family(family: Family) -> PrometheusFamily:
    """Named as OpenTelemetry's Prometheus exporter names them: dots to underscores, the unit as
    a suffix (seconds for s; none for annotations such as {token} or for 1), `_total` on
    counters, labels likewise."""
    name = re.sub(r"[^a-zA-Z0-9_:]", "_", family.name)
    unit = {"s": "seconds", "1": ""}.get(family.unit, re.sub(r"\{[^}]*\}", "", family.unit))
    labelled = [({_label(k): v for k, v in labels.items()}, value) for labels, value in family.points]
    keys = sorted({key for labels, _ in labelled for key in labels})
    made: PrometheusFamily
    if family.kind == "histogram":
        made = HistogramMetricFamily(name, family.description, labels=keys, unit=unit)
        for labels, value in labelled:
            assert isinstance(value, router_core.Distribution)
            made.add_metric([labels.get(k, "") for k in keys], _cumulative(value), value.sum)
        return made
    kind = CounterMetricFamily if family.kind == "counter" else GaugeMetricFamily
    made = kind(name, family.description, labels=keys, unit=unit)
    for labels, value in labelled:
        assert isinstance(value, int | float)
        made.add_metric([labels.get(k, "") for k in keys], value)
    return made


def _label(key: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", key)


def _cumulative(distribution: router_core.Distribution) -> list[tuple[str, float]]:
    buckets: list[tuple[str, float]] = []
    total = 0
    for bound, count in zip([*map(str, distribution.bounds), "+Inf"], distribution.counts, strict=True):
        total += count
        buckets.append((bound, total))
    return buckets


def otlp_data(read: list[Family], resource: Resource, started_ns: int) -> MetricsData:
    """The metrics as OpenTelemetry's SDK hands them to an exporter: cumulative since `started_ns`."""
    now = time.time_ns()
    cumulative = AggregationTemporality.CUMULATIVE
    metrics = []
    for family in read:
        data: Histogram | Sum | Gauge
        if family.kind == "histogram":
            points = [_histogram_point(labels, value, started_ns, now) for labels, value in family.points]
            data = Histogram(data_points=points, aggregation_temporality=cumulative)
        else:
            numbers = [
                NumberDataPoint(
                    attributes=dict(labels), start_time_unix_nano=started_ns, time_unix_nano=now, value=value
                )
                for labels, value in family.points
                if isinstance(value, int | float)
            ]
            if family.kind == "counter":
                data = Sum(data_points=numbers, aggregation_temporality=cumulative, is_monotonic=True)
            else:
                data = Gauge(data_points=numbers)
        metrics.append(Metric(family.name, family.description, family.unit, data))
    scope = ScopeMetrics(InstrumentationScope("switchboard"), metrics, schema_url="")
    return MetricsData([ResourceMetrics(resource, [scope], schema_url="")])


def _histogram_point(
    labels: Attributes, value: float | router_core.Distribution, started_ns: int, now: int
) -> HistogramDataPoint:
    assert isinstance(value, router_core.Distribution)
    return HistogramDataPoint(
        attributes=dict(labels),
        start_time_unix_nano=started_ns,
        time_unix_nano=now,
        count=value.count,
        sum=value.sum,
        bucket_counts=value.counts,
        explicit_bounds=value.bounds,
        # Not kept: the histograms count, they do not remember extremes.
        min=None,  # type: ignore[arg-type]
        max=None,  # type: ignore[arg-type]
    )
