"""Idempotent submits: the job an earlier request with the same Idempotency-Key made.

Keys are per API key; the same key with another body is a 422, never a second job.
"""

from __future__ import annotations

import hashlib
import json

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth.service import Principal
from app.errors import InvalidInput
from app.jobs.schemas import JobIn
from app.models import Job

MAX_IDEMPOTENCY_KEY_CHARS = 200  # the jobs.idempotency_key column width


def request_hash(job_in: JobIn) -> str:
    """A digest of the body as validated (defaults filled), so equal requests hash equal."""
    canonical = json.dumps(job_in.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def by_key(session: Session, *, key_id: str, idempotency_key: str) -> Job | None:
    """The job this API key submitted with this Idempotency-Key, if any."""
    return session.scalar(
        select(Job).where(Job.created_by_key_id == key_id, Job.idempotency_key == idempotency_key)
    )


def same_body(job: Job, digest: str) -> Job:
    """`job`, if it was submitted with the body of this digest; else a 422."""
    if job.request_hash != digest:
        raise InvalidInput(
            f"Idempotency-Key was already used for job {job.id} with a different body; "
            "use a new key for a new job",
            field="Idempotency-Key",
            job_id=job.id,
        )
    return job


def replay(
    session: Session, *, job_in: JobIn, principal: Principal, idempotency_key: str | None
) -> Job | None:
    """The job an earlier request with this Idempotency-Key made (422 if its body differed)."""
    if idempotency_key is None:
        return None
    if not 0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY_CHARS:
        raise InvalidInput(
            f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_CHARS} characters",
            field="Idempotency-Key",
        )
    found = by_key(session, key_id=principal.key_id, idempotency_key=idempotency_key)
    return None if found is None else same_body(found, request_hash(job_in))
