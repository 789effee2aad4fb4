"""A small set of finished jobs, tagged with a suite id no other test uses, and its expectations.

Expected figures are computed here in plain Python from the ORM rows read back, independently of
the SQL aggregation under test.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from app.db import session_scope
from app.models import Job, JobStatus, JobTag
from tests.reports.factory import GIB, make_job, unique


@dataclass
class Seeded:
    """The suite's id (its `suite` tag) and its jobs with their tags."""

    suite: str
    jobs: list[Job]
    tags: dict[str, dict[str, str]]

    @property
    def scope(self) -> dict[str, str]:
        """Query parameters that select exactly this suite's jobs."""
        return {"tag.suite": self.suite}


def _specs(suite: str) -> list[dict[str, Any]]:
    m1, m2, m3 = f"{suite}/m1", f"{suite}/m2", f"{suite}/m3"
    return [
        dict(
            method="lora",
            gpu="A100-80GB",
            model=m1,
            provider="aws",
            team="ml",
            tags={"team": "a", "project": "x"},
            est_hours=1.0,
            act_hours=2.0,
            est_peak=20 * GIB,
            act_peak=25 * GIB,
            finished_at=datetime(2025, 3, 3, 10, tzinfo=UTC),
        ),
        dict(
            method="lora",
            gpu="A100-80GB",
            model=m1,
            provider="aws",
            team="ml",
            tags={"team": "a"},
            est_hours=2.0,
            act_hours=1.0,
            est_peak=20 * GIB,
            act_peak=18 * GIB,
            finished_at=datetime(2025, 3, 4, 10, tzinfo=UTC),
        ),
        dict(
            team="ops",  # another tenant: only an admin key sees both
            method="qlora",
            gpu="H100-80GB-SXM",
            model=m2,
            provider="gcp",
            pricing="spot",
            status=JobStatus.FAILED,
            tags={"team": "b"},
            est_hours=1.0,
            act_hours=0.5,
            est_peak=10 * GIB,
            act_peak=None,
            price=3.0,
            finished_at=datetime(2025, 3, 10, 23, 30, tzinfo=UTC),
        ),
        dict(
            team="ops",  # another tenant: only an admin key sees both
            method="full",
            gpu="H100-80GB-SXM",
            model=m2,
            provider="gcp",
            num_gpus=4,
            status=JobStatus.BUDGET_EXCEEDED,
            tags={"team": "b", "project": "y"},
            est_hours=4.0,
            act_hours=2.0,
            est_peak=70 * GIB,
            act_peak=60 * GIB,
            price=3.0,
            finished_at=datetime(2025, 4, 2, 8, tzinfo=UTC),
        ),
        dict(
            team="ops",  # another tenant: only an admin key sees both
            method="qlora",
            gpu="A100-80GB",
            model=m1,
            provider=None,
            status=JobStatus.CANCELLED,
            tags={},
            act_hours=None,
            act_peak=None,
            finished_at=datetime(2025, 4, 15, 9, tzinfo=UTC),
        ),
        dict(
            method="lora",
            gpu="cpu",
            model=m3,
            provider=None,
            team="ml",
            tags={"team": "a"},
            est_hours=0.01,
            act_hours=0.02,
            price=0.0,
            est_peak=GIB,
            act_peak=3 * GIB,
            peak_kind="cpu_rss",
            finished_at=datetime(2025, 5, 1, 0, 0, tzinfo=UTC),
        ),
    ]


@pytest.fixture(scope="module")
def seeded(service_env: object) -> Seeded:
    """Six finished jobs over three months, methods, GPUs, providers, statuses and tags."""
    suite = unique("suite")
    ids = []
    tags: dict[str, dict[str, str]] = {}
    with session_scope() as session:
        for spec in _specs(suite):
            spec["tags"] = {**spec["tags"], "suite": suite}
            job = make_job(session, **spec)
            ids.append(job.id)
            tags[job.id] = spec["tags"]
    with session_scope() as session:
        jobs = list(session.scalars(select(Job).where(Job.id.in_(ids))))
        stored = session.execute(select(JobTag).where(JobTag.job_id.in_(ids))).scalars().all()
        assert len(stored) == sum(len(t) for t in tags.values())
    return Seeded(suite=suite, jobs=jobs, tags=tags)


KeyFn = Callable[[Job], Any]


def group_key(seeded: Seeded, group_by: str) -> KeyFn:
    """How a job maps to its group for a group_by value, in Python."""
    if group_by.startswith("tag:"):
        key = group_by.removeprefix("tag:")
        return lambda job: seeded.tags[job.id].get(key)
    column = {"model": "model_ref", "job": "id"}.get(group_by, group_by)
    return lambda job: (lambda v: None if v is None else str(v))(getattr(job, column))


def _quantity(jobs: list[Job], est: str, act: str, mean: bool) -> dict[str, Any]:
    pairs = [
        (float(getattr(j, est)), float(getattr(j, act)))
        for j in jobs
        if getattr(j, est) is not None and getattr(j, act) is not None
    ]
    rel = [(e - a) / a for e, a in pairs if a > 0]
    agg = statistics.fmean if mean else sum
    return {
        "n": len(pairs),
        "estimated": agg(e for e, _ in pairs) if pairs else None,
        "actual": agg(a for _, a in pairs) if pairs else None,
        "mean_error": statistics.fmean(e - a for e, a in pairs) if pairs else None,
        "mean_pct_error": statistics.fmean(rel) * 100 if rel else None,
        "mape_pct": statistics.fmean(abs(r) for r in rel) * 100 if rel else None,
    }


def billed(job: Job) -> float:
    """What a provider invoices for the job: its metered cost when cloud-billed, else 0."""
    return (job.act_cost_usd or 0.0) if job.cost_source == "cloud" else 0.0


def effective(job: Job) -> float:
    """The job's cost to the organisation: billed, or GPU-hours x internal rate."""
    if job.act_cost_usd is None:
        return 0.0
    if job.cost_source == "cloud":
        return job.act_cost_usd
    return (job.act_gpu_hours or 0.0) * (job.internal_usd_per_gpu_hour or 0.0)


def expected_row(jobs: list[Job]) -> dict[str, Any]:
    """The report row these jobs should aggregate to."""
    return {
        "jobs": len(jobs),
        "spend_usd": sum(j.act_cost_usd or 0.0 for j in jobs),
        "billed_usd": sum(billed(j) for j in jobs),
        "effective_usd": sum(effective(j) for j in jobs),
        "cost_usd": _quantity(jobs, "est_cost_usd", "act_cost_usd", mean=False),
        "gpu_hours": _quantity(jobs, "est_gpu_hours", "act_gpu_hours", mean=False),
        "peak_bytes": _quantity(jobs, "est_peak_bytes", "act_peak_bytes", mean=True),
    }


def expected_groups(jobs: list[Job], key: KeyFn) -> dict[Any, dict[str, Any]]:
    """Expected rows by group value."""
    groups: dict[Any, list[Job]] = {}
    for job in jobs:
        groups.setdefault(key(job), []).append(job)
    return {k: expected_row(v) for k, v in groups.items()}
