"""Seeding finished jobs straight into the database, as the worker would have left them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Job, JobStatus, JobTag

GIB = 1024**3


def snapshot(
    *,
    method: str,
    gpu: str,
    num_gpus: int,
    hours: float,
    price: float,
    peak_bytes: int,
    mfu: float,
    overhead_s: float = 60.0,
    basis: str = "prior",
) -> dict[str, Any]:
    """A stored MethodResult-shaped estimate: time split into compute and fixed parts."""
    total_s = hours * 3600.0
    compute_s = max(total_s - overhead_s, 0.0) * 0.9
    other_s = max(total_s - overhead_s, 0.0) - compute_s
    return {
        "method": method,
        "gpu": gpu,
        "num_gpus": num_gpus,
        "hours": hours,
        "gpu_hours": hours * num_gpus,
        "cost_usd": hours * num_gpus * price,
        "price_per_gpu_hour": price,
        "mfu": mfu,
        "basis": basis,
        "calibration_jobs": 0,
        "steps": 100,
        "memory": {"per_gpu_bytes": peak_bytes, "low_bytes": peak_bytes, "high_bytes": peak_bytes},
        "time": {
            "compute_s": compute_s,
            "weight_stream_s": 0.0,
            "dequant_s": 0.0,
            "optimizer_s": other_s,
            "comm_s": 0.0,
            "overhead_s": overhead_s,
            "total_s": total_s,
        },
    }


def make_job(
    session: Session,
    *,
    method: str = "lora",
    gpu: str = "A100-80GB",
    num_gpus: int = 1,
    model: str = "meta-llama/Llama-3.1-8B",
    provider: str | None = "aws",
    pricing: str = "on_demand",
    status: JobStatus | str = JobStatus.SUCCEEDED,
    team: str | None = "ml",  # the test keys' tenant (tests/conftest.py keys)
    tags: dict[str, str] | None = None,
    finished_at: datetime | None = None,
    est_hours: float = 1.0,
    act_hours: float | None = 1.0,
    price: float = 4.0,
    est_peak: int = 20 * GIB,
    est_allocated: int | None = None,
    act_peak: int | None = 20 * GIB,
    peak_kind: str = "cuda_max_reserved",
    mfu: float = 0.36,
    basis: str = "prior",
    overhead_s: float = 60.0,
    complete_run: bool | None = None,
    snap: dict[str, Any] | None = None,
    act_wall_s: float | None = None,
    act_cost: float | None = None,
    train_s: float | None = None,
    cost_source: str | None = None,
    internal_rate: float = 0.02,
    region: str | None = None,
) -> Job:
    """A finished job with an estimate and (unless None) actuals; flushed, not committed.

    `snap` replaces the synthetic estimate (e.g. a real MethodResult); the est_* columns then
    come from it, as the jobs service copies them. Provenance as a worker with no cost-source
    setting stamps it: self-hosted on CPU (or without a provider), else billed by `provider`.
    """
    if cost_source is None:
        cost_source = "self_hosted" if gpu == "cpu" or provider is None else "cloud"
    finished = finished_at or datetime(2025, 3, 10, 12, tzinfo=UTC)
    if snap is None:
        snap = snapshot(
            method=method,
            gpu=gpu,
            num_gpus=num_gpus,
            hours=est_hours,
            price=price,
            peak_bytes=est_peak,
            mfu=mfu,
            overhead_s=overhead_s,
            basis=basis,
        )
    else:
        est_peak = int(snap["memory"]["per_gpu_bytes"])
    status = JobStatus(status)
    full = status == JobStatus.SUCCEEDED if complete_run is None else complete_run
    job = Job(
        id=f"job_{uuid.uuid4().hex}",
        status=status,
        method=method,
        model_ref=model,
        gpu=gpu,
        num_gpus=num_gpus,
        provider=provider,
        pricing=pricing,
        queue=f"gpu.{gpu}",
        team=team,
        request_hash=uuid.uuid4().hex,
        spec={},
        estimate_snapshot=snap,
        price_per_gpu_hour=price,
        est_cost_usd=snap.get("cost_usd"),
        est_gpu_hours=snap["gpu_hours"],
        est_peak_bytes=est_peak,
        est_allocated_bytes=est_allocated,
        est_artifact_bytes=1000,
        created_at=finished - timedelta(hours=(act_hours or 0) + 0.1),
        started_at=finished - timedelta(hours=act_hours or 0),
        finished_at=finished,
        attempts=1,
        cost_source=cost_source,
        billing_provider=provider if cost_source == "cloud" else None,
        internal_usd_per_gpu_hour=internal_rate if cost_source == "self_hosted" else None,
        region=region,
        list_price_reference=f"{provider} {gpu} {pricing}",
    )
    if act_hours is not None:
        job.act_wall_s = act_wall_s if act_wall_s is not None else act_hours * 3600.0
        job.act_gpu_hours = act_hours * num_gpus
        job.act_cost_usd = act_cost if act_cost is not None else act_hours * num_gpus * price
        job.errors = {"complete_run": full}
        job.actuals = {"train_s": train_s} if train_s is not None else {}
    if act_peak is not None:
        job.act_peak_bytes = act_peak
        job.act_peak_kind = peak_kind
    session.add(job)
    session.flush()
    for key, value in (tags or {}).items():
        session.add(JobTag(job_id=job.id, key=key, value=value))
    session.flush()
    return job


def edit_tags(session: Session, job_id: str, tags: dict[str, str]) -> None:
    """Make a job's tags `tags` through the ORM: rows deleted, changed and added, then commit."""
    have = {t.key: t for t in session.scalars(select(JobTag).where(JobTag.job_id == job_id))}
    for key, row in have.items():
        if key not in tags:
            session.delete(row)
        elif row.value != tags[key]:
            row.value = tags[key]
    session.add_all(JobTag(job_id=job_id, key=k, value=v) for k, v in tags.items() if k not in have)
    session.commit()


def unique(prefix: str) -> str:
    """A name no other test uses (the database is shared by the whole session)."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"
