"""Stored estimates: the request as given and the estimator's full answer."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, IdStr, JSONType, TimestampMixin


class Estimate(TimestampMixin, Base):
    """One answer of the estimator, with the catalog version it priced against."""

    __tablename__ = "estimates"

    id: Mapped[str] = mapped_column(IdStr, primary_key=True)
    model_ref: Mapped[str] = mapped_column(String(300), index=True)
    catalog_version: Mapped[int]
    request: Mapped[dict[str, Any]] = mapped_column(JSONType)
    result: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_by_key_id: Mapped[str | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="SET NULL")
    )
    team: Mapped[str | None] = mapped_column(String(200))
    # SHA-256 of what an identical request of the same tenant and UTC day would store
    # (app/estimates/service.py `content_key`): such a request gets this row back. Null on
    # estimates a job submit made for itself, which are never shared.
    content_hash: Mapped[str | None] = mapped_column(String(64), index=True)
