"""API keys: create, verify, revoke. Secrets are random and shown once; we keep a digest."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import bindparam, func, select, true, update
from sqlalchemy.orm import Session

from app.kit import ids
from app.models import ApiKey, Scope
from app.models.base import new_id, utcnow

KEY_PREFIX = "tc"
# 32 random bytes = 256 bits: a plain SHA-256 digest is enough at rest (no brute force possible),
# so lookups stay one indexed query instead of a slow password hash per request.
SECRET_BYTES = 32
# Writing last_used_at on every request would make every read a write; once a minute is enough.
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id, scope and team."""

    key_id: str
    name: str
    scope: Scope
    team: str | None

    @property
    def is_admin(self) -> bool:
        """Whether this caller holds the admin scope."""
        return self.scope == Scope.ADMIN


def digest(secret: str) -> str:
    """The SHA-256 hex digest under which a key is stored."""
    return hashlib.sha256(secret.encode()).hexdigest()


def create(
    session: Session,
    *,
    name: str,
    scope: Scope,
    team: str | None = None,
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    """Create a key; returns the row and the secret, which is never retrievable again."""
    prefix = secrets.token_hex(4)
    secret = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(SECRET_BYTES)}"
    key = ApiKey(
        id=new_id("key"),
        name=name,
        prefix=prefix,
        digest=digest(secret),
        scope=scope,
        team=team,
        expires_at=expires_at,
    )
    session.add(key)
    session.flush()
    return key, secret


_BY_DIGEST = select(ApiKey).where(ApiKey.digest == bindparam("digest"))  # built once: every request


def authenticate(session: Session, *, secret: str) -> ApiKey | None:
    """The live key with this secret, or None if unknown, revoked or expired."""
    key = session.scalar(_BY_DIGEST, {"digest": digest(secret)})
    if key is None or key.revoked_at is not None:
        return None
    if key.expires_at is not None and _aware(key.expires_at) <= utcnow():
        return None
    return key


def is_last_use_stale(key: ApiKey) -> bool:
    """Whether the key's recorded last use is older than the resolution we keep."""
    return key.last_used_at is None or utcnow() - _aware(key.last_used_at) > LAST_USED_RESOLUTION


def touch(session: Session, *, key_id: str) -> None:
    """Record that a key was used now."""
    session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=utcnow()))


def find(session: Session, *, key_id: str) -> ApiKey:
    """A key by id or unique id prefix (`app/kit/ids.py`); NotFound / AmbiguousId otherwise."""
    key = session.get(ApiKey, key_id)
    if key is None:
        full = ids.unique_match(
            session, id_column=ApiKey.id, visible=true(), value=key_id, kind="key", noun="API key"
        )
        key = session.get(ApiKey, full)
    assert key is not None  # found by id, or just matched in this transaction
    return key


def revoke(session: Session, *, key_id: str) -> ApiKey:
    """Revoke a key by id or unique id prefix (idempotent); NotFound if there is none."""
    key = find(session, key_id=key_id)
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        session.flush()
    return key


def list_(session: Session) -> list[ApiKey]:
    """All keys, newest first."""
    return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at.desc())))


def count_live(session: Session) -> int:
    """How many keys are not revoked."""
    return (
        session.scalar(select(func.count()).select_from(ApiKey).where(ApiKey.revoked_at.is_(None)))
        or 0
    )


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; every stored time is UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)
