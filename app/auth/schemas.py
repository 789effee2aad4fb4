"""Request and response bodies of the API-key routes."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from app.kit.instants import UtcInstant
from app.models import Scope


class KeyIn(BaseModel):
    """A key to create."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    scope: Scope
    team: str | None = Field(None, min_length=1, max_length=200)
    expires_in_days: float | None = Field(None, gt=0, le=3650)


class KeyOut(BaseModel):
    """A key as listed: never the secret."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    prefix: str
    scope: Scope
    team: str | None
    created_at: UtcInstant
    expires_at: UtcInstant | None
    revoked_at: UtcInstant | None
    last_used_at: UtcInstant | None


class KeyCreated(KeyOut):
    """A new key, with its secret shown this once."""

    secret: str


class KeySelf(BaseModel):
    """The calling key: who it is and what it may do (the console hides what it may not)."""

    id: str
    name: str
    scope: Scope
    team: str | None


class QuotaOut(BaseModel):
    """One quota of the caller's tenant: its limit, what the tenant holds and what is left."""

    name: str = Field(description="the quota, e.g. quota_datasets")
    setting: str = Field(description="the environment variable that sets its limit")
    counts: str = Field(description="what it counts")
    limit: int
    held: int
    left: int = Field(description="limit - held, at least 0")


class QuotasOut(BaseModel):
    """The quotas of the caller's tenant (a team, or the key itself when it has none)."""

    team: str | None
    items: list[QuotaOut]
