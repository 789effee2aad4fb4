"""Eval routes (read scope): a job's eval curve, and two jobs compared on the same items."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from app.auth.deps import ReadPrincipal
from app.db import SessionDep
from app.evals import service
from app.evals.schemas import EvalPage, PairedComparison
from app.models.base import MAX_BIGINT

router = APIRouter(prefix="/v1/jobs", tags=["evals"])

JobId = Annotated[str, Path(max_length=40, description="the job's id")]


@router.get("/{job_id}/evals", response_model=EvalPage)
def job_evals(
    job_id: JobId,
    session: SessionDep,
    principal: ReadPrincipal,
    after: Annotated[
        int | None, Query(ge=0, le=MAX_BIGINT, description="the last point id already seen")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=service.MAX_EVALS_PAGE)] = 100,
) -> EvalPage:
    """The job's eval curve: mean held-out loss with its standard error, token accuracy and
    $ so far, at step 0 (the base model), at intervals, and at the end of a completed run."""
    return service.curve(session, job_id=job_id, principal=principal, after=after, limit=limit)


@router.get("/{job_id}/evals/compare", response_model=PairedComparison)
def compare_jobs(
    job_id: JobId,
    session: SessionDep,
    principal: ReadPrincipal,
    other: Annotated[str, Query(alias="with", max_length=40, description="the other job's id")],
) -> PairedComparison:
    """Compare two jobs' final eval losses on the same held-out items: the paired difference
    and its standard error.

    409 while either job has no final evaluation; 422 naming `with` when the two were not
    scored on the same eval set.
    """
    return service.compare(session, job_id=job_id, other_job_id=other, principal=principal)
