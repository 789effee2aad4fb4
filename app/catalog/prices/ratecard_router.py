"""The organisation's rate card: read it (read scope), replace it with CSV or JSON (admin)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel
from sqlalchemy.orm import Session

from app.auth.deps import AdminPrincipal, ReadPrincipal
from app.catalog.prices import ratecard, ratecard_service
from app.catalog.prices.ratecard import RateCardError, RateLineIn
from app.db import SessionDep
from app.errors import InvalidInput

router = APIRouter(prefix="/v1/catalog/rate-card", tags=["catalog"])

_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["lines"],
                    "properties": {
                        "lines": {
                            "type": "array",
                            "minItems": 1,
                            "items": {"type": "object", "description": "columns as in CSV"},
                        }
                    },
                }
            },
            "text/csv": {
                "schema": {"type": "string"},
                "example": "provider,gpu,discount_pct,valid_from,commitment_id\n"
                "gcp,A100-80GB,30,2026-01-01,contract-2026\n",
            },
        },
    }
}


class RateCardOut(BaseModel):
    """The stored rate card and the catalog version its upload created (if it was one)."""

    catalog_version: int | None = None
    lines: list[RateLineIn]


@router.get("", response_model=RateCardOut)
def get_card(session: SessionDep, _: ReadPrincipal) -> RateCardOut:
    """Every negotiated rate of the organisation."""
    return RateCardOut(lines=ratecard_service.lines(session))


@router.put("", response_model=RateCardOut, openapi_extra=_BODY)
async def put_card(request: Request, session: SessionDep, principal: AdminPrincipal) -> RateCardOut:
    """Replace the rate card (CSV or JSON); any bad line refuses it all and nothing changes."""
    body = await request.body()  # the body limit middleware caps its size
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        text = body.decode("utf-8")
        if kind == "text/csv":
            lines = ratecard.parse_csv(text)
        elif kind == "application/json":
            lines = ratecard.parse_lines(_json_lines(text))
        else:
            raise InvalidInput(
                f"send the rate card as text/csv or application/json, not {kind or 'nothing'}",
                field="content-type",
            )
    except UnicodeDecodeError:
        raise InvalidInput("the rate card is not UTF-8 text", field="body") from None
    except RateCardError as exc:
        raise InvalidInput(f"rate card refused, nothing changed: {exc}", field=exc.field) from None
    return await run_in_threadpool(_store, session, lines, f"key {principal.key_id}")


def _json_lines(text: str) -> list[Any]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RateCardError(f"not JSON: {exc}", field="body") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("lines"), list):
        raise RateCardError('a JSON rate card is {"lines": [...]}', field="lines")
    return list(doc["lines"])


def _store(session: Session, lines: list[RateLineIn], who: str) -> RateCardOut:
    try:
        stored, version = ratecard_service.replace_card(session, lines=lines, uploaded_by=who)
    except RateCardError as exc:
        raise InvalidInput(f"rate card refused, nothing changed: {exc}", field=exc.field) from None
    return RateCardOut(catalog_version=version, lines=stored)


@router.delete("", response_model=RateCardOut)
def clear_card(session: SessionDep, principal: AdminPrincipal) -> RateCardOut:
    """Remove every negotiated rate: list prices apply again (a new catalog version)."""
    _, version = ratecard_service.replace_card(
        session, lines=[], uploaded_by=f"key {principal.key_id}"
    )
    return RateCardOut(catalog_version=version, lines=[])
