"""Does calibration help? Fit on older jobs, score the estimate error on newer, unseen ones.

The eligible jobs (succeeded full runs) are split by finish time: the calibration is fitted only
on jobs finished before the split and scored only on jobs finished at or after it, so no scored
job ever fed the fit. "Before" is the estimate each held-out job got when it was submitted;
"after" is the same estimate re-derived with the held-out-free fit: time through the stored
time breakdown at the fitted efficiency, peak memory times the fitted factor.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from app.auth.service import Principal
from app.calibration.samples import (
    modelled_seconds,
    raw_peak_bytes,
    snapshot_columns,
    snapshot_from_row,
)
from app.calibration.schemas import EvalSummary, EvaluationOut, JobEvalOut, QuantityEval
from app.calibration.service import fit_groups, tenant_jobs, to_table
from app.estimator.calibration_types import Calibration
from app.estimator.spec import Method
from app.models import Job, JobStatus
from app.models.peak import peak_estimate_column

HOLDOUT_FRACTION = 0.3  # the newest 30% of eligible jobs are scored (a 70/30 time split)
MAX_HELDOUT_JOBS = 5_000  # scored jobs per evaluation (the first after the split): bounds its cost
BEFORE = "the estimate as made when the job was submitted"
AFTER = "that estimate re-derived with the calibration fitted on jobs finished before split_at"
_QUANTITIES = ("gpu_hours", "cost_usd", "peak_bytes")
_METHODS = frozenset(m.value for m in Method)


@dataclass(frozen=True)
class _Triple:
    actual: float | None
    before: float | None
    after: float | None


def _eligible() -> tuple[ColumnElement[bool], ...]:
    return (
        Job.status == JobStatus.SUCCEEDED,
        Job.finished_at.is_not(None),
        Job.act_wall_s.is_not(None),
    )


def split_point(
    session: Session, *, holdout_fraction: float, tenant: ColumnElement[bool] | None = None
) -> datetime | None:
    """The finish time at which the newest `holdout_fraction` of eligible jobs (of the jobs
    `tenant` selects) begins."""
    where = [*_eligible(), *([] if tenant is None else [tenant])]
    total = session.scalar(select(func.count()).select_from(Job).where(*where)) or 0
    held = max(1, round(total * holdout_fraction)) if total else 0
    if total < 2 or held >= total:
        return None
    return session.scalar(
        select(Job.finished_at)
        .where(*where)
        .order_by(Job.finished_at, Job.id)
        .offset(total - held)
        .limit(1)
    )


def _recalibrate(row: Any, calibration: Calibration | None) -> dict[str, _Triple]:
    snapshot = snapshot_from_row(row)
    time_ratio = None
    if calibration is not None and calibration.mfu is not None:
        own = snapshot.mfu
        before_s = modelled_seconds(snapshot, mfu=own) if own else None
        after_s = modelled_seconds(
            snapshot,
            mfu=calibration.mfu,
            run_overhead_s=calibration.run_overhead_s,
            host_scale=calibration.host_scale,
        )
        if before_s and after_s:
            time_ratio = after_s / before_s
    factor = calibration.memory_factor if calibration is not None else None
    raw_peak = raw_peak_bytes(snapshot, row.est_peak_bytes)
    peak_after = raw_peak * factor if raw_peak is not None and factor is not None else None

    def scaled(value: float | None, ratio: float | None) -> float | None:
        if value is None:
            return None
        return value * ratio if ratio is not None else float(value)

    return {
        "gpu_hours": _Triple(
            row.act_gpu_hours, row.est_gpu_hours, scaled(row.est_gpu_hours, time_ratio)
        ),
        "cost_usd": _Triple(
            row.act_cost_usd, row.est_cost_usd, scaled(row.est_cost_usd, time_ratio)
        ),
        "peak_bytes": _Triple(
            row.act_peak_bytes,
            row.est_peak_bytes,
            peak_after if peak_after is not None else scaled(row.est_peak_bytes, None),
        ),
    }


def _pct(estimate: float | None, actual: float | None) -> float | None:
    if estimate is None or actual is None or actual <= 0:
        return None
    return (estimate - actual) / actual * 100.0


def _quantity(triples: list[_Triple]) -> QuantityEval:
    pairs = [
        (b, a)
        for t in triples
        if (b := _pct(t.before, t.actual)) is not None
        and (a := _pct(t.after, t.actual)) is not None
    ]
    if not pairs:
        return QuantityEval(
            n=0,
            before_mape_pct=None,
            after_mape_pct=None,
            before_mean_pct_error=None,
            after_mean_pct_error=None,
        )
    return QuantityEval(
        n=len(pairs),
        before_mape_pct=statistics.fmean(abs(b) for b, _ in pairs),
        after_mape_pct=statistics.fmean(abs(a) for _, a in pairs),
        before_mean_pct_error=statistics.fmean(b for b, _ in pairs),
        after_mean_pct_error=statistics.fmean(a for _, a in pairs),
    )


def _summary(rows: list[tuple[Any, bool, dict[str, _Triple]]], **key: str) -> EvalSummary:
    return EvalSummary(
        **key,
        jobs=len(rows),
        calibrated_jobs=sum(1 for _, calibrated, _ in rows if calibrated),
        **{q: _quantity([t[q] for _, _, t in rows]) for q in _QUANTITIES},
    )


def evaluate(
    session: Session,
    *,
    holdout_fraction: float = HOLDOUT_FRACTION,
    split_at: datetime | None = None,
    include_jobs: bool = False,
    principal: Principal | None = None,
) -> EvaluationOut:
    """Before/after estimate errors on held-out jobs, overall and per (GPU, method): the
    tenant's calibration fitted on its older jobs, scored on its newer ones (every tenant's
    for an admin or no principal)."""
    tenant = tenant_jobs(principal)
    mine = [] if tenant is None else [tenant]
    split = split_at or split_point(session, holdout_fraction=holdout_fraction, tenant=tenant)
    if split is None:
        return EvaluationOut(
            split_at=None,
            fit_jobs=0,
            heldout_jobs=0,
            overlap=0,
            before=BEFORE,
            after=AFTER,
            overall=None,
            groups=[],
            jobs=[] if include_jobs else None,
        )
    groups = fit_groups(session, principal=principal, finished_before=split)
    table = to_table(groups)
    used = [g.job_ids for g in groups if g.calibration() is not None]
    fitted_ids: frozenset[str] = frozenset().union(*used) if used else frozenset()
    read_ids: frozenset[str] = frozenset().union(*(g.job_ids for g in groups))
    held = session.execute(
        select(
            Job.id,
            Job.gpu,
            Job.method,
            Job.finished_at,
            Job.errors["complete_run"].as_boolean().label("complete_run"),
            Job.spec["as_estimated"].as_boolean().label("as_estimated"),
            *snapshot_columns(),
            Job.est_gpu_hours,
            Job.act_gpu_hours,
            Job.est_cost_usd,
            Job.act_cost_usd,
            peak_estimate_column().label("est_peak_bytes"),  # like with like (app/models/peak.py)
            Job.act_peak_bytes,
        )
        .where(*_eligible(), *mine, Job.finished_at >= split)
        .order_by(Job.finished_at, Job.id)
        .limit(MAX_HELDOUT_JOBS)
    ).all()
    scored: list[tuple[Any, bool, dict[str, _Triple]]] = []
    for row in held:
        if row.complete_run is False or row.as_estimated is False:
            continue
        method = Method(row.method) if row.method in _METHODS else None
        calibration = table.get((row.gpu, method)) if method is not None else None
        scored.append((row, calibration is not None, _recalibrate(row, calibration)))
    by_group: dict[tuple[str, str], list[tuple[Any, bool, dict[str, _Triple]]]] = {}
    for item in scored:
        by_group.setdefault((item[0].gpu, item[0].method), []).append(item)
    return EvaluationOut(
        split_at=split,
        fit_jobs=len(fitted_ids),
        heldout_jobs=len(scored),
        overlap=len(read_ids & {row.id for row, _, _ in scored}),
        before=BEFORE,
        after=AFTER,
        overall=_summary(scored) if scored else None,
        groups=[_summary(rows, gpu=g, method=m) for (g, m), rows in sorted(by_group.items())],
        jobs=[_job_out(item) for item in scored] if include_jobs else None,
    )


def _job_out(item: tuple[Any, bool, dict[str, _Triple]]) -> JobEvalOut:
    row, calibrated, t = item
    return JobEvalOut(
        job_id=row.id,
        gpu=row.gpu,
        method=row.method,
        finished_at=row.finished_at,
        calibrated=calibrated,
        actual_gpu_hours=t["gpu_hours"].actual,
        before_gpu_hours=t["gpu_hours"].before,
        after_gpu_hours=t["gpu_hours"].after,
        actual_cost_usd=t["cost_usd"].actual,
        before_cost_usd=t["cost_usd"].before,
        after_cost_usd=t["cost_usd"].after,
        actual_peak_bytes=row.act_peak_bytes,
        before_peak_bytes=row.est_peak_bytes,
        after_peak_bytes=t["peak_bytes"].after,
    )
