"""Studies: plan and submit the pilots, read a study with its pilots' progress, list, cancel.

A study's pilots are ordinary jobs (`app/jobs/service.create`), one per candidate and data
fraction, all on the same dataset, so they train on nested subsets in the same order and are
scored on the same held-out items (`app/evals/holdout.py`). Each candidate is estimated once on
the whole data; its pilots run that estimate on their fraction, and the same estimate prices the
full-data run the study predicts. The analysis is made when the last pilot ends
(`app/studies/analysis.py`, a job-ended hook). Services flush, never commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth.service import Principal
from app.auth.tenancy import can_see, visible
from app.benefit.analysis import CandidateAnalysis, StudyAnalysis
from app.errors import Conflict, InvalidInput
from app.estimates.service import Prepared
from app.evals import holdout
from app.evals.stats import cost_per_improvement
from app.jobs import estimates_link, lifecycle, snapshot
from app.jobs import service as jobs_service
from app.jobs.schemas import JobIn
from app.kit import ids
from app.kit.pagination import keyset_page
from app.models import Dataset, Job, JobEval, JobStatus, Study, StudyPilot, StudyStatus
from app.models.base import new_id, utcnow
from app.studies.schemas import (
    CandidateIn,
    CandidateOut,
    PilotOut,
    ProgressOut,
    StudyIn,
    StudyOut,
)

# Evaluations spread over each pilot besides the base model's and the final one: enough for the
# console to draw a pilot's curve, few enough to keep a short run's evaluating small.
PILOT_EVAL_POINTS = 2
STUDY_TAG = "study"  # every pilot job carries tag study=<study id>, for reports and filters


@dataclass(frozen=True)
class PlannedCandidate:
    """One candidate estimated on the whole data, with its pilots' estimated costs."""

    candidate: CandidateIn
    prepared: Prepared
    full_cost_usd: float | None
    pilot_costs_usd: tuple[float, ...]


@dataclass(frozen=True)
class Plan:
    """What a study will run and what its pilots are estimated to cost."""

    study_in: StudyIn
    full_rows: int
    pilot_rows: tuple[int, ...]
    candidates: tuple[PlannedCandidate, ...]

    @property
    def pilot_cost_usd(self) -> float:
        """The estimated cost of every pilot together."""
        return sum(sum(c.pilot_costs_usd) for c in self.candidates)


def dataset_rows(session: Session, *, study_in: StudyIn, principal: Principal) -> int:
    """The training examples of the study's dataset (those not held out); 422 when it is not
    one the caller may use."""
    row = session.get(Dataset, study_in.dataset_id)
    if row is None or not can_see(
        principal, team=row.team, created_by_key_id=row.created_by_key_id
    ):
        raise InvalidInput(f"no dataset with id {study_in.dataset_id!r}", field="dataset_id")
    return row.num_examples - holdout.eval_count(row.num_examples, study_in.eval_fraction)


def _candidate_job(study_in: StudyIn, candidate: CandidateIn) -> JobIn:
    """The job body a candidate implies on the whole data (what its estimate is made for)."""
    return JobIn(
        method=candidate.method,
        model=study_in.model,
        dataset_id=study_in.dataset_id,
        training=study_in.training,
        lora=candidate.lora,
        qlora=candidate.qlora,
        hardware=study_in.hardware,
        eval_fraction=study_in.eval_fraction,
    )


# Fields of a job body that a candidate sets; the rest (model, dataset, training, hardware) are
# the study's own and keep their names in an error.
CANDIDATE_FIELDS = ("method", "lora", "qlora", "learning_rate")


def _for_candidate(exc: InvalidInput, index: int) -> InvalidInput:
    """An estimate's 422 for candidate `index`, naming the candidate's field when it is one."""
    errors = exc.extra.get("errors") or []
    loc = [str(p) for p in errors[0]["loc"]] if errors else []
    if loc and loc[0] not in CANDIDATE_FIELDS:
        return exc
    field = ".".join([f"candidates.{index}", *loc])
    return InvalidInput(f"candidates.{index}: {exc.detail}", field=field)


def plan(*, study_in: StudyIn, principal: Principal, full_rows: int) -> Plan:
    """Estimate each candidate on the whole data and price its pilots (CPU work, no connection
    held); 422 naming the field when the pilots cannot run or cost more than the pilot budget."""
    pilot_rows = tuple(holdout.fraction_count(full_rows, f) for f in study_in.fractions)
    if len(set(pilot_rows)) < len(pilot_rows) or pilot_rows[-1] >= full_rows:
        raise InvalidInput(
            f"the dataset has {full_rows} training examples: fractions {study_in.fractions} "
            f"give pilots of {list(pilot_rows)} examples, which must all differ and be fewer "
            "than the whole; use fewer or more widely spaced fractions, or a larger dataset",
            field="fractions",
        )
    planned = []
    for i, candidate in enumerate(study_in.candidates):
        job_in = _candidate_job(study_in, candidate)
        try:
            prepared = estimates_link.prepare(job_in=job_in, principal=principal)
        except InvalidInput as exc:
            raise _for_candidate(exc, i) from None
        method = str(candidate.method)
        full = snapshot.take(prepared.result, method=method, max_steps=None)
        costs = []
        for f in study_in.fractions:
            snap = snapshot.take(prepared.result, method=method, max_steps=None, data_fraction=f)
            if snap.cost_usd is None:
                raise InvalidInput(
                    f"candidates.{i} ({candidate.label()}) has no price on {snap.gpu}: it does "
                    "not fit, or the catalog has no price; name hardware.gpu and "
                    "hardware.provider where it runs",
                    field="hardware",
                )
            costs.append(snap.cost_usd)
        planned.append(PlannedCandidate(candidate, prepared, full.cost_usd, tuple(costs)))
    out = Plan(study_in, full_rows, pilot_rows, tuple(planned))
    if out.pilot_cost_usd > study_in.pilot_budget_usd:
        each = "; ".join(
            f"{c.candidate.label()} ${sum(c.pilot_costs_usd):,.4f}" for c in out.candidates
        )
        raise InvalidInput(
            f"the pilots are estimated at ${out.pilot_cost_usd:,.4f} ({each}), over "
            f"pilot_budget_usd ${study_in.pilot_budget_usd:,.4f}; raise pilot_budget_usd, or "
            "pilot fewer candidates or smaller fractions",
            field="pilot_budget_usd",
            estimated_pilot_cost_usd=out.pilot_cost_usd,
        )
    return out


def create(session: Session, *, planned: Plan, principal: Principal) -> Study:
    """Add the study and submit its pilots as queued jobs (flushed; sent after the commit)."""
    study_in = planned.study_in
    study = Study(
        id=new_id("study"),
        status=StudyStatus.RUNNING,
        team=principal.team,
        created_by_key_id=principal.key_id,
        model_ref=planned.candidates[0].prepared.model_ref,
        dataset_id=study_in.dataset_id,
        spec=study_in.model_dump(mode="json"),
        pilot_budget_usd=study_in.pilot_budget_usd,
        est_pilot_cost_usd=planned.pilot_cost_usd,
        full_rows=planned.full_rows,
    )
    session.add(study)
    session.flush()
    tags = {**study_in.tags, STUDY_TAG: study.id}
    for index, entry in enumerate(planned.candidates):
        estimate = entry.prepared.store(session, principal=principal)
        for fraction, rows in zip(study_in.fractions, planned.pilot_rows, strict=True):
            job_in = JobIn(
                estimate_id=estimate.id,
                method=entry.candidate.method,
                eval_fraction=study_in.eval_fraction,
                eval_points=PILOT_EVAL_POINTS,
                data_fraction=fraction,
                seed=study_in.seed,
                learning_rate=entry.candidate.learning_rate,
                lr_schedule=study_in.lr_schedule,
                tags=tags,
            )
            job, _ = jobs_service.create(
                session, job_in=job_in, principal=principal, idempotency_key=None
            )
            session.add(
                StudyPilot(
                    job_id=job.id,
                    study_id=study.id,
                    candidate=index,
                    fraction=fraction,
                    rows=rows,
                    estimate_id=estimate.id,
                )
            )
    study.status_detail = f"0 of {len(planned.candidates) * len(planned.pilot_rows)} pilots ended"
    session.flush()
    return study


def get(session: Session, *, study_id: str, principal: Principal, lock: bool = False) -> Study:
    """One study of the caller's tenant by id or unique id prefix; 404 otherwise."""
    study = session.get(Study, study_id, with_for_update=lock)
    if study is not None and can_see(
        principal, team=study.team, created_by_key_id=study.created_by_key_id
    ):
        return study
    mine = visible(principal, team=Study.team, created_by_key_id=Study.created_by_key_id)
    full = ids.unique_match(
        session, id_column=Study.id, visible=mine, value=study_id, kind="study", noun="study"
    )
    found = session.get(Study, full, with_for_update=lock)
    assert found is not None  # just matched, in this transaction
    return found


def list_(
    session: Session, *, principal: Principal, limit: int, cursor: str | None
) -> tuple[Sequence[Study], str | None]:
    """The tenant's studies newest first, one page, and the cursor of the next page."""
    stmt = select(Study).where(
        visible(principal, team=Study.team, created_by_key_id=Study.created_by_key_id)
    )
    return keyset_page(
        session, stmt, created_at=Study.created_at, id_column=Study.id, limit=limit, cursor=cursor
    )


def pilots_of(session: Session, study_id: str) -> list[tuple[StudyPilot, Job]]:
    """The study's pilots with their jobs, by candidate then fraction."""
    rows = session.execute(
        select(StudyPilot, Job)
        .join(Job, Job.id == StudyPilot.job_id)
        .where(StudyPilot.study_id == study_id)
        .order_by(StudyPilot.candidate, StudyPilot.fraction)
    ).all()
    return [(pilot, job) for pilot, job in rows]


def cancel(session: Session, *, study_id: str, principal: Principal) -> Study:
    """Cancel every pilot still queued or running, and the study with them; 409 once it ended.

    The pilots' job rows are locked before the study's, the order a pilot ending on a worker
    takes them in (its job, then its study in the job-ended hook), so the two never deadlock.
    """
    found = get(session, study_id=study_id, principal=principal)
    jobs = session.scalars(
        select(Job)
        .join(StudyPilot, StudyPilot.job_id == Job.id)
        .where(StudyPilot.study_id == found.id)
        .order_by(Job.id)
        .with_for_update(of=Job)
    ).all()
    study = session.get(Study, found.id, with_for_update=True, populate_existing=True)
    assert study is not None  # just found, and studies are not deleted
    if study.status != StudyStatus.RUNNING:
        raise Conflict(f"study {study.id} already ended: {study.status}")
    study.status = StudyStatus.CANCELLED
    study.finished_at = utcnow()
    study.status_detail = "cancelled; its pilots still queued or running were cancelled"
    session.flush()  # the pilots' job-ended hooks see a study that no longer waits for them
    for job in jobs:
        if not JobStatus(job.status).is_final:
            lifecycle.cancel(session, job)
    session.flush()
    return study


def _finals(session: Session, jobs: list[Job]) -> dict[str, JobEval]:
    """The final evaluation of each ended job's latest attempt, in one query."""
    ended = {job.id: job.attempts for job in jobs if JobStatus(job.status).is_final}
    rows = session.scalars(
        select(JobEval)
        .where(JobEval.job_id.in_(list(ended)), JobEval.final.is_(True))
        .order_by(JobEval.id)
    )
    return {row.job_id: row for row in rows if row.attempt == ended[row.job_id]}


def _pilot_out(pilot: StudyPilot, job: Job, evaluation: JobEval | None) -> PilotOut:
    return PilotOut(
        job_id=job.id,
        fraction=pilot.fraction,
        rows=pilot.rows,
        status=job.status,
        eval_loss=evaluation.loss if evaluation is not None else None,
        eval_loss_se=evaluation.loss_se if evaluation is not None else None,
        cost_usd=job.act_cost_usd if job.act_cost_usd is not None else job.est_cost_usd,
    )


def _per_unit(analysis: StudyAnalysis | None, found: CandidateAnalysis | None) -> float | None:
    """The candidate's predicted $ per nat of eval loss removed from the base model's."""
    if analysis is None or analysis.base_eval_loss is None or found is None:
        return None
    if found.predicted_cost_usd is None or found.predicted_eval_loss is None:
        return None
    return cost_per_improvement(
        found.predicted_cost_usd.value, analysis.base_eval_loss, found.predicted_eval_loss.value
    )


def to_out(session: Session, study: Study) -> StudyOut:
    """The API view of a study: its pilots as they stand and, once analysed, the analysis."""
    study_in = StudyIn.model_validate(study.spec)
    analysis = StudyAnalysis.model_validate(study.result) if study.result is not None else None
    pilots = pilots_of(session, study.id)
    finals = _finals(session, [job for _, job in pilots])
    statuses = [JobStatus(job.status) for _, job in pilots]
    candidates = []
    for index, candidate in enumerate(study_in.candidates):
        found = analysis.candidates[index] if analysis is not None else None
        candidates.append(
            CandidateOut(
                index=index,
                name=candidate.label(),
                method=candidate.method,
                settings=candidate,
                pilots=[
                    _pilot_out(p, j, finals.get(j.id)) for p, j in pilots if p.candidate == index
                ],
                predicted_eval_loss=found.predicted_eval_loss if found else None,
                predicted_cost_usd=found.predicted_cost_usd if found else None,
                fit=found.fit if found else None,
                prob_above_target=found.prob_above_target if found else None,
                usd_per_eval_loss_unit=_per_unit(analysis, found),
                note=found.note if found else None,
            )
        )
    return StudyOut(
        id=study.id,
        status=study.status,
        status_detail=study.status_detail,
        created_at=study.created_at,
        finished_at=study.finished_at,
        model_ref=study.model_ref,
        dataset_id=study.dataset_id,
        eval_set_id=study.eval_set_id,
        fractions=study_in.fractions,
        full_rows=study.full_rows,
        target=study_in.target,
        target_eval_loss=analysis.target_eval_loss if analysis else None,
        base_eval_loss=analysis.base_eval_loss if analysis else None,
        pilot_budget_usd=study.pilot_budget_usd,
        budget_usd=study_in.budget_usd,
        est_pilot_cost_usd=study.est_pilot_cost_usd,
        pilot_cost_usd=sum(job.act_cost_usd or 0.0 for _, job in pilots),
        progress=ProgressOut(
            pilots=len(pilots),
            ended=sum(s.is_final for s in statuses),
            succeeded=sum(s == JobStatus.SUCCEEDED for s in statuses),
            running=sum(s in lifecycle.ACTIVE for s in statuses),
        ),
        candidates=candidates,
        frontier=analysis.frontier if analysis else [],
        recommendation=analysis.recommendation if analysis else None,
    )


def run_full(
    session: Session, *, study_id: str, principal: Principal, candidate: int | None
) -> Job:
    """Submit a candidate of an analysed study (default: the recommended one) on the whole data:
    the estimate its pilots ran, the same settings, seed and held-out items; a queued job."""
    study = get(session, study_id=study_id, principal=principal)
    if study.result is None:
        raise Conflict(f"study {study.id} is {study.status} and has no analysis to act on yet")
    study_in = StudyIn.model_validate(study.spec)
    if candidate is None:
        candidate = StudyAnalysis.model_validate(study.result).recommendation.candidate
        if candidate is None:
            raise Conflict(f"study {study.id} recommends no candidate; name one with `candidate`")
    if candidate >= len(study_in.candidates):
        raise InvalidInput(
            f"the study has {len(study_in.candidates)} candidates (0-"
            f"{len(study_in.candidates) - 1})",
            field="candidate",
        )
    pilot = session.scalars(
        select(StudyPilot).where(StudyPilot.study_id == study.id, StudyPilot.candidate == candidate)
    ).first()
    if pilot is None or pilot.estimate_id is None:
        raise Conflict(f"the estimate of candidate {candidate} of study {study.id} is gone")
    chosen = study_in.candidates[candidate]
    job_in = JobIn(
        estimate_id=pilot.estimate_id,
        method=chosen.method,
        eval_fraction=study_in.eval_fraction,
        eval_points=PILOT_EVAL_POINTS,
        seed=study_in.seed,
        learning_rate=chosen.learning_rate,
        lr_schedule=study_in.lr_schedule,
        max_cost_usd=study_in.budget_usd,
        tags={**study_in.tags, STUDY_TAG: study.id},
    )
    job, _ = jobs_service.create(session, job_in=job_in, principal=principal, idempotency_key=None)
    return job
