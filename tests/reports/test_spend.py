"""GET /v1/reports/spend: day, week and month buckets by any group, JSON and CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.models import Job
from app.reports.service import SPEND_COLUMNS
from tests.conftest import auth
from tests.reports.conftest import Seeded, billed, effective, group_key

URL = "/v1/reports/spend"


def _bucket(day: date, bucket: str) -> str:
    if bucket == "week":
        day = day - timedelta(days=day.weekday())  # Monday
    elif bucket == "month":
        day = day.replace(day=1)
    return day.isoformat()


def _expected(jobs: list[Job], bucket: str, key: Any) -> dict[tuple[str, Any], dict[str, float]]:
    out: dict[tuple[str, Any], dict[str, float]] = {}
    for job in jobs:
        assert job.finished_at is not None
        k = (_bucket(job.finished_at.date(), bucket), key(job) if key else None)
        row = out.setdefault(
            k,
            {
                "jobs": 0,
                "spend_usd": 0.0,
                "billed_usd": 0.0,
                "effective_usd": 0.0,
                "gpu_hours": 0.0,
            },
        )
        row["jobs"] += 1
        row["spend_usd"] += job.act_cost_usd or 0.0
        row["billed_usd"] += billed(job)
        row["effective_usd"] += effective(job)
        row["gpu_hours"] += job.act_gpu_hours or 0.0
    return out


@pytest.mark.parametrize("bucket", ["day", "week", "month"])
@pytest.mark.parametrize("group_by", [None, "method", "tag:team", "cost_source"])
def test_buckets_by_group(
    app_client: TestClient, keys: dict[str, str], seeded: Seeded, bucket: str, group_by: str | None
) -> None:
    params = {**seeded.scope, "bucket": bucket}
    if group_by:
        params["group_by"] = group_by
    r = app_client.get(URL, params=params, headers=auth(keys["admin"]))
    assert r.status_code == 200, r.text
    rows = r.json()["rows"]
    want = _expected(seeded.jobs, bucket, group_key(seeded, group_by) if group_by else None)
    got = {(row["bucket_start"], row["group"]): row for row in rows}
    assert set(got) == set(want)
    for k, row in got.items():
        assert row["jobs"] == want[k]["jobs"]
        for money in ("spend_usd", "billed_usd", "effective_usd"):
            assert row[money] == pytest.approx(want[k][money]), money
        assert row["gpu_hours"] == pytest.approx(want[k]["gpu_hours"])
    starts = [row["bucket_start"] for row in rows]
    assert starts == sorted(starts)


def test_week_starts_on_monday_and_month_on_the_first(
    app_client: TestClient, keys: dict[str, str], seeded: Seeded
) -> None:
    starts: dict[str, Callable[[date], bool]] = {
        "week": lambda d: d.weekday() == 0,
        "month": lambda d: d.day == 1,
    }
    for bucket, check in starts.items():
        r = app_client.get(
            URL, params={**seeded.scope, "bucket": bucket}, headers=auth(keys["admin"])
        )
        days = [date.fromisoformat(row["bucket_start"]) for row in r.json()["rows"]]
        assert days and all(check(d) for d in days)


def test_late_evening_utc_lands_on_its_utc_day(
    app_client: TestClient, keys: dict[str, str], seeded: Seeded
) -> None:
    # The failed job finished 2025-03-10 23:30 UTC; it must not slip into the 11th.
    r = app_client.get(
        URL, params={**seeded.scope, "status": "failed"}, headers=auth(keys["admin"])
    )
    assert [row["bucket_start"] for row in r.json()["rows"]] == ["2025-03-10"]


def test_csv(app_client: TestClient, keys: dict[str, str], seeded: Seeded) -> None:
    params = {**seeded.scope, "bucket": "month", "group_by": "gpu"}
    rows = app_client.get(URL, params=params, headers=auth(keys["admin"])).json()["rows"]
    r = app_client.get(URL, params={**params, "format": "csv"}, headers=auth(keys["admin"]))
    assert r.headers["content-type"].startswith("text/csv")
    reader = csv.DictReader(io.StringIO(r.text))
    assert tuple(reader.fieldnames or ()) == SPEND_COLUMNS
    parsed = list(reader)
    assert [(p["bucket_start"], p["group"]) for p in parsed] == [
        (row["bucket_start"], row["group"]) for row in rows
    ]
    assert [float(p["spend_usd"]) for p in parsed] == pytest.approx([r["spend_usd"] for r in rows])
