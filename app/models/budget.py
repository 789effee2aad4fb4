"""Budgets per team (or any tag) and period, and the thresholds each period has crossed."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Float, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, IdStr, JSONType, TimestampMixin


class BudgetPeriod(StrEnum):
    """How a budget's period is set: each calendar month or quarter (UTC), or fixed dates."""

    MONTH = "month"
    QUARTER = "quarter"
    CUSTOM = "custom"


class BudgetAction(StrEnum):
    """What happens at 100%: only tell (`warn`), or also refuse new jobs (`refuse`)."""

    WARN = "warn"
    REFUSE = "refuse"


class Budget(TimestampMixin, Base):
    """An amount a team's jobs tagged `tag_key=tag_value` may spend per period."""

    __tablename__ = "budgets"
    __table_args__ = (UniqueConstraint("team", "name"),)

    id: Mapped[str] = mapped_column(IdStr, primary_key=True)
    # The tenant: only this team's jobs count, and only its keys see the budget.
    team: Mapped[str] = mapped_column(String(200))  # (team, name) is unique: that index serves
    created_by_key_id: Mapped[str | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="SET NULL")
    )
    name: Mapped[str] = mapped_column(String(200))
    tag_key: Mapped[str] = mapped_column(String(100))
    tag_value: Mapped[str] = mapped_column(String(300))
    period: Mapped[BudgetPeriod] = mapped_column(String(16))
    starts_at: Mapped[datetime | None]  # custom periods only
    ends_at: Mapped[datetime | None]
    amount_usd: Mapped[float] = mapped_column(Float)
    thresholds_pct: Mapped[list[float]] = mapped_column(JSONType)
    action: Mapped[BudgetAction] = mapped_column(String(16))


class BudgetAlert(Base):
    """A threshold a budget's spend reached in one period: announced once, then remembered."""

    __tablename__ = "budget_alerts"

    budget_id: Mapped[str] = mapped_column(
        ForeignKey("budgets.id", ondelete="CASCADE"), primary_key=True
    )
    period_start: Mapped[datetime] = mapped_column(primary_key=True)
    threshold_pct: Mapped[float] = mapped_column(Float, primary_key=True)
    crossed_at: Mapped[datetime]
    spend_usd: Mapped[float] = mapped_column(Float)
