"""Routes of /v1/jobs: submit, read, list, progress events, cancel, download the artifact.

A route commits at most once (the request's session commits otherwise when it returns); the
`run_job` messages the services queued are sent only when the session's scope ends after that
commit (app/kit/outbox.py), so a worker never sees a job id before its row exists. If the broker
refuses a new job's message, the job is taken back and the client gets 503 (retry with the same
Idempotency-Key).
"""

from __future__ import annotations

from functools import partial
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from app.auth.deps import ReadPrincipal, SubmitPrincipal
from app.db import SessionDep
from app.errors import NotFound
from app.estimates.admission import run_in_slot
from app.jobs import artifacts, estimates_link, idempotency, service
from app.jobs.filters import ReportFiltersDep
from app.jobs.schemas import ArtifactFormat, EventPage, JobIn, JobOut
from app.kit.pagination import CursorQuery, LimitQuery, Page
from app.kit.streams import ClosingStreamingResponse
from app.models import JobStatus
from app.models.base import MAX_BIGINT

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

JobId = Annotated[str, Path(max_length=40, description="the job's id")]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=JobOut,
    responses={
        200: {"model": JobOut, "description": "replay of an Idempotency-Key"},
        503: {"description": "the estimator is busy: retry after Retry-After seconds"},
    },
)
def submit_job(
    job_in: JobIn,
    session: SessionDep,
    principal: SubmitPrincipal,
    response: Response,
    http: Request,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> JobOut:
    """Snapshot the estimate, queue the job on its GPU kind's queue and send it to a worker.

    With `estimate_id`, a `dataset_id` or `model` other than the estimate's is estimated again
    for what the job will really run (its snapshot's `replanned` says what differed). 409
    (with the estimate) when the estimate exceeds `max_cost_usd` or does not fit, unless
    `force`; 422 naming `hardware` (and the runnable alternative) for a plan no worker node
    can run. 422 naming `hardware.num_gpus` when the job needs more devices than the largest
    live worker of its GPU kind has (a job runs on one worker); with no live worker of that
    kind the job is accepted and waits in its queue (`gpu.<kind>`, or `gpu.<kind>.x<n>` for
    n devices). The same Idempotency-Key with the same body returns the same job (200).
    An estimate made here runs in the estimator's slots (TUNECOST_ESTIMATE_SLOTS): 503 with
    Retry-After when they and their queue are full.
    """
    found = idempotency.replay(
        session, job_in=job_in, principal=principal, idempotency_key=idempotency_key
    )
    if found is not None:
        response.status_code = status.HTTP_200_OK
        return service.outs(session, [found])[0]
    service.check_tags(job_in=job_in, principal=principal)
    prepared = None
    replanned = None
    # The estimate a body implies, or the estimate named made again for the dataset or model
    # the body names instead, is CPU work: end the read-only transaction first so no pooled
    # connection waits on it, and run it in one of the estimator's slots like any estimate
    # (503 + Retry-After when they are busy); it is stored with the job, in one transaction.
    different = estimates_link.differences(session, job_in=job_in, principal=principal)
    if job_in.estimate_id is None:
        session.close()
        prepared = run_in_slot(
            http.app, partial(estimates_link.prepare, job_in=job_in, principal=principal)
        )
    elif different is not None:
        session.close()
        request, what_differs = different
        replanned = run_in_slot(
            http.app,
            partial(
                estimates_link.replan,
                job_in=job_in,
                principal=principal,
                request=request,
                found=what_differs,
            ),
        )
    job, created = service.create(
        session,
        job_in=job_in,
        principal=principal,
        idempotency_key=idempotency_key,
        prepared=prepared,
        replanned=replanned,
    )
    if not created:
        response.status_code = status.HTTP_200_OK
        return service.outs(session, [job])[0]
    out = service.outs(session, [job])[0]
    # Commit here, once: concurrent submits with this Idempotency-Key wait on the new row's
    # unique key, holding threads, until it commits; the session's exit (which then sends the
    # job's message, app/kit/outbox.py) needs a thread of the same pool.
    session.commit()
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return out


@router.get("", response_model=Page[JobOut])
def list_jobs(
    session: SessionDep,
    principal: ReadPrincipal,
    filters: ReportFiltersDep,
    limit: LimitQuery = 20,
    cursor: CursorQuery = None,
) -> Page[JobOut]:
    """Jobs newest first, with the report filters: job columns, `tag.<key>=<value>`, from/to."""
    rows, next_cursor = service.list_(
        session, principal=principal, filters=filters, limit=limit, cursor=cursor
    )
    return Page[JobOut](items=service.outs(session, rows), next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobOut)
def get_job(job_id: JobId, session: SessionDep, principal: ReadPrincipal) -> JobOut:
    """One job of the key's tenant. Reading it also recovers it if its worker died."""
    job = service.get(session, job_id=job_id, principal=principal)
    service.refresh(session, job=job)
    out = service.outs(session, [job])[0]
    session.commit()  # once, here: the recovery's row locks end before the session's exit
    return out


@router.get("/{job_id}/events", response_model=EventPage)
def job_events(
    job_id: JobId,
    session: SessionDep,
    principal: ReadPrincipal,
    after: Annotated[
        int | None, Query(ge=0, le=MAX_BIGINT, description="the last event id already seen")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=service.MAX_EVENTS_PAGE)] = 100,
) -> EventPage:
    """Progress (step, total steps, loss, tokens/s, accrued cost) and status events, in order."""
    return service.events(session, job_id=job_id, principal=principal, after=after, limit=limit)


@router.post(
    "/{job_id}/cancel",
    summary="Cancel a job",
    response_model=JobOut,
    responses={202: {"model": JobOut, "description": "running: the worker is stopping it"}},
)
def cancel_job(
    job_id: JobId, session: SessionDep, principal: SubmitPrincipal, response: Response
) -> JobOut:
    """Queued: cancelled now (200). Running: cancel requested (202); the worker ends the
    training process within seconds and only then reports `cancelled`."""
    job = service.cancel(session, job_id=job_id, principal=principal)
    if job.status == JobStatus.CANCEL_REQUESTED:
        response.status_code = status.HTTP_202_ACCEPTED
    return service.outs(session, [job])[0]


@router.get(
    "/{job_id}/artifact",
    response_class=StreamingResponse,
    responses={200: {"content": {m: {} for m in artifacts.MEDIA_TYPES.values()}}},
)
def download_artifact(
    job_id: JobId,
    session: SessionDep,
    principal: SubmitPrincipal,
    format_: Annotated[ArtifactFormat, Query(alias="format")] = "tar",
) -> StreamingResponse:
    """The adapter or checkpoint the job saved, as a tar (default) or zip archive."""
    job = service.get(session, job_id=job_id, principal=principal)
    if not job.artifact_path:
        raise NotFound(f"job {job.id} has no artifact (status {job.status})")
    stream = (artifacts.stream_tar if format_ == "tar" else artifacts.stream_zip)(
        job.artifact_path, prefix=job.id
    )
    headers = {"Content-Disposition": f'attachment; filename="{job.id}.{format_}"'}
    if job.artifact_bytes is not None:
        headers["X-Artifact-Bytes"] = str(job.artifact_bytes)
    return ClosingStreamingResponse(
        stream, media_type=artifacts.MEDIA_TYPES[format_], headers=headers
    )
