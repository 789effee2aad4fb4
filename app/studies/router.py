"""Routes of /v1/studies: run a study, read it (progress, predictions, verdict), list, cancel."""

from __future__ import annotations

from functools import partial
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response, status

from app.auth.deps import ReadPrincipal, SubmitPrincipal
from app.db import SessionDep
from app.estimates.admission import run_in_slot
from app.jobs import service as jobs_service
from app.jobs.schemas import JobOut
from app.kit.pagination import CursorQuery, LimitQuery, Page
from app.studies import service
from app.studies.schemas import RunIn, StudyIn, StudyOut

router = APIRouter(prefix="/v1/studies", tags=["studies"])

StudyId = Annotated[str, Path(max_length=40, description="the study's id")]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=StudyOut,
    responses={503: {"description": "the estimator is busy: retry after Retry-After seconds"}},
)
def submit_study(
    study_in: StudyIn,
    session: SessionDep,
    principal: SubmitPrincipal,
    response: Response,
    http: Request,
) -> StudyOut:
    """Estimate each candidate on the whole data and run its pilots: one ordinary job per
    candidate and data fraction, complete short runs on nested shares of the training examples,
    all scored on the same held-out items.

    When the last pilot ends the study fits E + B * D^-beta per candidate and predicts its
    full-data eval loss (80% interval) and cost. 422 naming `pilot_budget_usd` when the pilots
    are estimated above it, `fractions` when they are too small for the dataset. The candidates
    are estimated in one of the estimator's slots (TUNECOST_ESTIMATE_SLOTS): 503 with
    Retry-After when they and their queue are full.
    """
    full_rows = service.dataset_rows(session, study_in=study_in, principal=principal)
    # Estimating the candidates is CPU work: end the read-only transaction first.
    session.close()
    planned = run_in_slot(
        http.app,
        partial(service.plan, study_in=study_in, principal=principal, full_rows=full_rows),
    )
    study = service.create(session, planned=planned, principal=principal)
    out = service.to_out(session, study)
    session.commit()
    response.headers["Location"] = f"/v1/studies/{study.id}"
    return out


@router.get("", response_model=Page[StudyOut])
def list_studies(
    session: SessionDep,
    principal: ReadPrincipal,
    limit: LimitQuery = 20,
    cursor: CursorQuery = None,
) -> Page[StudyOut]:
    """The tenant's studies, newest first."""
    rows, next_cursor = service.list_(session, principal=principal, limit=limit, cursor=cursor)
    return Page[StudyOut](items=[service.to_out(session, s) for s in rows], next_cursor=next_cursor)


@router.get("/{study_id}", response_model=StudyOut)
def get_study(study_id: StudyId, session: SessionDep, principal: ReadPrincipal) -> StudyOut:
    """A study: its pilots' progress and, once they ended, each candidate's predicted full-data
    eval loss and cost with intervals, the frontier and the recommendation with its reasons."""
    study = service.get(session, study_id=study_id, principal=principal)
    return service.to_out(session, study)


@router.post("/{study_id}/cancel", response_model=StudyOut)
def cancel_study(study_id: StudyId, session: SessionDep, principal: SubmitPrincipal) -> StudyOut:
    """Cancel the study and every pilot still queued or running; 409 once it has ended."""
    study = service.cancel(session, study_id=study_id, principal=principal)
    return service.to_out(session, study)


@router.post("/{study_id}/run", status_code=status.HTTP_201_CREATED, response_model=JobOut)
def run_candidate(
    study_id: StudyId,
    session: SessionDep,
    principal: SubmitPrincipal,
    response: Response,
    run_in: RunIn | None = None,
) -> JobOut:
    """Run a candidate of an analysed study on the whole data (default: the recommended one),
    with the estimate, settings, seed and held-out items its pilots used; `budget_usd` caps it.

    409 while the study has no analysis, or when it recommends none and no candidate is named.
    """
    candidate = run_in.candidate if run_in is not None else None
    job = service.run_full(session, study_id=study_id, principal=principal, candidate=candidate)
    out = jobs_service.outs(session, [job])[0]
    session.commit()
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return out
