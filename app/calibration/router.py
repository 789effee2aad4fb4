"""Calibration routes (read scope): the fitted values, and their held-out evaluation."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from app.auth.deps import ReadPrincipal
from app.calibration import evaluation, service
from app.calibration.samples import MAX_JOBS_PER_GROUP
from app.calibration.schemas import CalibrationGroupOut, CalibrationOut, EvaluationOut
from app.catalog.loader import load_catalog
from app.db import SessionDep
from app.estimator.efficiency import mfu_prior
from app.estimator.spec import Method
from app.kit.instants import query_instant

router = APIRouter(prefix="/v1/calibration", tags=["calibration"])

OUTLIER_RULE = (
    f"per (GPU, method), a job is dropped when |{service.MODIFIED_Z_SCALE} x (log value - "
    f"median) / MAD| > {service.MODIFIED_Z_LIMIT} (Iglewicz & Hoaglin modified z-score); the "
    "rest are combined by their geometric mean"
)


def _prior(gpu: str, method: str) -> float | None:
    spec = load_catalog().gpus.get(gpu)
    if spec is None or method not in {m.value for m in Method}:
        return None
    return mfu_prior(spec.mfu_class, Method(method))


def _group_out(group: service.GroupFit) -> CalibrationGroupOut:
    calibration = group.calibration()
    return CalibrationGroupOut(
        gpu=group.gpu,
        method=group.method,
        used_by_estimates=calibration is not None,
        prior_mfu=_prior(group.gpu, group.method),
        mfu=group.time.mfu if group.time_fitted else group.mfu.value,
        mfu_jobs=group.time.used if group.time_fitted else group.mfu.used,
        mfu_outliers=group.time.outliers if group.time_fitted else group.mfu.outliers,
        run_overhead_s=group.time.run_overhead_s,
        host_scale=group.time.host_scale,
        time_jobs=group.time.used,
        time_worse_than_prior=group.time_worse_than_prior,
        mfu_capped=group.mfu_capped,
        efficiency_sources=group.efficiency_sources,
        memory_factor=group.memory.value,
        memory_jobs=group.memory.used,
        memory_outliers=group.memory.outliers,
        peak_kind=group.peak_kind,
        eligible_jobs=group.eligible_jobs,
        jobs=calibration.jobs if calibration is not None else 0,
    )


@router.get("", response_model=CalibrationOut)
def get_calibration(session: SessionDep, principal: ReadPrincipal) -> CalibrationOut:
    """Fitted efficiency and memory factor per (GPU, method) from the tenant's jobs.

    A value is used by the tenant's new estimates once `min_jobs` succeeded full runs back it.
    """
    return CalibrationOut(
        min_jobs=service.MIN_JOBS,
        outlier_rule=OUTLIER_RULE,
        max_jobs_per_group=MAX_JOBS_PER_GROUP,
        groups=[_group_out(g) for g in service.fit_groups(session, principal=principal)],
    )


@router.get("/evaluation", response_model=EvaluationOut)
def get_evaluation(
    session: SessionDep,
    principal: ReadPrincipal,
    holdout_fraction: Annotated[
        float, Query(gt=0, lt=1, description="share of the newest eligible jobs to score")
    ] = evaluation.HOLDOUT_FRACTION,
    split_at: Annotated[
        datetime | None, Query(description="fit before, score at or after (overrides the share)")
    ] = None,
    include_jobs: Annotated[bool, Query(description="list every scored job")] = False,
) -> EvaluationOut:
    """Estimate error before and after calibration, on the tenant's jobs the calibration was
    not fitted on."""
    return evaluation.evaluate(
        session,
        holdout_fraction=holdout_fraction,
        split_at=query_instant(split_at, name="split_at"),
        include_jobs=include_jobs,
        principal=principal,
    )
