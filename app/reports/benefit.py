"""What eval loss each method bought per dollar: "$ per unit of eval-loss improvement" by method.

A succeeded job that evaluated its base model (step 0) and its end on the same attempt removed
`base - final` nats of mean eval loss for its cost; per method the report sums both over the
tenant's filtered jobs (the dollars over the nats: what a unit of improvement cost in all) and
gives the median of the jobs' own ratios (`app/evals/stats.cost_per_improvement`). Jobs whose
loss did not fall are counted but have no ratio. Improvements on different datasets are not the
same unit of quality: filter to one dataset's jobs (e.g. a study's tag) to compare methods.
"""

from __future__ import annotations

import statistics
from collections import defaultdict

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from app.evals.stats import cost_per_improvement
from app.jobs.filters import ReportFilters, describe
from app.models import Job, JobEval, JobStatus


class BenefitRow(BaseModel):
    """One method's jobs: what they cost and how much eval loss they removed."""

    method: str
    jobs: int = Field(description="succeeded jobs with a base and a final evaluation")
    cost_usd: float
    eval_loss_improvement: float = Field(description="sum over the jobs of base - final loss")
    usd_per_eval_loss_unit: float | None = Field(
        description="cost_usd / eval_loss_improvement: $ per nat of mean eval loss removed"
    )
    median_usd_per_eval_loss_unit: float | None = Field(
        description="the median of the jobs' own $ per nat (those whose loss fell)"
    )


class BenefitReport(BaseModel):
    """$ per unit of eval-loss improvement, one row per method."""

    filters: dict[str, object]
    rows: list[BenefitRow]


def benefit(session: Session, *, filters: ReportFilters) -> BenefitReport:
    """Per method: jobs, cost, eval loss removed and $ per unit removed."""
    base, final = aliased(JobEval), aliased(JobEval)
    rows = session.execute(
        select(Job.method, Job.act_cost_usd, base.loss, final.loss)
        .join(final, (final.job_id == Job.id) & final.final.is_(True))
        .join(
            base,
            (base.job_id == Job.id) & (base.step == 0) & (base.attempt == final.attempt),
        )
        .where(filters.where(), Job.status == JobStatus.SUCCEEDED, final.attempt == Job.attempts)
    ).all()
    by_method: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    for method, cost, base_loss, final_loss in rows:
        by_method[method].append((cost or 0.0, base_loss, final_loss))
    out = []
    for method in sorted(by_method):
        jobs = by_method[method]
        cost = sum(c for c, _, _ in jobs)
        bases, finals = sum(b for _, b, _ in jobs), sum(f for _, _, f in jobs)
        ratios = [r for c, b, f in jobs if (r := cost_per_improvement(c, b, f)) is not None]
        out.append(
            BenefitRow(
                method=method,
                jobs=len(jobs),
                cost_usd=cost,
                eval_loss_improvement=bases - finals,
                usd_per_eval_loss_unit=cost_per_improvement(cost, bases, finals),
                median_usd_per_eval_loss_unit=statistics.median(ratios) if ratios else None,
            )
        )
    return BenefitReport(filters=describe(filters), rows=out)
