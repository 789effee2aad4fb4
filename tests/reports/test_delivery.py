"""Scheduled FOCUS delivery: `celery beat` writes each billing period's rows as Parquet and
gzipped CSV with a manifest; pyarrow reads back exactly the API's FOCUS rows; a period whose rows
change is delivered again, the others are left as they were.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from sqlalchemy import update

from app.auth import service as keys_service
from app.config import Settings
from app.db import session_scope
from app.jobs.filters import ReportFilters
from app.kit.migrate import upgrade_head
from app.kit.queue import CONTROL_QUEUE, DELIVER_FOCUS_TASK, celery_config
from app.models import Job, Scope
from app.reports import delivery, focus
from tests.conftest import auth
from tests.reports.factory import make_job
from tests.support import ServiceEnv, WorkerProcess, pointed_at, start_control_worker, wait_for

pytestmark = pytest.mark.slow
MARCH, APRIL = "2025-03", "2025-04"
EVERY_H = "0.001"  # beat runs the delivery every 3.6 s here (hours in production)


@dataclass
class Delivered:
    root: Path
    admin: str
    worker: WorkerProcess
    jobs: dict[str, str]


@pytest.fixture(scope="module")
def delivered(
    isolated_db: str, service_env: ServiceEnv, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Delivered]:
    """Jobs of two tenants in March and April in a database of their own, and beat running."""
    root = tmp_path_factory.mktemp("focus-delivery")
    jobs: dict[str, str] = {}
    with session_scope() as session:
        _, admin = keys_service.create(session, name="focus admin", scope=Scope.ADMIN)
        for name, team, finished, extra in (
            ("a", "ml", datetime(2025, 3, 3, 10, tzinfo=UTC), {"tags": {"project": "x"}}),
            ("b", "ops", datetime(2025, 3, 20, 8, tzinfo=UTC), {"provider": "gcp", "price": 3.0}),
            ("c", "ml", datetime(2025, 4, 2, 9, tzinfo=UTC), {"gpu": "cpu", "provider": None}),
            ("d", "ml", datetime(2025, 4, 30, 23, tzinfo=UTC), {"tags": {"note": "=1+1"}}),
        ):
            jobs[name] = make_job(session, team=team, finished_at=finished, **extra).id
    variables = {
        "TUNECOST_DATABASE_URL": isolated_db,
        "TUNECOST_FOCUS_DELIVERY_URL": str(root),
        "TUNECOST_FOCUS_DELIVERY_EVERY_H": EVERY_H,
    }
    log = tmp_path_factory.mktemp("beat") / "control.log"
    with start_control_worker(
        service_env, log=log, extra_env=variables, beat_schedule=log.parent / "schedule"
    ) as worker:
        yield Delivered(root=root, admin=admin, worker=worker, jobs=jobs)


def _manifest(root: Path, label: str) -> dict[str, Any] | None:
    path = root / "manifests" / f"billing_period={label}" / "manifest.json"
    return dict(json.loads(path.read_text())) if path.exists() else None


def _api_rows(client: Any, admin: str, start: str, end: str) -> list[dict[str, Any]]:
    params = {"from": start, "to": end, "format": "json"}
    resp = client.get("/v1/reports/focus", params=params, headers=auth(admin))
    assert resp.status_code == 200, resp.text
    return list(resp.json()["rows"])


def _parquet_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a delivered Parquet file, written the way the API writes them in JSON."""
    out = []
    for row in pq.read_table(path).to_pylist():
        for name in delivery.TIMESTAMP_COLUMNS:
            if row[name] is not None:
                row[name] = row[name].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        row["Tags"] = json.loads(row["Tags"])
        out.append(row)
    return out


def _both(root: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    def ready() -> tuple[dict[str, Any], dict[str, Any]] | None:
        march, april = _manifest(root, MARCH), _manifest(root, APRIL)
        return (march, april) if march and april else None

    return wait_for(ready, timeout=90, what="beat to deliver March and April")


def test_beat_delivers_each_period_as_the_api_exports_it(
    app_client: Any, delivered: Delivered
) -> None:
    march, april = _both(delivered.root)
    for manifest, label in ((march, MARCH), (april, APRIL)):
        period = manifest["billing_period"]
        assert period["partition"] == f"billing_period={label}"
        assert manifest["schema_version"] == delivery.SCHEMA_VERSION
        assert manifest["focus_version"] == "1.2" and manifest["revision"] == 1
        api = _api_rows(app_client, delivered.admin, period["start"], period["end"])
        assert manifest["row_count"] == len(api) == 2
        files = {f["format"]: f for f in manifest["files"]}
        parquet = delivered.root / files["parquet"]["path"]
        # Row for row, column for column, what GET /v1/reports/focus answers.
        assert _parquet_rows(parquet) == api
        assert [c["name"] for c in manifest["columns"]] == list(pq.read_schema(parquet).names)
        csv_gz = delivered.root / files["csv.gz"]["path"]
        csv_text = gzip.decompress(csv_gz.read_bytes()).decode()
        params = {"from": period["start"], "to": period["end"], "format": "csv"}
        api_csv = app_client.get("/v1/reports/focus", params=params, headers=auth(delivered.admin))
        assert csv_text == api_csv.text
        assert manifest["rows_sha256"] == hashlib.sha256(csv_text.encode()).hexdigest()
        for entry in files.values():
            local = delivered.root / entry["path"]
            assert entry["bytes"] == local.stat().st_size
            assert entry["sha256"] == hashlib.sha256(local.read_bytes()).hexdigest()
    # The Parquet tree is one Hive-partitioned dataset.
    table = ds.dataset(delivered.root / "parquet", format="parquet", partitioning="hive")
    assert table.count_rows() == 4
    assert sorted(table.to_table().column("billing_period").to_pylist()) == [
        MARCH,
        MARCH,
        APRIL,
        APRIL,
    ]


def test_a_period_whose_rows_change_is_delivered_again_and_only_it(
    app_client: Any, delivered: Delivered
) -> None:
    march, april = _both(delivered.root)
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == delivered.jobs["c"]).values(act_cost_usd=12.5))

    def redelivered() -> dict[str, Any] | None:
        found = _manifest(delivered.root, APRIL)
        return found if found and found["revision"] == 2 else None

    again = wait_for(redelivered, timeout=90, what="April delivered again")
    assert again["supersedes"] == april["delivery_id"]
    assert again["rows_sha256"] != april["rows_sha256"]
    rows = _parquet_rows(delivered.root / again["files"][0]["path"])
    assert 12.5 in [r["ListCost"] for r in rows]
    period = again["billing_period"]
    assert rows == _api_rows(app_client, delivered.admin, period["start"], period["end"])
    # March's jobs did not change: its delivery stands as it was (beat has run since).
    assert _manifest(delivered.root, MARCH) == march


def test_beat_schedules_the_delivery_daily_by_default_on_the_control_queue() -> None:
    # Imported here, as tests/prices/test_schedule.py does: the Celery app reads the settings
    # when it is made, which must be the test services'.
    import worker.tasks  # noqa: F401 (registers the tasks)
    from worker.celery_app import celery_app

    entry = celery_config(Settings())["beat_schedule"]["deliver-focus"]
    assert entry == {
        "task": DELIVER_FOCUS_TASK,
        "schedule": 24 * 3600.0,
        "options": {"queue": CONTROL_QUEUE},
    }
    assert (
        "deliver-focus" not in celery_config(Settings(focus_delivery_every_h=None))["beat_schedule"]
    )
    assert DELIVER_FOCUS_TASK in celery_app.tasks


def test_the_embedded_sqlite_database_delivers_the_same_way(
    service_env: ServiceEnv, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'tunecost.db'}"
    upgrade_head(url)
    with pointed_at({"TUNECOST_DATABASE_URL": url, "TUNECOST_FOCUS_DELIVERY_URL": str(tmp_path)}):
        with session_scope() as session:
            for day in (3, 17):
                make_job(session, finished_at=datetime(2025, 6, day, 12, tzinfo=UTC))
        assert delivery.deliver_all() == {"2025-06": "delivered revision 1 (2 rows)"}
        assert delivery.deliver_all() == {"2025-06": "unchanged"}  # nothing changed since
        with session_scope() as session:
            filters = ReportFilters(
                start=datetime(2025, 6, 1, tzinfo=UTC), end=datetime(2025, 7, 1, tzinfo=UTC)
            )
            want = [focus.as_dict(r) for b in focus.iter_batches(session, filters) for r in b]
    got = _parquet_rows(tmp_path / "parquet" / "billing_period=2025-06" / "focus-2025-06.parquet")
    assert got == want and len(got) == 2
