"""A private PostgreSQL database for calibration tests (the fit reads every job); job helpers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, delete, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from app.db import make_engine
from app.estimator.floor import OVERLAP_POWER_GPU, overlapped
from app.kit.migrate import upgrade_head
from app.models import Job
from tests.conftest import PG_ADMIN_URL
from tests.reports.factory import make_job


@pytest.fixture(scope="module")
def calib_pg_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database of this module's own."""
    name = f"tunecost_calib_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        pytest.fail(f"PostgreSQL is required for the tests and unreachable: {exc}")
    url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    upgrade_head(url)
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["postgresql", "sqlite"])
def session(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Session]:
    """An empty jobs table on PostgreSQL (private database) and on SQLite."""
    if request.param == "postgresql":
        url = request.getfixturevalue("calib_pg_url")
    else:
        url = f"sqlite:///{tmp_path / 'calib.db'}"
        upgrade_head(url)
    engine = make_engine(url)
    with Session(engine) as s:
        s.execute(delete(Job))
        s.commit()
        yield s
        s.rollback()
        s.execute(delete(Job))
        s.commit()
    engine.dispose()


def slowed_job(session: Session, *, slowdown: float, mem: float = 1.0, **kw: Any) -> Job:
    """A job whose matmuls took `slowdown` x the estimated time and peak was `mem` x estimated.

    Its training loop time is what the estimator's own breakdown gives with the compute term
    stretched: so the efficiency it implies is exactly mfu / slowdown.
    """
    job = make_job(session, **kw)
    t = job.estimate_snapshot["time"]
    device = (
        t["weight_stream_s"]
        + t["dequant_s"]
        + t["optimizer_s"]
        + t.get("adapter_s", 0)
        + t.get("elementwise_s", 0)
        + t["compute_s"] * slowdown
    )
    power = t.get("overlap_power") or OVERLAP_POWER_GPU
    train_s = overlapped(t.get("host_s", 0.0), device, power) + t["comm_s"]
    job.actuals = {"train_s": train_s}
    job.act_wall_s = t["overhead_s"] + train_s
    job.act_gpu_hours = job.act_wall_s / 3600 * job.num_gpus
    job.act_cost_usd = job.act_gpu_hours * job.price_per_gpu_hour
    assert job.est_peak_bytes is not None
    job.act_peak_bytes = int(job.est_peak_bytes * mem)
    session.flush()
    return job
