"""Eval curves of jobs, read through the job's tenancy, and paired comparisons between jobs."""

from __future__ import annotations

import math

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth.service import Principal
from app.auth.tenancy import can_see
from app.errors import Conflict, InvalidInput, NotFound
from app.evals.schemas import EvalPage, EvalPointOut, PairedComparison
from app.evals.stats import NotPaired, mean_loss, paired_difference
from app.models import Job, JobEval

MAX_EVALS_PAGE = 500  # a curve has a handful of points per attempt; one page holds any real one


def visible_job(session: Session, *, job_id: str, principal: Principal) -> Job:
    """A job of the caller's tenant by id; 404 if there is none (or it is another's)."""
    job = session.get(Job, job_id)
    if job is None or not can_see(
        principal, team=job.team, created_by_key_id=job.created_by_key_id
    ):
        raise NotFound(f"no job with id {job_id!r}")
    return job


def curve(
    session: Session, *, job_id: str, principal: Principal, after: int | None, limit: int
) -> EvalPage:
    """The eval points of a job of the caller's tenant after point id `after`, oldest first."""
    visible_job(session, job_id=job_id, principal=principal)
    stmt = select(JobEval).where(JobEval.job_id == job_id)
    if after is not None:
        stmt = stmt.where(JobEval.id > after)
    rows = session.scalars(stmt.order_by(JobEval.id).limit(min(limit, MAX_EVALS_PAGE))).all()
    items = [EvalPointOut.model_validate(r) for r in rows]
    return EvalPage(items=items, next_after=items[-1].id if items else after)


def final_eval(session: Session, *, job_id: str) -> JobEval | None:
    """The evaluation of the job's completed run (its latest attempt's), if it has one."""
    stmt = (
        select(JobEval)
        .where(JobEval.job_id == job_id, JobEval.final.is_(True))
        .order_by(JobEval.attempt.desc(), JobEval.id.desc())
        .limit(1)
    )
    return session.scalars(stmt).first()


def base_eval(session: Session, *, job_id: str) -> JobEval | None:
    """The evaluation of the job's base model (step 0 of its latest attempt), if it has one."""
    stmt = (
        select(JobEval)
        .where(JobEval.job_id == job_id, JobEval.step == 0)
        .order_by(JobEval.attempt.desc(), JobEval.id.desc())
        .limit(1)
    )
    return session.scalars(stmt).first()


def compare_rows(a: JobEval, b: JobEval) -> PairedComparison:
    """Two evaluations on one eval set compared item by item (NotPaired when they are not)."""
    if a.eval_set_id != b.eval_set_id:
        raise NotPaired(f"eval sets differ: {a.eval_set_id} and {b.eval_set_id}")
    diff = paired_difference(a.item_loss_sums, b.item_loss_sums, a.item_tokens, b.item_tokens)
    mine = mean_loss(a.item_loss_sums, a.item_tokens)
    theirs = mean_loss(b.item_loss_sums, b.item_tokens)
    se = diff.se if math.isfinite(diff.se) else 0.0
    return PairedComparison(
        job_id=a.job_id,
        other_job_id=b.job_id,
        eval_set_id=a.eval_set_id,
        items=diff.items,
        loss=mine.value,
        other_loss=theirs.value,
        difference=diff.value,
        se=se,
        z=diff.value / se if se > 0 else None,
    )


def compare(
    session: Session, *, job_id: str, other_job_id: str, principal: Principal
) -> PairedComparison:
    """The final eval losses of two jobs of the caller's tenant, paired on their items."""
    visible_job(session, job_id=job_id, principal=principal)
    try:
        visible_job(session, job_id=other_job_id, principal=principal)
    except NotFound:  # the other job is a query parameter: a bad field, not an unknown URL
        raise InvalidInput(f"no job with id {other_job_id!r}", field="with") from None
    rows = {jid: final_eval(session, job_id=jid) for jid in (job_id, other_job_id)}
    missing = [jid for jid, row in rows.items() if row is None]
    if missing:
        raise Conflict(
            f"job {missing[0]} has no final evaluation (it has not completed, or it had no "
            "held-out set): compare jobs that succeeded with eval_fraction > 0"
        )
    a, b = rows[job_id], rows[other_job_id]
    assert a is not None and b is not None
    try:
        return compare_rows(a, b)
    except NotPaired as exc:
        raise InvalidInput(
            f"{exc}: the two jobs were not scored on the same held-out items (another dataset, "
            "tokenizer, seq_len or eval_fraction); compare jobs on the same eval set",
            field="with",
        ) from None
