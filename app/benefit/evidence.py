"""The tenant's evidence on a dataset: its newest analysed study of the same model and dataset.

Studies share the dataset's held-out items across their pilots; the newest one that finished
with predictions is what an estimate on that dataset cites (app/estimator/recommend.py).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth.service import Principal
from app.auth.tenancy import visible
from app.benefit.analysis import StudyAnalysis
from app.estimator.evidence import CandidateEvidence, StudyEvidence
from app.estimator.spec import Method
from app.models import Study, StudyStatus

# The confidence that every adapter misses the target before the evidence says "LoRA tried and
# not enough" (issue #25: ">= 80% confidence"), the study's own interval level.
INSUFFICIENT_CONFIDENCE = 0.8


def latest(
    session: Session, *, principal: Principal, dataset_id: str | None, model_ref: str
) -> StudyEvidence | None:
    """The evidence of the tenant's newest analysed study of `model_ref` on `dataset_id`."""
    if dataset_id is None:
        return None
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
