"""Request and response bodies of /v1/budgets."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.kit.instants import UtcInstant, as_utc
from app.models import BudgetAction, BudgetPeriod

MAX_AMOUNT_USD = 1e9  # a budget above a billion dollars is a typo
MAX_THRESHOLDS = 10
MAX_THRESHOLD_PCT = 1000.0  # 10x the budget: past that a threshold says nothing new
MAX_CUSTOM_DAYS = 366 * 5  # a custom period longer than five years is not a budget period
DEFAULT_THRESHOLDS = (50.0, 80.0, 100.0)
TAG_VALUE_MAX = 300  # job_tags.value
# The alphabet and width of job_tags.key, as jobs are tagged (app/jobs/schemas.py).
TAG_KEY = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")


def _thresholds(values: list[float]) -> list[float]:
    if len(values) > MAX_THRESHOLDS:
        raise ValueError(f"at most {MAX_THRESHOLDS} thresholds")
    for value in values:
        if not 0 < value <= MAX_THRESHOLD_PCT:
            raise ValueError(f"each threshold is a percentage in (0, {MAX_THRESHOLD_PCT:g}]")
    return sorted(set(values))


class BudgetIn(BaseModel):
    """A budget: how much the team's jobs tagged `tag_key=tag_value` may spend per period."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")
    amount_usd: float = Field(gt=0, le=MAX_AMOUNT_USD)
    period: BudgetPeriod = Field(
        BudgetPeriod.MONTH, description="month or quarter (UTC calendar), or custom dates"
    )
    starts_at: datetime | None = Field(None, description="custom periods: the first instant")
    ends_at: datetime | None = Field(None, description="custom periods: the end (exclusive)")
    tag_key: str = Field("team", description="the tag whose value selects the jobs")
    tag_value: str | None = Field(
        None, min_length=1, max_length=TAG_VALUE_MAX, description="default: the team"
    )
    thresholds_pct: list[float] = Field(
        default_factory=lambda: list(DEFAULT_THRESHOLDS),
        description="percentages of the amount that send budget.threshold_crossed once a period",
    )
    action: BudgetAction = Field(
        BudgetAction.WARN, description="at 100%: warn only, or refuse new jobs (409 at submit)"
    )
    team: str | None = Field(
        None, min_length=1, max_length=200, description="admin keys: the team the budget is for"
    )

    @field_validator("tag_key")
    @classmethod
    def _key(cls, value: str) -> str:
        if not TAG_KEY.match(value):
            raise ValueError("a tag key is 1-100 of A-Z a-z 0-9 _ . -")
        return value

    @field_validator("thresholds_pct")
    @classmethod
    def _pcts(cls, values: list[float]) -> list[float]:
        return _thresholds(values)

    @field_validator("starts_at", "ends_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return as_utc(value) if value is not None else None

    @model_validator(mode="after")
    def _dates(self) -> BudgetIn:
        custom = self.period == BudgetPeriod.CUSTOM
        given = self.starts_at is not None or self.ends_at is not None
        if not custom and given:
            raise ValueError("starts_at and ends_at are for period custom only")
        if custom:
            if self.starts_at is None or self.ends_at is None:
                raise ValueError("period custom needs starts_at and ends_at")
            if self.ends_at <= self.starts_at:
                raise ValueError("ends_at must be after starts_at")
            if self.ends_at - self.starts_at > timedelta(days=MAX_CUSTOM_DAYS):
                raise ValueError(f"a custom period is at most {MAX_CUSTOM_DAYS} days")
        return self


class BudgetPatch(BaseModel):
    """What a budget may change: its name, amount, thresholds and action (not what it counts)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")
    amount_usd: float | None = Field(None, gt=0, le=MAX_AMOUNT_USD)
    thresholds_pct: list[float] | None = None
    action: BudgetAction | None = None

    @field_validator("thresholds_pct")
    @classmethod
    def _pcts(cls, values: list[float] | None) -> list[float] | None:
        return _thresholds(values) if values is not None else None


class AlertOut(BaseModel):
    """A threshold this period's spend reached, and when."""

    model_config = ConfigDict(from_attributes=True)

    threshold_pct: float
    crossed_at: UtcInstant
    spend_usd: float = Field(description="spent + accrued + committed when it was crossed")


class BurnOut(BaseModel):
    """The budget's current period: what is spent, running and committed, and where it heads."""

    period_start: UtcInstant
    period_end: UtcInstant
    spent_usd: float = Field(description="jobs finished in the period (metered, list price)")
    accrued_usd: float = Field(description="queued and running jobs, their attempts so far")
    committed_usd: float = Field(description="the rest of their estimates, capped by max_cost_usd")
    committed_low_usd: float
    committed_high_usd: float
    total_usd: float = Field(description="spent + accrued + committed: what refusal compares")
    left_usd: float = Field(description="amount - total (negative when over)")
    used_pct: float
    finished_jobs: int
    active_jobs: int
    daily_rate_usd: float = Field(description="finished spend per day over the last week")
    projected_usd: float = Field(description="total + daily rate x days left")
    projected_low_usd: float
    projected_high_usd: float
    days_left: float
    alerts: list[AlertOut] = Field(description="thresholds crossed in this period")


class BudgetOut(BaseModel):
    """A budget and its current period's burn."""

    id: str
    name: str
    team: str
    tag_key: str
    tag_value: str
    period: BudgetPeriod
    starts_at: UtcInstant | None
    ends_at: UtcInstant | None
    amount_usd: float
    thresholds_pct: list[float]
    action: BudgetAction
    created_at: UtcInstant
    updated_at: UtcInstant
    burn: BurnOut = Field(description="the period holding now (a custom budget: its dates)")


class BudgetList(BaseModel):
    """The tenant's budgets, by name."""

    items: list[BudgetOut]
