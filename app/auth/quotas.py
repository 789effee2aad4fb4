"""Per-tenant quotas: how many datasets (and stored bytes), active jobs and webhook subscriptions
one tenant may hold, so no team can fill the storage, the queue or the delivery fan-out alone.

A tenant is a team, or a key without a team (app/auth/tenancy.py). Each quota is a setting
(README "Quotas"); a create that would pass it is refused with 409 `quota-exceeded`, naming the
quota, what the tenant holds and how to get room. Admins are held to their own tenant's quotas
like any key: the quota guards the shared service, not a permission.

Two creates that each fit alone must not both pass: the check serialises the tenant's creates
of one kind until the transaction ends.
- PostgreSQL: a transaction-level advisory lock on (kind, tenant); once granted, READ COMMITTED
  shows every row the previous holder committed.
- SQLite (the embedded default): a write takes the one database write lock, held to the end of
  the transaction. The check first writes to the caller's key row (an UPDATE that changes
  nothing), so it waits for any other writer and then counts the newest state.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import ColumnElement, and_, func, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from app.auth.service import Principal
from app.config import get_settings
from app.errors import AppError
from app.models import UNFINISHED_STATUSES, ApiKey, Dataset, Job, WebhookSubscription


class Quota(StrEnum):
    """What a quota counts; the value is the setting's name after `TUNECOST_`."""

    DATASETS = "quota_datasets"
    DATASET_BYTES = "quota_dataset_bytes"
    ACTIVE_JOBS = "quota_active_jobs"
    WEBHOOKS = "quota_webhooks"

    @property
    def setting(self) -> str:
        """The environment variable that sets it."""
        return f"TUNECOST_{self.value.upper()}"


# What makes room under each quota, said in the refusal.
_ROOM = {
    Quota.DATASETS: "delete datasets you no longer need (DELETE /v1/datasets/{id})",
    Quota.DATASET_BYTES: "delete datasets you no longer need (DELETE /v1/datasets/{id})",
    Quota.ACTIVE_JOBS: "wait for queued or running jobs to finish, or cancel some",
    Quota.WEBHOOKS: "delete subscriptions you no longer need (DELETE /v1/webhooks/{id})",
}
NOUN = {
    Quota.DATASETS: "datasets",
    Quota.DATASET_BYTES: "bytes of stored datasets",
    Quota.ACTIVE_JOBS: "queued or running jobs",
    Quota.WEBHOOKS: "webhook subscriptions",
}


class QuotaExceeded(AppError):
    """A create that would take the tenant past a quota; `quota` says which, held and limit."""

    status, title, slug = 409, "Quota exceeded", "quota-exceeded"

    def __init__(self, quota: Quota, *, held: int, adding: int, limit: int) -> None:
        super().__init__(
            f"this would make {held + adding:,} {NOUN[quota]} of your tenant, over its quota "
            f"of {limit:,} ({quota.setting}); {_ROOM[quota]}, or ask the operator to raise "
            f"{quota.setting}",
            extra={
                "quota": {
                    "name": quota.value,
                    "setting": quota.setting,
                    "limit": limit,
                    "held": held,
                    "adding": adding,
                }
            },
        )


@dataclass(frozen=True)
class Tenant:
    """Whose quota a new row counts against: its team, or the key that makes it if none."""

    team: str | None
    key_id: str

    @classmethod
    def of(cls, principal: Principal) -> Tenant:
        """The tenant of the calling key."""
        return cls(team=principal.team, key_id=principal.key_id)

    def owns(
        self,
        team: InstrumentedAttribute[str | None],
        created_by_key_id: InstrumentedAttribute[str | None],
    ) -> ColumnElement[bool]:
        """The SQL condition: a row of this tenant."""
        if self.team is not None:
            return team == self.team
        return and_(team.is_(None), created_by_key_id == self.key_id)

    def lock_name(self, quota: Quota) -> str:
        """A name unique to this tenant and quota kind (team names and key ids cannot clash)."""
        who = f"team:{self.team}" if self.team is not None else f"key:{self.key_id}"
        return f"tunecost.quota:{quota.value}:{who}"


def _serialise(session: Session, tenant: Tenant, quota: Quota) -> None:
    """Hold the tenant's lock for `quota` until the transaction ends (see the module doc)."""
    if session.get_bind().dialect.name == "postgresql":
        name = tenant.lock_name(quota)
        session.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(name, 0))))
    else:
        session.execute(
            update(ApiKey).where(ApiKey.id == tenant.key_id).values(id=ApiKey.id),
            execution_options={"synchronize_session": False},
        )


def _refuse_past(quota: Quota, *, held: int, adding: int) -> None:
    most = limit(quota)
    if held + adding > most:
        raise QuotaExceeded(quota, held=held, adding=adding, limit=most)


def _datasets_held(session: Session, tenant: Tenant) -> tuple[int, int]:
    """The tenant's datasets: how many, and their bytes as uploaded."""
    count, stored = session.execute(
        select(func.count(), func.coalesce(func.sum(Dataset.size_bytes), 0)).where(
            tenant.owns(Dataset.team, Dataset.created_by_key_id)
        )
    ).one()
    return int(count), int(stored)


def _active_jobs_held(session: Session, tenant: Tenant) -> int:
    active = session.scalar(
        select(func.count()).where(
            tenant.owns(Job.team, Job.created_by_key_id), Job.status.in_(UNFINISHED_STATUSES)
        )
    )
    return int(active or 0)


def _webhooks_held(session: Session, tenant: Tenant) -> int:
    held = session.scalar(
        select(func.count()).where(
            tenant.owns(WebhookSubscription.team, WebhookSubscription.created_by_key_id)
        )
    )
    return int(held or 0)


def limit(quota: Quota) -> int:
    """The quota's configured limit."""
    value = getattr(get_settings(), quota.value)
    assert isinstance(value, int)
    return value


def usage(session: Session, tenant: Tenant) -> dict[Quota, tuple[int, int]]:
    """What the tenant holds under each quota, and the limit: {quota: (held, limit)}."""
    count, stored = _datasets_held(session, tenant)
    held = {
        Quota.DATASETS: count,
        Quota.DATASET_BYTES: stored,
        Quota.ACTIVE_JOBS: _active_jobs_held(session, tenant),
        Quota.WEBHOOKS: _webhooks_held(session, tenant),
    }
    return {quota: (held[quota], limit(quota)) for quota in Quota}


def check_dataset(
    session: Session, tenant: Tenant, *, size_bytes: int, serialise: bool = True
) -> None:
    """Refuse a new dataset of `size_bytes` past the tenant's dataset count or byte quota.

    `serialise=False` checks without the lock: a cheap early refusal before an upload's
    analysis, which must not hold the lock (or SQLite's write lock) for its minutes.
    """
    if serialise:
        _serialise(session, tenant, Quota.DATASETS)
    count, stored = _datasets_held(session, tenant)
    _refuse_past(Quota.DATASETS, held=count, adding=1)
    _refuse_past(Quota.DATASET_BYTES, held=stored, adding=size_bytes)


def check_job(session: Session, tenant: Tenant) -> None:
    """Refuse a new job past the tenant's quota of jobs not yet finished."""
    _serialise(session, tenant, Quota.ACTIVE_JOBS)
    _refuse_past(Quota.ACTIVE_JOBS, held=_active_jobs_held(session, tenant), adding=1)


def check_webhook(session: Session, tenant: Tenant) -> None:
    """Refuse a new webhook subscription past the tenant's quota."""
    _serialise(session, tenant, Quota.WEBHOOKS)
    _refuse_past(Quota.WEBHOOKS, held=_webhooks_held(session, tenant), adding=1)
