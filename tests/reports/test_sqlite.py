"""The same report queries on the embedded SQLite database (strftime buckets, JSON tag objects)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy.orm import Session

from app.db import make_engine
from app.jobs.filters import ReportFilters, parse_filters, parse_group_by
from app.kit.migrate import upgrade_head
from app.reports import focus, service
from app.reports.schemas import Bucket
from tests.reports.factory import edit_tags, make_job

DAYS = [
    datetime(2025, 2, 27, 23, 59, tzinfo=UTC),
    datetime(2025, 3, 2, 12, tzinfo=UTC),
    datetime(2025, 3, 3, 0, 0, tzinfo=UTC),
    datetime(2025, 3, 9, 8, tzinfo=UTC),
]


@pytest.fixture
def sqlite_session(sqlite_url: str) -> Iterator[Session]:
    upgrade_head(sqlite_url)
    engine = make_engine(sqlite_url)
    with Session(engine) as session:
        for i, day in enumerate(DAYS):
            make_job(
                session,
                method=("lora", "qlora")[i % 2],
                finished_at=day,
                act_hours=1.0 + i,
                tags={"team": "ab"[i // 2]},
            )
        session.commit()
        yield session
    engine.dispose()


def _filters() -> ReportFilters:
    return parse_filters(start=None, end=None, params={})


@pytest.mark.parametrize(
    ("bucket", "want"),
    [
        ("day", ["2025-02-27", "2025-03-02", "2025-03-03", "2025-03-09"]),
        ("week", ["2025-02-24", "2025-03-03"]),  # Mondays
        ("month", ["2025-02-01", "2025-03-01"]),
    ],
)
def test_spend_buckets(sqlite_session: Session, bucket: Bucket, want: list[str]) -> None:
    report = service.spend(
        sqlite_session, filters=_filters(), grouping=parse_group_by(None), bucket=bucket
    )
    assert [r.bucket_start for r in report.rows] == want
    assert sum(r.jobs for r in report.rows) == len(DAYS)
    assert sum(r.spend_usd for r in report.rows) == pytest.approx(4.0 * (1 + 2 + 3 + 4))


def test_grouped_by_tag_and_filtered_by_time(sqlite_session: Session) -> None:
    filters = parse_filters(start=datetime(2025, 3, 1, tzinfo=UTC), end=None, params={})
    report = service.estimate_vs_actual(
        sqlite_session, filters=filters, grouping=parse_group_by("tag:team")
    )
    got = {r.group: r.jobs for r in report.rows}
    assert got == {"a": 1, "b": 2}
    assert report.total.gpu_hours.actual == pytest.approx(2.0 + 3.0 + 4.0)


def test_focus_tags_are_objects(sqlite_session: Session) -> None:
    batches = focus.iter_batches(sqlite_session, _filters())
    rows = [focus.as_dict(r) for batch in batches for r in batch]
    assert [r["Tags"] for r in rows] == [{"team": t} for t in "aabb"]
    assert rows[0]["ChargePeriodEnd"] == "2025-02-27T23:59:00Z"
    assert rows[0]["PricingCategory"] == "Standard" and rows[0]["ChargeClass"] is None
    assert rows[0]["ChargeDescription"] == (
        "lora fine-tune of meta-llama/Llama-3.1-8B on 1x A100-80GB (on-demand, billed by aws), "
        "job succeeded"
    )
    assert rows[0]["BillingPeriodStart"] == "2025-02-01T00:00:00Z"
    assert rows[0]["BillingPeriodEnd"] == "2025-03-01T00:00:00Z"
    assert rows[0]["ProviderName"] == "AWS" and rows[0]["BilledCost"] == rows[0]["ListCost"]
    chunks = focus.stream(sqlite_session, _filters(), "json")
    text = "".join(c if isinstance(c, str) else c.decode() for c in chunks)
    assert [r["Tags"] for r in json.loads(text)["rows"]] == [{"team": t} for t in "aabb"]


def _export_tags(session: Session, fmt: str) -> dict[str, Any]:
    chunks = focus.stream(session, _filters(), fmt)
    text = "".join(c if isinstance(c, str) else c.decode() for c in chunks)
    if fmt == "csv":
        return {r["ResourceId"]: json.loads(r["Tags"]) for r in csv.DictReader(io.StringIO(text))}
    return {r["ResourceId"]: r["Tags"] for r in json.loads(text)["rows"]}


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_focus_tags_follow_edits(sqlite_session: Session, fmt: str) -> None:
    # The export reads each job's stored tags text, which the flush listener rewrites.
    first, second, third = sorted(_export_tags(sqlite_session, fmt))[:3]
    edit_tags(sqlite_session, first, {"team": "z", "env": "prod", "project": "p-1"})
    edit_tags(sqlite_session, second, {})
    edit_tags(sqlite_session, third, {"cost_center": "cc-07"})
    tags = _export_tags(sqlite_session, fmt)
    assert tags[first] == {"env": "prod", "project": "p-1", "team": "z"}
    assert list(tags[first]) == ["env", "project", "team"]  # keys in order
    assert tags[second] == {}
    assert tags[third] == {"cost_center": "cc-07"}
