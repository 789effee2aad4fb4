"""A study moves on when its pilots end: progress, then the fit, predictions and verdict.

`on_pilot_end` is a job-ended hook (`app/jobs/lifecycle.on_job_end`), registered by `install()`
from the processes that end jobs (`app/main.py`, `worker/celery_app.py`). It runs in the
transaction that ends the pilot, with the study's row locked, so two pilots ending at once on two
workers analyse the study once: the second waits for the first's commit, then sees every pilot
ended. The analysis fits E + B * D^-beta per candidate over its completed pilots' per-item
losses on the shared held-out items (`app/studies/fit.py`), prices the full-data run from the
candidate's estimate, and stores the frontier and the verdict (`app/studies/verdict.py`).
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.benefit.analysis import (
    CandidateAnalysis,
    FitOut,
    Interval,
    RecommendationOut,
    StudyAnalysis,
)
from app.evals.service import base_eval, final_eval
from app.jobs import estimates_link, lifecycle, snapshot
from app.models import Estimate, Job, JobEval, JobStatus, Study, StudyPilot, StudyStatus
from app.models.base import utcnow
from app.studies import fit, verdict
from app.studies.schemas import CandidateIn, StudyIn
from app.studies.service import pilots_of

LEVEL = fit.DEFAULT_LEVEL  # the 80% interval the study reports


def install() -> None:
    """Register the study hook with the job lifecycle, once per process."""
    if on_pilot_end not in lifecycle.END_HOOKS:
        lifecycle.on_job_end(on_pilot_end)


def on_pilot_end(session: Session, job: Job) -> None:
    """If `job` is a pilot of a running study: count it, and analyse the study after its last."""
    pilot = session.get(StudyPilot, job.id)
    if pilot is None:
        return
    study = session.get(Study, pilot.study_id, with_for_update=True, populate_existing=True)
    if study is None or study.status != StudyStatus.RUNNING:
        return
    pilots = pilots_of(session, study.id)
    ended = sum(JobStatus(j.status).is_final for _, j in pilots)
    study.status_detail = f"{ended} of {len(pilots)} pilots ended"
    if ended == len(pilots):
        analyse(session, study, pilots)


def _item_losses(row: JobEval) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """Each item's mean token loss and its loss tokens (an item with none weighs nothing)."""
    tokens = tuple(int(t) for t in row.item_tokens)
    losses = tuple(
        float(s) / t if t > 0 else 0.0 for s, t in zip(row.item_loss_sums, tokens, strict=True)
    )
    return losses, tokens


def _cost(session: Session, *, estimate_id: str | None, method: str) -> Interval | None:
    """The full-data run's estimated cost with its low/high, from the candidate's estimate."""
    row = session.get(Estimate, estimate_id) if estimate_id is not None else None
    if row is None:
        return None
    snap = snapshot.take(estimates_link.result_of(row), method=method, max_steps=None)
    if snap.cost_usd is None:
        return None
    span = snap.method_result.cost_usd_range
    low, high = (span.low, span.high) if span is not None else (snap.cost_usd, snap.cost_usd)
    return Interval(value=snap.cost_usd, low=low, high=high)


def _candidate(
    session: Session,
    study: Study,
    index: int,
    candidate: CandidateIn,
    pilots: list[tuple[StudyPilot, Job]],
    target: float | None,
) -> tuple[CandidateAnalysis, fit.Interval | None]:
    name, method = candidate.label(), candidate.method
    cost = _cost(session, estimate_id=pilots[0][0].estimate_id, method=str(method))
    done = []
    for pilot, job in pilots:
        row = final_eval(session, job_id=job.id) if job.status == JobStatus.SUCCEEDED else None
        if row is not None:
            losses, tokens = _item_losses(row)
            done.append(
                fit.Pilot(pilot.fraction, pilot.rows, losses, job.act_cost_usd or 0.0, tokens)
            )
    if len(done) < 2:
        note = (
            f"{len(done)} of {len(pilots)} pilots completed with an evaluation; "
            "a curve needs at least two"
        )
        empty = CandidateAnalysis(
            name=name,
            method=method,
            predicted_eval_loss=None,
            predicted_cost_usd=cost,
            fit=None,
            prob_above_target=None,
            note=note,
        )
        return empty, None
    curve, loss = fit.fit_curve(done, study.full_rows, level=LEVEL, seed=index)
    found = CandidateAnalysis(
        name=name,
        method=method,
        predicted_eval_loss=Interval(value=loss.value, low=loss.low, high=loss.high),
        predicted_cost_usd=cost,
        fit=FitOut(
            e=curve.e,
            b=curve.b,
            beta=curve.beta,
            n_pilots=curve.n_pilots,
            residual_rmse=curve.residual_rmse,
            poor=curve.poor,
        ),
        prob_above_target=fit.prob_above(loss, target) if target is not None else None,
    )
    return found, loss


def analyse(session: Session, study: Study, pilots: list[tuple[StudyPilot, Job]]) -> None:
    """Fit each candidate, predict its full-data loss and cost, and store the verdict."""
    study_in = StudyIn.model_validate(study.spec)
    finals = [final_eval(session, job_id=j.id) for _, j in pilots if j.status == "succeeded"]
    sets = {row.eval_set_id for row in finals if row is not None}
    base = next((b for _, j in pilots if (b := base_eval(session, job_id=j.id)) is not None), None)
    base_loss = base.loss if base is not None else None
    target = study_in.target.loss(base_loss)
    study.eval_set_id = next(iter(sets)) if len(sets) == 1 else None
    analysed: list[CandidateAnalysis] = []
    evidence: list[verdict.Evidence] = []
    for index, candidate in enumerate(study_in.candidates):
        mine = [(p, j) for p, j in pilots if p.candidate == index]
        found, loss = _candidate(session, study, index, candidate, mine, target)
        analysed.append(found)
        if loss is not None and found.predicted_cost_usd is not None:
            evidence.append(
                verdict.Evidence(
                    index=index,
                    name=found.name,
                    method=candidate.method,
                    loss=loss,
                    cost_usd=found.predicted_cost_usd.value,
                    poor=found.fit.poor if found.fit is not None else None,
                )
            )
    if len(sets) > 1:
        chosen = verdict.Verdict(
            None, [f"The pilots were scored on different held-out sets ({len(sets)}): no verdict."]
        )
    elif target is None:
        chosen = verdict.Verdict(None, ["No pilot evaluated the base model: no target to meet."])
    else:
        chosen = verdict.decide(evidence, target=target, budget_usd=study_in.budget_usd)
    pick = study_in.candidates[chosen.candidate] if chosen.candidate is not None else None
    study.result = StudyAnalysis(
        base_eval_loss=base_loss,
        target_eval_loss=target,
        candidates=analysed,
        frontier=verdict.frontier(evidence),
        recommendation=RecommendationOut(
            candidate=chosen.candidate,
            name=pick.label() if pick is not None else None,
            method=pick.method if pick is not None else None,
            reasons=chosen.reasons,
        ),
    ).model_dump(mode="json")
    study.status = StudyStatus.SUCCEEDED if evidence else StudyStatus.FAILED
    study.finished_at = utcnow()
    succeeded = sum(j.status == JobStatus.SUCCEEDED for _, j in pilots)
    study.status_detail = f"analysed: {succeeded} of {len(pilots)} pilots completed"
