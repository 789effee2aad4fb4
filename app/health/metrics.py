"""Prometheus metrics at GET /metrics (text format; needs a read-scope key, as reports do).

Job figures are read from the database at scrape time by a custom collector (three aggregate
queries), so every API replica reports the same numbers and nothing is lost on restart. Request
latency is measured in-process by a small ASGI middleware, per route template (not raw path, to
keep label cardinality bounded).

Tenancy holds here as in every report: a read or submit key gets the job figures of its own
tenant only; an admin key gets every tenant's and the request latency (which counts everyone's
requests). Scrape config: `authorization: {credentials: <admin key, or a team's read key>}`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import ColumnElement, Float, and_, case, cast, func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.auth.deps import ReadPrincipal
from app.auth.tenancy import visible
from app.db import session_scope
from app.models import Job, JobStatus
from app.models.peak import peak_estimate_column

log = logging.getLogger(__name__)

# Absolute relative error |estimate - actual| / actual: 5% is a good estimate, 2x is a miss.
ERROR_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0)
# API latencies from a fast JSON read (~ms) to a large streamed export (~s).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_ERROR_QUANTITIES = (
    ("cost_usd", Job.est_cost_usd, Job.act_cost_usd),
    ("gpu_hours", Job.est_gpu_hours, Job.act_gpu_hours),
    ("peak_bytes", peak_estimate_column(), Job.act_peak_bytes),  # like with like
)


class JobsCollector(Collector):
    """Jobs by status, GPU-hours and dollars by method and GPU, estimate error histograms; of
    the jobs `tenant` (an SQL condition) selects, or of every job."""

    def __init__(self, tenant: ColumnElement[bool] | None = None) -> None:
        self.where = [] if tenant is None else [tenant]

    def collect(self) -> Iterator[Metric]:
        """Read the figures from the database; on failure report `tunecost_metrics_db_up 0`."""
        up = GaugeMetricFamily("tunecost_metrics_db_up", "1 if the job figures could be read")
        try:
            with session_scope() as session:
                families = [
                    self._statuses(session, self.where),
                    *self._spend(session, self.where),
                    *self._errors(session, self.where),
                ]
        except Exception:  # a scrape must still answer when the database is down
            log.warning("metrics: reading job figures failed", exc_info=True)
            up.add_metric([], 0.0)
            yield up
            return
        up.add_metric([], 1.0)
        yield up
        yield from families

    @staticmethod
    def _statuses(session: Any, where: list[ColumnElement[bool]]) -> Metric:
        counts = dict(
            session.execute(
                select(Job.status, func.count()).where(*where).group_by(Job.status)
            ).all()
        )
        family = GaugeMetricFamily("tunecost_jobs", "Jobs by status", labels=["status"])
        for status in JobStatus:
            family.add_metric([status.value], float(counts.get(status.value, 0)))
        return family

    @staticmethod
    def _spend(session: Any, where: list[ColumnElement[bool]]) -> list[Metric]:
        rows = session.execute(
            select(
                Job.method,
                Job.gpu,
                func.coalesce(func.sum(Job.act_gpu_hours), 0.0),
                func.coalesce(func.sum(Job.act_cost_usd), 0.0),
            )
            .where(Job.finished_at.is_not(None), *where)
            .group_by(Job.method, Job.gpu)
        ).all()
        hours = CounterMetricFamily(
            "tunecost_gpu_hours", "GPU-hours of finished jobs", labels=["method", "gpu"]
        )
        dollars = CounterMetricFamily(
            "tunecost_cost_usd", "Dollars spent by finished jobs", labels=["method", "gpu"]
        )
        for method, gpu, gpu_hours, cost in rows:
            hours.add_metric([method, gpu], float(gpu_hours))
            dollars.add_metric([method, gpu], float(cost))
        return [hours, dollars]

    @staticmethod
    def _errors(session: Any, where: list[ColumnElement[bool]]) -> list[Metric]:
        columns: list[Any] = [Job.method]
        for name, est, act in _ERROR_QUANTITIES:
            rel = case(
                (
                    and_(est.is_not(None), act.is_not(None), act > 0),
                    func.abs(cast(est, Float) - cast(act, Float)) / cast(act, Float),
                )
            )
            columns += [func.count(rel).label(f"{name}_n"), func.sum(rel).label(f"{name}_sum")]
            columns += [
                func.sum(case((rel <= bound, 1), else_=0)).label(f"{name}_le_{i}")
                for i, bound in enumerate(ERROR_BUCKETS)
            ]
        rows = session.execute(
            select(*columns).where(Job.finished_at.is_not(None), *where).group_by(Job.method)
        ).mappings()
        family = HistogramMetricFamily(
            "tunecost_estimate_abs_error_ratio",
            "|estimate - actual| / actual of finished jobs",
            labels=["quantity", "method"],
        )
        for row in rows:
            for name, _, _ in _ERROR_QUANTITIES:
                buckets = [
                    (str(bound), float(row[f"{name}_le_{i}"] or 0))
                    for i, bound in enumerate(ERROR_BUCKETS)
                ]
                buckets.append(("+Inf", float(row[f"{name}_n"] or 0)))
                family.add_metric(
                    [name, row["method"]], buckets, sum_value=float(row[f"{name}_sum"] or 0.0)
                )
        return [family]


class LatencyMiddleware:
    """Observes each HTTP request's duration, labelled by method, route template and status."""

    def __init__(self, app: ASGIApp, *, histogram: Histogram) -> None:
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.histogram.labels(scope["method"], route, str(status)).observe(
                time.perf_counter() - start
            )


router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
)
def metrics(request: Request, principal: ReadPrincipal) -> Response:
    """Prometheus metrics: the key's tenant's job figures; every tenant's and request latency
    for an admin key."""
    registry: CollectorRegistry = request.app.state.metrics_registry
    if not principal.is_admin:
        registry = CollectorRegistry()
        mine = visible(principal, team=Job.team, created_by_key_id=Job.created_by_key_id)
        registry.register(JobsCollector(mine))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def install_metrics(app: FastAPI) -> None:
    """Give `app` its own registry, the DB collector, the latency middleware and GET /metrics."""
    registry = CollectorRegistry()
    registry.register(JobsCollector())
    histogram = Histogram(
        "tunecost_http_request_duration_seconds",
        "HTTP request duration, body included",
        labelnames=("method", "route", "status"),
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )
    app.state.metrics_registry = registry
    app.add_middleware(LatencyMiddleware, histogram=histogram)
    app.include_router(router)
