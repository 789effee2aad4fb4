"""Estimate routes (read scope): create, get, list."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Annotated

from fastapi import APIRouter, FastAPI, Path, Request, Response, status
from starlette.concurrency import run_in_threadpool

from app.auth.deps import ReadPrincipal
from app.catalog.resolve import ensure_estimator_loaded
from app.db import SessionDep
from app.estimates import service
from app.estimates.admission import admission
from app.estimates.schemas import EstimateIn, EstimateOut
from app.kit.pagination import CursorQuery, LimitQuery, Page

log = logging.getLogger(__name__)


def _warm() -> None:
    try:
        ensure_estimator_loaded()
    except Exception:  # warming is an optimisation; a failure shows on the first real request
        log.exception("estimator warm-up failed")


@asynccontextmanager
async def _lifespan(_: FastAPI) -> AsyncIterator[None]:
    # Importing torch/transformers/peft and building a first model take seconds; pay it before
    # serving. Not in a background thread: transformers' lazy imports are not thread-safe, and a
    # request (or a test) importing it at the same time saw "cannot import name 'AutoConfig'".
    await run_in_threadpool(_warm)
    yield


router = APIRouter(prefix="/v1/estimates", tags=["estimates"], lifespan=_lifespan)
_URL = {"type": "string"}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=EstimateOut,
    responses={
        201: {"headers": {"Location": {"description": "the estimate's URL", "schema": _URL}}},
        503: {"description": "the estimator is busy: retry after Retry-After seconds"},
    },
)
async def create_estimate(
    estimate_in: EstimateIn, principal: ReadPrincipal, request: Request
) -> Response:
    """Estimate memory, time and cost of full fine-tuning, LoRA and QLoRA, and recommend one.

    The same request of the same tenant on the same UTC day, with the same catalog and
    calibration, gets the estimate stored for it (same id) instead of a new one.
    At most TUNECOST_ESTIMATE_SLOTS run at once and TUNECOST_ESTIMATE_QUEUE wait; past that
    the answer is 503 with Retry-After.
    """
    async with admission(request.app).slot():
        estimate_id, body = await run_in_threadpool(
            partial(service.create_or_reuse, estimate_in=estimate_in, principal=principal)
        )
    # An EstimateOut validated and serialized when it was built, not again by the route.
    return Response(
        body,
        status_code=status.HTTP_201_CREATED,
        media_type="application/json",
        headers={"Location": f"{router.prefix}/{estimate_id}"},
    )


@router.get("/{estimate_id}", response_model=EstimateOut)
def get_estimate(
    estimate_id: Annotated[str, Path(max_length=40)], session: SessionDep, principal: ReadPrincipal
) -> EstimateOut:
    """A stored estimate of the key's tenant, with the catalog version it was priced at."""
    return service.to_out(service.get(session, estimate_id=estimate_id, principal=principal))


@router.get("", response_model=Page[EstimateOut])
def list_estimates(
    session: SessionDep,
    principal: ReadPrincipal,
    limit: LimitQuery = 20,
    cursor: CursorQuery = None,
) -> Page[EstimateOut]:
    """The tenant's estimates, newest first; pass `next_cursor` back as `cursor` for more."""
    rows, next_cursor = service.list_(session, principal=principal, limit=limit, cursor=cursor)
    return Page[EstimateOut](items=[service.to_out(r) for r in rows], next_cursor=next_cursor)
