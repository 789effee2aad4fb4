"""What one finished job says about its (GPU, method): an efficiency and a memory ratio.

Only succeeded jobs that ran to the end count; a run stopped by its budget or a cancel is not a
full run and would bias the time. The efficiency is the one that makes the estimator's own time
model (`TimeBreakdown` in app/estimator/compute.py, stored on the job) reproduce the measured
time: the bandwidth-bound device terms and the host floor are taken as modelled and the matmul
term absorbs the rest. The measured training-loop time is used where the worker
recorded it (start-up is then left out on both sides); otherwise the wall time less the
modelled start-up and saving.

Only jobs that ran what their estimate described count: a job submitted with an estimate of one
model (or dataset) and trained on another is compared with nothing it ran, so it is left out
(`as_estimated` in its spec, decided at submit). And each tenant's estimates are calibrated by
that tenant's jobs alone (`tenant`): no team's jobs move another team's estimates.

The memory ratio compares the measured peak with the estimator's uncalibrated peak: a snapshot
made with a calibrated memory factor is divided by that factor when it recorded it, and left out
of the memory fit when it did not (otherwise the fit would chase its own corrections).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from app.calibration.time_fit import TimeSample
from app.estimator.floor import OVERLAP_POWER_GPU, overlapped
from app.models import Job, JobStatus
from app.models.peak import peak_estimate_column

# The modelled fixed terms must leave at least this share of the measured wall time to the
# matmuls; below it the fitted efficiency is mostly noise in the start-up model (tiny CPU runs).
MIN_COMPUTE_SHARE = 0.1
# Newest jobs read per (GPU, method): enough for a stable median, bounded work per fit, and
# recent runs reflect the current software stack.
MAX_JOBS_PER_GROUP = 200
# The device's bandwidth-bound terms of a stored time breakdown (what overlaps the host).
_DEVICE_TERMS = ("weight_stream_s", "dequant_s", "optimizer_s", "adapter_s", "elementwise_s")


class _Snap(BaseModel):
    model_config = ConfigDict(frozen=True)


class SnapshotTime(_Snap):
    """The modelled time terms of the snapshot (app/estimator/results.py `TimeOut`), seconds."""

    compute_s: float | None = None
    overhead_s: float = 0.0
    micro_steps: float | None = None
    weight_stream_s: float = 0.0
    dequant_s: float = 0.0
    optimizer_s: float = 0.0
    comm_s: float = 0.0
    paging_s: float = 0.0  # paged optimizer states to host and back: like comm_s, not overlapped
    adapter_s: float = 0.0
    elementwise_s: float = 0.0
    host_s: float = 0.0
    host_scale: float | None = None
    mfu_peak: float | None = None
    overlap_power: float | None = None

    @property
    def device_s(self) -> float:
        """The bandwidth-bound device terms, taken as modelled by the fit."""
        return (
            self.weight_stream_s
            + self.dequant_s
            + self.optimizer_s
            + self.adapter_s
            + self.elementwise_s
        )


class JobScaled(_Snap):
    """What the job ran of the estimate (app/jobs/snapshot.py `Snapshot.as_json`)."""

    steps: float | None = None


class FitSnapshot(_Snap):
    """The parts of a job's stored estimate snapshot (a `MethodResult` plus `job_scaled`) that
    the fit reads; a part the snapshot lacks takes its default."""

    mfu: float | None = None
    steps: float | None = None
    basis: str = "prior"
    memory_factor: float | None = None
    job_scaled: JobScaled = Field(default_factory=JobScaled)
    time: SnapshotTime = Field(default_factory=SnapshotTime)


@dataclass(frozen=True)
class JobSample:
    """One job's contribution to the fit of its (GPU, method)."""

    job_id: str
    gpu: str
    method: str
    finished_at: datetime
    efficiency: float | None
    efficiency_source: str | None  # "train_time", "wall_time", "hours_ratio", "measured_mfu"
    memory_ratio: float | None  # measured peak / estimated peak
    peak_kind: str | None  # what the measured peak is: CUDA reserved/allocated, or CPU RSS
    time: TimeSample | None = None  # the metered phases against the modelled terms


def _pos(value: float | None) -> float | None:
    if value is not None and value > 0:
        return float(value)
    return None


def step_fraction(snapshot: FitSnapshot) -> float:
    """The job's optimizer steps (max_steps) over the estimate's, 1 when it ran the estimate's."""
    steps, scaled = _pos(snapshot.steps), _pos(snapshot.job_scaled.steps)
    if steps and scaled:
        return scaled / steps
    return 1.0


@dataclass(frozen=True)
class _Terms:
    """A stored time breakdown's loop terms at efficiency 1 and host factor 1, scaled to the
    steps the job ran."""

    unit_compute_s: float
    device_s: float
    host_s: float
    comm_s: float
    power: float
    prior_mfu: float
    own_host_scale: float  # the calibrated host factor the estimate was made with (1: prior)

    def loop_s(self, host_scale: float, mfu: float) -> float:
        device = self.device_s + self.unit_compute_s / mfu
        return overlapped(self.host_s * host_scale, device, self.power) + self.comm_s


def _terms(snapshot: FitSnapshot) -> _Terms | None:
    time = snapshot.time
    own_mfu, compute = _pos(snapshot.mfu), _pos(time.compute_s)
    if own_mfu is None or compute is None:
        return None
    peak = _pos(time.mfu_peak) or own_mfu  # estimates made before the work roll-off
    frac = step_fraction(snapshot)
    host_scale = _pos(time.host_scale) or 1.0
    return _Terms(
        unit_compute_s=frac * compute * peak,
        device_s=frac * time.device_s,
        host_s=frac * time.host_s / host_scale,
        comm_s=frac * (time.comm_s + time.paging_s),
        power=_pos(time.overlap_power) or OVERLAP_POWER_GPU,
        prior_mfu=peak,
        own_host_scale=host_scale,
    )


def modelled_seconds(
    snapshot: FitSnapshot,
    *,
    mfu: float | None = None,
    run_overhead_s: float | None = None,
    host_scale: float | None = None,
) -> float | None:
    """The snapshot's wall time re-derived (scaled to the job's steps).

    `mfu` (large-matmul efficiency), `run_overhead_s` and `host_scale` replace the snapshot's
    own when given (a calibration's terms); otherwise the snapshot's are kept.
    """
    terms = _terms(snapshot)
    if terms is None or (mfu is not None and mfu <= 0):
        return None
    fixed = snapshot.time.overhead_s if run_overhead_s is None else run_overhead_s
    return fixed + terms.loop_s(host_scale or terms.own_host_scale, mfu or terms.prior_mfu)


def steady_loop_s(train_s: float | None, warmup_s: float | None) -> float | None:
    """The training loop without its first step's one-time set-up (`warmup_s`, metered by the
    worker): that set-up is paid once per run, so the fit counts it with the run overhead."""
    if not train_s:
        return train_s
    return train_s - min(max(warmup_s or 0.0, 0.0), train_s)


def time_sample(
    job_id: str, snapshot: FitSnapshot, *, wall_s: float | None, train_s: float | None
) -> TimeSample | None:
    """The job's metered phases beside the snapshot's modelled terms (None if either is missing).

    Snapshots made before the estimate recorded micro-steps cannot say how many steps ran.
    """
    terms = _terms(snapshot)
    micro = _pos(snapshot.time.micro_steps)
    if terms is None or not (wall_s and train_s and micro) or train_s > wall_s:
        return None
    return TimeSample(
        estimated_wall_s=modelled_seconds(snapshot),
        job_id=job_id,
        outside_s=wall_s - train_s,
        train_s=train_s,
        micro_steps=micro * step_fraction(snapshot),
        unit_compute_s=terms.unit_compute_s,
        device_s=terms.device_s,
        host_s=terms.host_s,
        comm_s=terms.comm_s,
        overlap_power=terms.power,
        prior_mfu=terms.prior_mfu,
    )


def raw_peak_bytes(snapshot: FitSnapshot, est_peak: float | None) -> float | None:
    """The estimator's peak before any calibrated memory factor; None when it cannot be known."""
    if not est_peak or est_peak <= 0:
        return None
    factor = _pos(snapshot.memory_factor)
    if factor is not None:
        return est_peak / factor
    if snapshot.basis == "prior":
        return float(est_peak)
    return None


def job_efficiency(
    snapshot: FitSnapshot,
    *,
    wall_s: float | None,
    train_s: float | None = None,
    est_gpu_hours: float | None = None,
    act_gpu_hours: float | None = None,
    act_mfu: float | None = None,
) -> tuple[float | None, str | None]:
    """The efficiency this job implies, and how it was derived (None when it cannot tell)."""
    mfu = _pos(snapshot.mfu)
    terms = _terms(snapshot)
    if terms is not None and (train_s or wall_s):
        if train_s:
            measured, fixed, source = train_s, 0.0, "train_time"
        else:
            measured, fixed, source = float(wall_s or 0.0), snapshot.time.overhead_s, "wall_time"
        # the device time that, overlapped with the modelled host, gives the measured loop
        loop = measured - fixed - terms.comm_s
        host, power = terms.host_s * terms.own_host_scale, terms.power
        if loop > host:
            device = (loop**power - host**power) ** (1.0 / power)
            remaining = device - terms.device_s
            if remaining >= MIN_COMPUTE_SHARE * measured:
                return terms.unit_compute_s / remaining, source
    elif mfu is not None and est_gpu_hours and act_gpu_hours:
        # No time breakdown stored: scale the whole estimate (overheads included).
        return mfu * est_gpu_hours / act_gpu_hours, "hours_ratio"
    if act_mfu is not None and act_mfu > 0:
        return float(act_mfu), "measured_mfu"
    return None, None


# The parts of a stored estimate (MethodResult JSON) the fit reads: (path, kind).
_SNAPSHOT_FIELDS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("mfu",), "float"),
    (("steps",), "float"),
    (("basis",), "string"),
    (("memory_factor",), "float"),
    (("job_scaled", "steps"), "float"),
    *(
        (("time", part), "float")
        for part in (
            "compute_s",
            "overhead_s",
            "micro_steps",
            "comm_s",
            "paging_s",
            "host_s",
            "host_scale",
            "mfu_peak",
            "overlap_power",
            *_DEVICE_TERMS,
        )
    ),
)


def snapshot_columns() -> list[Any]:
    """SQL expressions extracting the fields the fit reads, not the whole (~kB) snapshot."""
    out = []
    for path, kind in _SNAPSHOT_FIELDS:
        element = Job.estimate_snapshot[path] if len(path) > 1 else Job.estimate_snapshot[path[0]]
        value = element.as_float() if kind == "float" else element.as_string()
        out.append(value.label("snap_" + "_".join(path)))
    return out


def snapshot_from_row(row: Any) -> FitSnapshot:
    """The extracted fields read back as the snapshot's fit view (absent ones take defaults)."""
    snap: dict[str, Any] = {}
    for path, _ in _SNAPSHOT_FIELDS:
        value = getattr(row, "snap_" + "_".join(path))
        if value is None:
            continue
        node = snap
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return FitSnapshot.model_validate(snap)


def load_samples(
    session: Session,
    *,
    exclude_job_ids: Sequence[str] = (),
    finished_before: datetime | None = None,
    finished_from: datetime | None = None,
    per_group: int | None = MAX_JOBS_PER_GROUP,
    tenant: ColumnElement[bool] | None = None,
) -> list[JobSample]:
    """Samples of succeeded full runs that ran as estimated, newest `per_group` per (GPU,
    method), in time order; only the jobs `tenant` (an SQL condition) selects."""
    # Columns of ix_jobs_calibration, and the tenant's: the ranking below reads no JSON.
    where = [Job.status == JobStatus.SUCCEEDED, Job.finished_at.is_not(None)]
    if tenant is not None:
        where.append(tenant)
    if exclude_job_ids:
        where.append(Job.id.not_in(list(exclude_job_ids)))
    if finished_before is not None:
        where.append(Job.finished_at < finished_before)
    if finished_from is not None:
        where.append(Job.finished_at >= finished_from)
    columns = (
        Job.id,
        Job.gpu,
        Job.method,
        Job.finished_at,
        Job.act_wall_s,
        Job.act_mfu,
        Job.act_gpu_hours,
        Job.est_gpu_hours,
        Job.act_peak_bytes,
        Job.act_peak_kind,
        peak_estimate_column().label("est_peak_compared"),
        Job.errors["complete_run"].as_boolean().label("complete_run"),
        Job.spec["as_estimated"].as_boolean().label("as_estimated"),
        Job.actuals["train_s"].as_float().label("train_s"),
        Job.actuals["warmup_s"].as_float().label("warmup_s"),
        *snapshot_columns(),
    )
    if per_group is not None:
        # Rank on narrow rows (index-only on PostgreSQL, ix_jobs_calibration), then read the
        # kept jobs' other columns by primary key.
        group = (Job.gpu, Job.method)
        # Ascending order with the group size, so the index's own order serves: the newest
        # `per_group` are those ranked past size - per_group.
        rank = func.row_number().over(partition_by=group, order_by=(Job.finished_at, Job.id))
        size = func.count().over(partition_by=group)
        ranked = (
            select(Job.id.label("job_id"), rank.label("rank"), size.label("size"))
            .where(*where)
            .subquery()
        )
        newest = ranked.c.rank > ranked.c.size - per_group
        ids = list(session.scalars(select(ranked.c.job_id).where(newest)))
        where = [Job.id.in_(ids)]
    measured = Job.act_wall_s.is_not(None)
    rows = session.execute(
        select(*columns).where(*where, measured).order_by(Job.finished_at, Job.id)
    )
    out = []
    for r in rows:
        if r.complete_run is False:
            continue  # succeeded but not the planned run: not comparable
        if r.as_estimated is False:
            continue  # trained another model or dataset than its estimate described
        snapshot = snapshot_from_row(r)
        loop_s = steady_loop_s(r.train_s, r.warmup_s)
        efficiency, source = job_efficiency(
            snapshot,
            wall_s=r.act_wall_s,
            train_s=loop_s,
            est_gpu_hours=r.est_gpu_hours,
            act_gpu_hours=r.act_gpu_hours,
            act_mfu=r.act_mfu,
        )
        # like with like: the estimate of the quantity the worker metered (app/models/peak.py)
        est_peak = raw_peak_bytes(snapshot, r.est_peak_compared)
        act_peak = _pos(r.act_peak_bytes)
        out.append(
            JobSample(
                job_id=r.id,
                gpu=r.gpu,
                method=r.method,
                finished_at=r.finished_at,
                efficiency=efficiency,
                efficiency_source=source,
                memory_ratio=act_peak / est_peak if est_peak and act_peak else None,
                peak_kind=r.act_peak_kind,
                time=time_sample(r.id, snapshot, wall_s=r.act_wall_s, train_s=loop_s),
            )
        )
    return out
