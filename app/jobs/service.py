"""Jobs: submit (estimate snapshot, budget check, idempotency), look up, list, cancel.

Services flush, never commit: the request's session commits, and the new job's `run_job` message
is sent only after that commit (app/kit/outbox.py), which takes the job back if the broker
refuses it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.auth import quotas
from app.auth.service import Principal
from app.auth.tenancy import can_see, visible
from app.budgets import alerts, guard
from app.budgets.spend import expected_cost
from app.config import get_settings
from app.errors import Conflict, InvalidInput
from app.estimates.service import Prepared
from app.jobs import billing, capacity, estimates_link, idempotency, lifecycle, snapshot
from app.jobs.build import build_spec
from app.jobs.filters import ReportFilters
from app.jobs.lifecycle import add_event
from app.jobs.recovery import live_worker_count, no_worker_detail, sweep_stale
from app.jobs.schemas import AttemptOut, EventPage, JobEventOut, JobIn, JobOut
from app.kit import ids, outbox, redact
from app.kit.pagination import keyset_page
from app.kit.paths import confine_model_path
from app.kit.queue import queue_for
from app.models import Dataset, Estimate, Job, JobAttempt, JobEvent, JobStatus, JobTag
from app.models.base import new_id, utcnow

MAX_EVENTS_PAGE = 500  # events are small rows; a page this size is well under a megabyte


def _team(principal: Principal, tags: dict[str, str]) -> tuple[str | None, dict[str, str]]:
    """The owning team (the key's) and the tags with `team` filled in from the key."""
    tagged = tags.get("team")
    if principal.team is None:
        if tagged is not None and not principal.is_admin:
            # Spend tagged team X is counted in X's reports: only X's keys (or an admin) say so.
            raise InvalidInput(
                f"tags.team is {tagged!r} but this key belongs to no team; leave tags.team "
                "out, or submit with a key of that team",
                field="tags.team",
            )
        return None, tags
    if tagged is not None and tagged != principal.team:
        raise InvalidInput(
            f"tags.team is {tagged!r} but this key belongs to team {principal.team!r}",
            field="tags.team",
        )
    return principal.team, {**tags, "team": principal.team}


def _model(job_in: JobIn, estimate: Estimate) -> dict[str, str]:
    """The runnable model: the body's, else the estimate's local path; paths confined to roots."""
    ref = job_in.model.model_dump(exclude_none=True) if job_in.model else None
    if ref is None:
        ref = estimates_link.runnable_model(estimate)
    if ref is None:
        raise InvalidInput(
            "give model.path (a folder under a model root) or model.hub_id: the estimate "
            "names no local model to train",
            field="model",
        )
    if "path" in ref:
        return {"path": str(confine_model_path(ref["path"], field="model.path"))}
    return {"hub_id": ref["hub_id"]}


def _dataset(session: Session, job_in: JobIn, estimate: Estimate, principal: Principal) -> Dataset:
    dataset_id = job_in.dataset_id or estimates_link.dataset_id(estimate)
    if dataset_id is None:
        raise InvalidInput(
            "give dataset_id: the estimate was made for a dataset shape, not a stored dataset",
            field="dataset_id",
        )
    row = session.get(Dataset, dataset_id)
    if row is None or not can_see(
        principal, team=row.team, created_by_key_id=row.created_by_key_id
    ):
        raise InvalidInput(f"no dataset with id {dataset_id!r}", field="dataset_id")
    return row


def _check_budget(job_in: JobIn, snap: snapshot.Snapshot) -> None:
    figures = {
        "gpu": snap.gpu,
        "num_gpus": snap.num_gpus,
        "estimated_cost_usd": snap.cost_usd,
        "estimated_gpu_hours": snap.gpu_hours,
        "estimated_peak_bytes": snap.peak_bytes,
        "max_cost_usd": job_in.max_cost_usd,
    }
    if job_in.force:
        return
    if not snap.fits:
        raise Conflict(
            f"the {job_in.method} estimate does not fit on {snap.num_gpus} x {snap.gpu}; "
            'send "force": true to run it anyway',
            extra={"estimate": figures},
        )
    if (
        job_in.max_cost_usd is not None
        and snap.cost_usd is not None
        and snap.cost_usd > job_in.max_cost_usd
    ):
        raise Conflict(
            f"the estimated cost ${snap.cost_usd:.4f} exceeds max_cost_usd "
            f'${job_in.max_cost_usd:.4f}; raise the budget, or send "force": true to run '
            "until the budget stops it",
            extra={"estimate": figures},
        )


def check_tags(*, job_in: JobIn, principal: Principal) -> None:
    """Refuse tags this key may not set (another team's), before any work is done."""
    _team(principal, job_in.tags)


def create(
    session: Session,
    *,
    job_in: JobIn,
    principal: Principal,
    idempotency_key: str | None,
    prepared: Prepared | None = None,
    replanned: estimates_link.Replan | None = None,
) -> tuple[Job, bool]:
    """Validate, snapshot the estimate and add a queued job; returns (job, created).

    `prepared`: the estimate a body without estimate_id implies, computed by the route while
    holding no connection (`estimates_link.prepare`); stored here with the job. `replanned`:
    the estimate named by estimate_id made again for the dataset or model the body names
    instead (`estimates_link.replan`); without it such a job is refused (409), since the job
    must be the plan.
    """
    digest = idempotency.request_hash(job_in)
    found = idempotency.replay(
        session, job_in=job_in, principal=principal, idempotency_key=idempotency_key
    )
    if found is not None:
        return found, False

    team, tags = _team(principal, job_in.tags)
    if replanned is not None:
        prepared = replanned.prepared
    elif job_in.estimate_id is not None:
        _refuse_a_different_job(session, job_in=job_in, principal=principal)
    estimate = estimates_link.resolve(
        session, job_in=job_in, principal=principal, prepared=prepared
    )
    result = estimates_link.result_of(estimate)
    refusal = estimates_link.untrainable(result)
    if refusal is not None:
        raise InvalidInput(f"{refusal}; choose a decoder-only model", field="model")
    snap = snapshot.take(
        result,
        method=str(job_in.method),
        max_steps=job_in.max_steps,
        data_fraction=job_in.data_fraction,
    )
    if snap.price_per_gpu_hour is None:
        raise InvalidInput(
            f"the catalog has no price for {snap.gpu}; name a provider in hardware.provider",
            field="hardware.provider",
        )
    capacity.check_runnable(
        result=result, method=job_in.method, gpu=snap.gpu, num_gpus=snap.num_gpus
    )
    _check_budget(job_in, snap)
    model = _model(job_in, estimate)
    dataset = _dataset(session, job_in, estimate, principal)
    settings_in = estimates_link.settings_of(estimate)
    # the plan's levers (checkpointing, micro-batch split, optimizer, adapter dtype): the job
    # runs with exactly the settings its estimate was made for
    settings_in["training"] = {**settings_in["training"], **snap.planned_training()}
    spec = build_spec(
        {
            "method": job_in.method,
            "model": model,
            **settings_in,
            "max_steps": job_in.max_steps,
            "max_cost_usd": job_in.max_cost_usd,
            "price_per_gpu_hour": snap.price_per_gpu_hour,
            "num_gpus": snap.num_gpus,
            "nodes": snap.nodes,
            "strategy": snap.method_result.strategy,  # the plan's; the worker runs it
            "flops_per_token": snap.flops_per_token,
            "eval_fraction": job_in.eval_fraction,
            "eval_points": job_in.eval_points,
            "data_fraction": job_in.data_fraction,
            "lr_schedule": job_in.lr_schedule,
            "seed": job_in.seed,
            "learning_rate": job_in.learning_rate,
            "forced": job_in.force,
            "as_estimated": estimates_link.runs_as_estimated(
                estimate, model=model, dataset=dataset.id
            ),
            "tags": tags,
        },
        # The estimator checked the settings against the estimate's own model; only a model
        # named beside an estimate_id can differ from it.
        other_model=job_in.estimate_id is not None and job_in.model is not None,
    )

    settings = get_settings()
    capacity.check(
        session,
        gpu=snap.gpu,
        num_gpus=spec.gpus_per_node,
        nodes=spec.nodes,
        stale_s=settings.heartbeat_stale_s,
    )
    # A job across nodes is one message per node, each taken by a worker with a node's devices.
    queue = queue_for(snap.gpu, spec.gpus_per_node)
    job = Job(
        id=new_id("job"),
        status=JobStatus.QUEUED,
        method=str(job_in.method),
        model_ref=estimate.model_ref,
        gpu=snap.gpu,
        num_gpus=snap.num_gpus,
        nodes=spec.nodes,
        provider=snap.provider,
        pricing=snap.pricing,
        queue=queue,
        team=team,
        estimate_id=estimate.id,
        dataset_id=dataset.id,
        created_by_key_id=principal.key_id,
        idempotency_key=idempotency_key,
        request_hash=digest,
        spec=spec.model_dump(mode="json"),
        estimate_snapshot=_snapshot_json(snap, replanned),
        max_cost_usd=job_in.max_cost_usd,
        max_steps=job_in.max_steps,
        price_per_gpu_hour=snap.price_per_gpu_hour,
        est_cost_usd=snap.cost_usd,
        est_gpu_hours=snap.gpu_hours,
        est_peak_bytes=snap.peak_bytes,
        est_allocated_bytes=snap.allocated_bytes,
        est_reserved_bytes=snap.reserved_bytes,
        est_artifact_bytes=snap.artifact_bytes,
        attempts=0,
    )
    live = live_worker_count(
        session, gpu=snap.gpu, num_gpus=spec.gpus_per_node, stale_s=settings.heartbeat_stale_s
    )
    if live < spec.nodes:
        job.status_detail = no_worker_detail(queue, nodes=spec.nodes, live=live)
    session.flush()  # everything before the job (e.g. the estimate it implies) is written
    # The tenant's active-jobs quota, then its budgets, just before the insert: their locks are
    # held until the commit, so as briefly as the submit allows (app/auth/quotas.py,
    # app/budgets/guard.py).
    quotas.check_job(session, quotas.Tenant.of(principal))  # the job's team is the key's
    now = utcnow()
    budgets = guard.lock(session, team=team, tags=tags, now=now)
    if idempotency_key is not None:
        # A concurrent submit with this key may have committed while this one waited for a lock.
        found = idempotency.replay(
            session, job_in=job_in, principal=principal, idempotency_key=idempotency_key
        )
        if found is not None:
            return found, False
    counted = guard.check(
        session,
        budgets=budgets,
        est_cost_usd=snap.cost_usd,
        max_cost_usd=job_in.max_cost_usd,
        now=now,
    )
    try:
        # A savepoint around the job's own rows only: when a concurrent request with the same
        # Idempotency-Key commits first, the unique constraint fails here, the savepoint's
        # rollback expunges exactly these pending rows, and the request answers as a replay.
        # (Added outside it, they stayed pending and the next query's autoflush re-inserted
        # them: UniqueViolation, then PendingRollbackError, a 500.)
        with session.begin_nested():
            session.add(job)
            session.add_all(JobTag(job_id=job.id, key=k, value=v) for k, v in tags.items())
            if replanned is not None:
                add_event(
                    session,
                    job_id=job.id,
                    kind="status",
                    message=f"estimated again (estimate {estimate.id}): the job differs from "
                    f"estimate {replanned.from_estimate_id}: {'; '.join(replanned.differences)}",
                )
            add_event(session, job_id=job.id, kind="status", message=f"queued on {queue}")
            session.flush()
        added = expected_cost(snap.cost_usd, job_in.max_cost_usd)
        alerts.after_submit(session, counted=counted, added_usd=added, now=now)
        implied = estimate.id if prepared is not None else None
        outbox.send_after_commit(
            session,
            outbox.RunJobMessage(
                job.id, queue, undo=_undo_submit(job.id, implied), copies=spec.nodes
            ),
        )
    except IntegrityError:
        if idempotency_key is None:
            raise
        with session.no_autoflush:
            found = idempotency.by_key(
                session, key_id=principal.key_id, idempotency_key=idempotency_key
            )
        if found is None:
            raise
        return idempotency.same_body(found, digest), False
    return job, True


def _refuse_a_different_job(session: Session, *, job_in: JobIn, principal: Principal) -> None:
    """A job whose dataset or model differs from the estimate it names, not estimated again."""
    found = estimates_link.differences(session, job_in=job_in, principal=principal)
    if found is not None:
        raise Conflict(
            f"the job differs from estimate {job_in.estimate_id}: {'; '.join(found[1])}; "
            "estimate what it will run (or submit through POST /v1/jobs, which does)",
            extra={"differences": list(found[1])},
        )


def _snapshot_json(
    snap: snapshot.Snapshot, replanned: estimates_link.Replan | None
) -> dict[str, Any]:
    """The snapshot stored on the job, saying when it was estimated again and why."""
    out = snap.as_json()
    if replanned is not None:
        out["replanned"] = replanned.as_json()
    return out


def _undo_submit(job_id: str, estimate_id: str | None) -> Callable[[Session], None]:
    """Take a committed submit back: the job (its tags and events cascade) and the estimate it
    implied, if it made one."""

    def undo(session: Session) -> None:
        session.execute(delete(Job).where(Job.id == job_id))
        if estimate_id is not None:
            session.execute(delete(Estimate).where(Estimate.id == estimate_id))

    return undo


def get(session: Session, *, job_id: str, principal: Principal, lock: bool = False) -> Job:
    """One job of the caller's tenant by id or unique id prefix (`app/kit/ids.py`); 404 if there
    is none (or it is another's)."""
    job = session.get(Job, job_id, with_for_update=lock)
    if job is not None and can_see(
        principal, team=job.team, created_by_key_id=job.created_by_key_id
    ):
        return job
    mine = visible(principal, team=Job.team, created_by_key_id=Job.created_by_key_id)
    full = ids.unique_match(
        session, id_column=Job.id, visible=mine, value=job_id, kind="job", noun="job"
    )
    found = session.get(Job, full, with_for_update=lock)
    assert found is not None  # just matched, in this transaction
    return found


def refresh(session: Session, *, job: Job) -> None:
    """Cheap checks on read: recover the job if its worker died; say if no worker can take it.

    A recovered job is sent again once the caller's transaction commits (app/kit/outbox.py).
    """
    settings = get_settings()
    if job.status in (JobStatus.RUNNING, JobStatus.CANCEL_REQUESTED):
        sweep_stale(session, stale_s=settings.heartbeat_stale_s, job_id=job.id)
        session.refresh(job)
    if job.status == JobStatus.QUEUED:
        live = live_worker_count(
            session,
            gpu=job.gpu,
            num_gpus=job.num_gpus // job.nodes,
            stale_s=settings.heartbeat_stale_s,
        )
        missing = no_worker_detail(job.queue, nodes=job.nodes, live=live)
        if live < job.nodes and job.status_detail is None:
            job.status_detail = missing
        elif live >= job.nodes and job.status_detail == missing:
            job.status_detail = None
        session.flush()


def list_(
    session: Session,
    *,
    principal: Principal,
    filters: ReportFilters,
    limit: int,
    cursor: str | None,
) -> tuple[Sequence[Job], str | None]:
    """The tenant's jobs newest first, filtered, one page, and the cursor of the next page."""
    stmt = select(Job).where(
        visible(principal, team=Job.team, created_by_key_id=Job.created_by_key_id),
        *filters.selection(),
    )
    return keyset_page(
        session, stmt, created_at=Job.created_at, id_column=Job.id, limit=limit, cursor=cursor
    )


def events(
    session: Session, *, job_id: str, principal: Principal, after: int | None, limit: int
) -> EventPage:
    """Events of a job of the caller's tenant after event id `after`, oldest first."""
    job = get(session, job_id=job_id, principal=principal)
    stmt = select(JobEvent).where(JobEvent.job_id == job.id)
    if after is not None:
        stmt = stmt.where(JobEvent.id > after)
    rows = session.scalars(stmt.order_by(JobEvent.id).limit(min(limit, MAX_EVENTS_PAGE))).all()
    items = [JobEventOut.model_validate(r) for r in rows]
    for item in items:
        item.message = redact.text(item.message)
    return EventPage(items=items, next_after=items[-1].id if items else after)


def cancel(session: Session, *, job_id: str, principal: Principal) -> Job:
    """Queued: cancelled at once. Running: cancel_requested; the worker stops it, then cancelled."""
    job = get(session, job_id=job_id, principal=principal, lock=True)
    lifecycle.cancel(session, job)
    return job


def tags_of(session: Session, job_ids: Sequence[str]) -> dict[str, dict[str, str]]:
    """The tags of several jobs in one query."""
    out: dict[str, dict[str, str]] = {job_id: {} for job_id in job_ids}
    if job_ids:
        for tag in session.scalars(select(JobTag).where(JobTag.job_id.in_(list(job_ids)))):
            out[tag.job_id][tag.key] = tag.value
    return out


def to_out(job: Job, tags: dict[str, str], attempts: Sequence[JobAttempt] = ()) -> JobOut:
    """The API view of a job row, with its tags and its billed attempts."""
    own = ("tags", "estimate", "attempt_costs")
    fields: dict[str, Any] = {
        name: getattr(job, name) for name in JobOut.model_fields if name not in own
    }
    # Rows keep absolute paths for the workers; clients see none (app/kit/redact.py).
    fields.update(
        spec=redact.spec(job.spec),
        error=redact.text(job.error),
        status_detail=redact.text(job.status_detail),
    )
    return JobOut(
        **fields,
        tags=tags,
        estimate=job.estimate_snapshot,
        attempt_costs=[AttemptOut.model_validate(a) for a in attempts],
    )


def outs(session: Session, jobs: Sequence[Job]) -> list[JobOut]:
    """API views of several jobs, their tags and attempts read in two queries."""
    ids = [job.id for job in jobs]
    tags, attempts = tags_of(session, ids), billing.of_jobs(session, ids)
    return [to_out(job, tags[job.id], attempts[job.id]) for job in jobs]
