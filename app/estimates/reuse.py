"""Estimates are content-addressed: the same question of the same tenant on the same UTC day gets
the estimate stored for it, not another row (POST /v1/estimates).

The key is a SHA-256 over everything a stored estimate is computed from: the request as stored,
the model (its reference and config hash), the dataset, the catalog version (every price import,
override and rate-card upload makes a new one), the calibration table, the UTC day and the price
age limit (staleness notes, rate-card windows), and the source of the code that computes the
answer (`CODE_FINGERPRINT`, so a deployment never serves an answer its predecessor computed).
Computing the key costs a small JSON document, not the 25 kB answer, so a repeated request is
answered without running, storing or re-validating the estimate: its JSON is kept per estimate
id in a bounded in-process cache (estimates are immutable once stored).

The hot path goes further for a request whose inputs are all in its body (a catalog model or
an inline config, no uploaded dataset): the process remembers its answer with the stamps of
what could change it (`STAMPS`: the newest catalog version; the count and newest finish of
succeeded jobs, from which every tenant's calibration is fitted; and the device speeds live
workers measured), and a repeat costs one query comparing them.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Select, bindparam, func, select
from sqlalchemy.orm import Session

from app.auth.service import Principal
from app.catalog import service as catalog_service
from app.catalog.schemas import ModelPathIn
from app.config import get_settings
from app.estimates.schemas import EstimateIn
from app.models import Estimate, Job, JobStatus, WorkerNode
from app.models.base import utcnow

K = TypeVar("K")
V = TypeVar("V")
APP = Path(__file__).resolve().parent.parent
# The packages whose code or data decide what an estimate says.
ANSWERING_PACKAGES = ("estimator", "catalog", "estimates", "datasets")
ANSWERING_SUFFIXES = (".py", ".csv", ".json")
RESPONSE_CACHE_SIZE = 256  # estimates' JSON kept per process (about 25 kB each)
# Every tenant's calibration is fitted from its own succeeded jobs (app/calibration/service.py
# `current`): count and newest finish of all succeeded jobs change whenever any of those does.
_SUCCEEDED = (
    select(func.count(), func.max(Job.finished_at))
    .where(Job.status == JobStatus.SUCCEEDED)
    .subquery()
)


def measured_live(cutoff: datetime | ColumnElement[Any]) -> ColumnElement[bool]:
    """Workers heard since `cutoff` whose heartbeat carries a measured device speed."""
    return (
        (WorkerNode.last_seen_at >= cutoff)
        & WorkerNode.matmul_tflops.is_not(None)
        & WorkerNode.memory_gbps.is_not(None)
        & WorkerNode.host_s_per_layer.is_not(None)
    )


# Estimates for a GPU kind use the speed its live workers measured (service.measured_speeds):
# how many such workers there are and the sums of their figures change when a worker reports its
# first measurement, measures again, or falls silent past the heartbeat limit.
_SPEEDS = (
    select(
        func.count(),
        func.sum(WorkerNode.matmul_tflops),
        func.sum(WorkerNode.memory_gbps),
        func.sum(WorkerNode.host_s_per_layer),
    )
    .where(measured_live(bindparam("heard_since")))
    .subquery()
)
# Everything an estimate reads from the database that can change, in one round trip.
STAMPS = select(catalog_service.NEWEST_VERSION.scalar_subquery(), *_SUCCEEDED.c, *_SPEEDS.c)


def _code_fingerprint() -> str:
    digest = hashlib.sha256()
    for package in ANSWERING_PACKAGES:
        for path in sorted((APP / package).rglob("*")):
            if path.suffix in ANSWERING_SUFFIXES and path.is_file():
                digest.update(str(path.relative_to(APP)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


CODE_FINGERPRINT = _code_fingerprint()


def content_key(
    *,
    request: Mapping[str, Any],
    model_ref: str,
    config_hash: str,
    dataset: str,
    catalog_version: int,
    calibration: Mapping[Any, Any],
    day: date,
    price_max_age_days: int,
    speeds: Mapping[str, Any] | None = None,
    fleet: str = "",
) -> str:
    """The SHA-256 naming an estimate's content by what it is computed from."""
    inputs = [
        CODE_FINGERPRINT,
        request,
        model_ref,
        config_hash,
        dataset,
        catalog_version,
        repr(sorted((repr(k), repr(v)) for k, v in calibration.items())),
        day.isoformat(),
        price_max_age_days,
        # the device speeds live workers measured (an estimate made without them is another)
        repr(sorted((k, repr(v)) for k, v in (speeds or {}).items())),
        fleet,  # what the workers can run: node size, nodes per job, kinds served
    ]
    return hashlib.sha256(json.dumps(inputs, separators=(",", ":")).encode()).hexdigest()


def _find(own: ColumnElement[bool]) -> Select[Any]:
    return (
        select(Estimate.id)
        .where(Estimate.content_hash == bindparam("key"), own)
        .order_by(Estimate.created_at, Estimate.id)
        .limit(1)
    )


# Built once: SQLAlchemy then reuses their compiled form without rebuilding them per request.
_FIND_OF_TEAM = _find(Estimate.team == bindparam("team"))
_FIND_OF_KEY = _find(Estimate.team.is_(None) & (Estimate.created_by_key_id == bindparam("key_id")))


def find(session: Session, *, key: str, principal: Principal) -> str | None:
    """The id of the estimate stored under `key` for the caller's own tenant (an admin's too:
    never another tenant's), if any; the oldest should two identical requests have raced."""
    if principal.team is not None:
        found = session.scalar(_FIND_OF_TEAM, {"key": key, "team": principal.team})
    else:
        found = session.scalar(_FIND_OF_KEY, {"key": key, "key_id": principal.key_id})
    return None if found is None else str(found)


class Lru(Generic[K, V]):
    """A bounded map, least recently used dropped first; thread-safe."""

    def __init__(self, size: int = RESPONSE_CACHE_SIZE) -> None:
        self._size = size
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        """The value kept under `key`, or None."""
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._items.clear()

    def put(self, key: K, value: V) -> None:
        """Keep `value` under `key`."""
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)


responses: Lru[str, bytes] = Lru()  # estimate id -> its JSON


@dataclass(frozen=True)
class Answer:
    """A request's stored estimate, with the stamps and the UTC day it was answered at."""

    estimate_id: str
    body: bytes
    stamps: tuple[Any, ...]
    day: date


answers: Lru[tuple[str, str | None, str, int, str, str], Answer] = Lru()


def heard_since() -> datetime:
    """The oldest heartbeat of a worker still counted as alive."""
    return utcnow() - timedelta(seconds=get_settings().heartbeat_stale_s)


def stamps(session: Session) -> tuple[Any, ...]:
    """The current `STAMPS`."""
    return tuple(session.execute(STAMPS, {"heard_since": heard_since()}).one())


def request_key(
    session: Session,
    *,
    estimate_in: EstimateIn,
    principal: Principal,
    price_max_age_days: int,
    fleet: str = "",
) -> tuple[str, str | None, str, int, str, str] | None:
    """Where the process keeps this request's answer: database, tenant, price age limit and
    request; None when the request reads inputs outside its body (a model folder, an uploaded
    dataset)."""
    if isinstance(estimate_in.model, ModelPathIn) or estimate_in.dataset.dataset_id is not None:
        return None
    tenant = principal.team if principal.team is not None else None
    owner = "" if principal.team is not None else principal.key_id
    database = str(session.get_bind().engine.url)
    return database, tenant, owner, price_max_age_days, fleet, estimate_in.model_dump_json()
