"""Evidence from a finished study of the same dataset and model, for the verdict (pure data).

The estimates service reads it from the tenant's newest analysed study (app/benefit/evidence.py)
and passes it in, as it passes calibration: the estimator itself reads no database.
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
