"""The tenant's evidence on a dataset: its newest analysed study of the same model and dataset,
else its finished full-data jobs there, judged against the target the estimate names.

Every job of a dataset is scored on the same held-out items (app/evals/holdout.py); the newest
study that finished with predictions is what an estimate on that dataset cites
(app/estimator/recommend.py). Without one, the team's succeeded full-data jobs of the model on
the dataset, scored on the newest job's eval set, are the evidence: LoRA was tried and not
enough when adapters were run at two or more ranks or learning rates and the best of each is
above the target by more than two standard errors (issue #25).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth.service import Principal
from app.auth.tenancy import visible
from app.benefit.analysis import StudyAnalysis
from app.estimator.evidence import (
    CandidateEvidence,
    Evidence,
    JobsEvidence,
    StudyEvidence,
    TriedJob,
)
from app.estimator.spec import LoraSpec, Method
from app.models import Job, JobEval, JobStatus, Study, StudyStatus

# The confidence that every adapter misses the target before the evidence says "LoRA tried and
# not enough" (issue #25: ">= 80% confidence"), the study's own interval level.
INSUFFICIENT_CONFIDENCE = 0.8
# A job's loss is above the target when it is by more than this many of its standard errors
# (issue #25: "above target by more than two paired standard errors").
ABOVE_TARGET_SE = 2.0
MIN_ADAPTER_CONFIGS = 2  # "and a higher rank or LR did not close it": two configurations at least
MAX_EVIDENCE_JOBS = 200  # the newest finished jobs read: a team's recent attempts on a dataset
NAMES = {Method.FULL: "full fine-tuning", Method.LORA: "LoRA", Method.QLORA: "QLoRA"}


def latest(
    session: Session,
    *,
    principal: Principal,
    dataset_id: str | None,
    model_ref: str,
    target_eval_loss: float | None = None,
) -> Evidence | None:
    """The tenant's newest analysed study of `model_ref` on `dataset_id`, else (given a target)
    its finished jobs there."""
    if dataset_id is None:
        return None
    found = _study(session, principal=principal, dataset_id=dataset_id, model_ref=model_ref)
    if found is not None or target_eval_loss is None:
        return found
    return from_jobs(
        session,
        principal=principal,
        dataset_id=dataset_id,
        model_ref=model_ref,
        target_eval_loss=target_eval_loss,
    )


def _study(
    session: Session, *, principal: Principal, dataset_id: str, model_ref: str
) -> StudyEvidence | None:
    study = session.scalars(
        select(Study)
        .where(
            visible(principal, team=Study.team, created_by_key_id=Study.created_by_key_id),
            Study.dataset_id == dataset_id,
            Study.model_ref == model_ref,
            Study.status == StudyStatus.SUCCEEDED,
            Study.result.is_not(None),
        )
        .order_by(Study.finished_at.desc(), Study.id.desc())
        .limit(1)
    ).first()
    if study is None or study.result is None:
        return None
    return from_analysis(study.id, StudyAnalysis.model_validate(study.result))


def from_analysis(study_id: str, analysis: StudyAnalysis) -> StudyEvidence | None:
    """The evidence a stored analysis gives (None without a target or any prediction)."""
    if analysis.target_eval_loss is None:
        return None
    found = []
    misses = []
    for c in analysis.candidates:
        if c.predicted_eval_loss is None or c.predicted_cost_usd is None:
            continue
        loss = c.predicted_eval_loss
        found.append(
            CandidateEvidence(
                name=c.name,
                method=c.method,
                eval_loss=loss.value,
                low=loss.low,
                high=loss.high,
                cost_usd=c.predicted_cost_usd.value,
            )
        )
        if c.method != Method.FULL and c.prob_above_target is not None:
            misses.append(c.prob_above_target)
    if not found:
        return None
    confidence = min(misses) if misses else None
    return StudyEvidence(
        study_id=study_id,
        target_eval_loss=analysis.target_eval_loss,
        candidates=tuple(found),
        lora_insufficient=confidence is not None and confidence >= INSUFFICIENT_CONFIDENCE,
        confidence=confidence,
    )


class TrainedAs(BaseModel):
    """What a job's stored spec (app/jobs/spec.py JobSpec, a layer above) says of how it
    trained: the part of it evidence tells configurations apart by."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    method: Method
    lora: LoraSpec = LoraSpec()
    learning_rate: float | None = None
    data_fraction: float = 1.0

    def config(self) -> tuple[str, str]:
        """(its name, a key telling configurations apart)."""
        lr = f"lr {self.learning_rate:g}" if self.learning_rate is not None else "default lr"
        if self.method == Method.FULL:
            return f"{NAMES[Method.FULL]} {lr}", f"full {lr}"
        name = f"{NAMES[self.method]} r{self.lora.r} {lr}"
        return name, f"{self.method} {self.lora.r} {self.lora.target_modules} {lr}"


def from_jobs(
    session: Session,
    *,
    principal: Principal,
    dataset_id: str,
    model_ref: str,
    target_eval_loss: float,
) -> JobsEvidence | None:
    """What the tenant's succeeded full-data jobs of `model_ref` on `dataset_id` reached, the
    best job of each configuration, on the newest job's eval set."""
    rows = session.execute(
        select(Job, JobEval)
        .join(
            JobEval,
            (JobEval.job_id == Job.id)
            & JobEval.final.is_(True)
            & (JobEval.attempt == Job.attempts),
        )
        .where(
            visible(principal, team=Job.team, created_by_key_id=Job.created_by_key_id),
            Job.dataset_id == dataset_id,
            Job.model_ref == model_ref,
            Job.status == JobStatus.SUCCEEDED,
        )
        .order_by(Job.finished_at.desc(), Job.id.desc())
        .limit(MAX_EVIDENCE_JOBS)
    ).all()
    best: dict[str, TriedJob] = {}
    eval_set: str | None = None
    for job, row in rows:
        spec = TrainedAs.model_validate(job.spec)
        if spec.data_fraction < 1 or row.loss_se is None:
            continue  # a pilot on part of the data, or a single held-out item
        eval_set = eval_set or row.eval_set_id
        if row.eval_set_id != eval_set:
            continue  # scored on other items (another seq_len or eval_fraction)
        name, key = spec.config()
        if key not in best or row.loss < best[key].eval_loss:
            best[key] = TriedJob(
                name, spec.method, job.id, row.loss, row.loss_se, job.act_cost_usd or 0.0
            )
    if not best:
        return None
    tried = tuple(sorted(best.values(), key=lambda j: j.eval_loss))
    adapters = [j for j in tried if j.method != Method.FULL]
    above = all(j.eval_loss - target_eval_loss > ABOVE_TARGET_SE * j.se for j in adapters)
    return JobsEvidence(
        target_eval_loss=target_eval_loss,
        jobs=tried,
        lora_insufficient=len(adapters) >= MIN_ADAPTER_CONFIGS and above,
    )
