"""GET /metrics: figures read from the database at scrape time, plus request latency."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from app.db import session_scope
from app.models import Job, JobStatus
from tests.conftest import auth
from tests.reports.conftest import Seeded


def _samples(text: str) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


def _value(samples: list[Any], **labels: str) -> float:
    found = [s.value for s in samples if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (labels, samples)
    return float(found[0])


def test_needs_a_read_key(app_client: TestClient) -> None:
    assert app_client.get("/metrics").status_code == 401


def test_job_figures_match_the_database(
    app_client: TestClient, keys: dict[str, str], seeded: Seeded
) -> None:
    app_client.get("/v1/reports/spend", headers=auth(keys["read"]))
    r = app_client.get("/metrics", headers=auth(keys["read"]))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    samples = _samples(r.text)
    mine = Job.team == "ml"  # the read key's tenant: it sees its own jobs only
    with session_scope() as session:
        statuses = select(Job.status, func.count()).group_by(Job.status)
        counts: dict[str, int] = {k: n for k, n in session.execute(statuses.where(mine))}
        hours = session.scalar(
            select(func.sum(Job.act_gpu_hours)).where(
                Job.method == "full",
                Job.gpu == "H100-80GB-SXM",
                Job.finished_at.is_not(None),
            )
        )
        compared = session.scalar(
            select(func.count()).where(
                mine,
                Job.method == "lora",
                Job.finished_at.is_not(None),
                Job.est_cost_usd.is_not(None),
                Job.act_cost_usd > 0,
            )
        )
    assert _value(samples["tunecost_metrics_db_up"]) == 1.0
    for status in JobStatus:
        assert _value(samples["tunecost_jobs"], status=status.value) == counts.get(status, 0)
    # The seeded H100 jobs are team ops's: not in team ml's figures.
    assert all(s.labels["gpu"] != "H100-80GB-SXM" for s in samples["tunecost_gpu_hours_total"])
    assert (
        _value(
            samples["tunecost_estimate_abs_error_ratio_count"], quantity="cost_usd", method="lora"
        )
        == compared
    )
    buckets = [
        s
        for s in samples["tunecost_estimate_abs_error_ratio_bucket"]
        if s.labels["quantity"] == "cost_usd" and s.labels["method"] == "lora"
    ]
    values = [s.value for s in buckets]
    assert values == sorted(values) and values[-1] == compared  # cumulative
    # Request latency counts every tenant's requests: an admin key's alone.
    assert "tunecost_http_request_duration_seconds_count" not in samples
    admin = _samples(app_client.get("/metrics", headers=auth(keys["admin"])).text)
    latency = admin["tunecost_http_request_duration_seconds_count"]
    assert _value(latency, route="/v1/reports/spend", method="GET", status="200") >= 1
    with session_scope() as session:
        every: dict[str, int] = {k: n for k, n in session.execute(statuses)}
    for status in JobStatus:
        assert _value(admin["tunecost_jobs"], status=status.value) == every.get(status, 0)
    got = _value(admin["tunecost_gpu_hours_total"], method="full", gpu="H100-80GB-SXM")
    assert got == hours and got >= 8.0  # the seeded 4-GPU job ran 2 h
