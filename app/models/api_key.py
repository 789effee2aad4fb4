"""API keys: stored as a SHA-256 digest of the secret, with one scope and an optional team."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, IdStr, utcnow


class Scope(StrEnum):
    """What a key may do; each scope includes the ones before it."""

    READ = "read"
    SUBMIT = "submit"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        """Position in the read < submit < admin order."""
        return list(Scope).index(self)

    def allows(self, needed: Scope) -> bool:
        """Whether a key with this scope may call a route that needs `needed`."""
        return self.rank >= needed.rank


class ApiKey(Base):
    """One API key. The secret itself is never stored, only its digest."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(IdStr, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    scope: Mapped[Scope] = mapped_column(String(16))
    team: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
