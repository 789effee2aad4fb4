"""Evidence of what each method reached on the same dataset and model, for the verdict (pure data).

Either a finished study's predictions (`StudyEvidence`), or the team's finished full-data jobs
scored on the dataset's held-out items (`JobsEvidence`). The estimates service reads it
(app/benefit/evidence.py) and passes it in, as it passes calibration: the estimator itself reads
no database.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.estimator.spec import Method


@dataclass(frozen=True)
class CandidateEvidence:
    """One candidate's predicted full-data eval loss (80% interval) and cost."""

    name: str
    method: Method
    eval_loss: float
    low: float
    high: float
    cost_usd: float

    def reaches(self) -> str:
        """'LoRA r16 reaches 1.21 (1.19-1.23) for $40.00'."""
        cost = f"${self.cost_usd:,.2f}" if self.cost_usd >= 0.01 else f"${self.cost_usd:.2g}"
        return (
            f"{self.name} reaches {self.eval_loss:.3g} ({self.low:.3g}-{self.high:.3g}) for {cost}"
        )


@dataclass(frozen=True)
class StudyEvidence:
    """What a study measured: its candidates, its target, and whether LoRA fell short of it.

    `lora_insufficient`: every adapter candidate's full-data loss is above the target with at
    least the study's confidence (issue #25's "LoRA tried and not enough", from evidence).
    """

    study_id: str
    target_eval_loss: float
    candidates: tuple[CandidateEvidence, ...]
    lora_insufficient: bool
    confidence: float | None
    rule: str = "no adapter is shown to miss the target with 80% confidence"

    def summary(self) -> str:
        """The study's numbers in one sentence."""
        each = "; ".join(c.reaches() for c in self.candidates)
        return (
            f"study {self.study_id} on this dataset predicts full-data eval loss: {each} "
            f"(target {self.target_eval_loss:.3g})"
        )

    def key(self) -> str:
        """What identifies this evidence in an estimate's cache key."""
        return f"{self.study_id}:{self.lora_insufficient}:{self.summary()}"


@dataclass(frozen=True)
class TriedJob:
    """The best finished full-data job of one configuration, scored on the held-out items."""

    name: str
    method: Method
    job_id: str
    eval_loss: float
    se: float
    cost_usd: float

    def reached(self) -> str:
        """'LoRA r16 lr 0.0002 (job_x) reached 1.31 +- 0.02 for $40.00'."""
        cost = f"${self.cost_usd:,.2f}" if self.cost_usd >= 0.01 else f"${self.cost_usd:.2g}"
        return (
            f"{self.name} ({self.job_id}) reached {self.eval_loss:.3g} +- {2 * self.se:.2g} "
            f"for {cost}"
        )


@dataclass(frozen=True)
class JobsEvidence:
    """What the team's finished jobs on this dataset reached against a target.

    `lora_insufficient` (issue #25): adapters were tried at two or more ranks or learning rates,
    and the best of each is above the target by more than two standard errors.
    """

    target_eval_loss: float
    jobs: tuple[TriedJob, ...]
    lora_insufficient: bool
    rule: str = (
        "no adapter tried at two or more ranks or learning rates stays above the target by "
        "more than two standard errors"
    )

    def summary(self) -> str:
        """The jobs' numbers in one sentence."""
        each = "; ".join(j.reached() for j in self.jobs)
        return (
            f"the team's finished jobs on this dataset's held-out items: {each} "
            f"(target {self.target_eval_loss:.3g})"
        )

    def key(self) -> str:
        """What identifies this evidence in an estimate's cache key."""
        return f"jobs:{self.lora_insufficient}:{self.summary()}"


Evidence = StudyEvidence | JobsEvidence
