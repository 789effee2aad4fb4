"""Admin routes to create, list and revoke API keys; any key's own identity and quotas."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, status

from app.auth import quotas, service
from app.auth.deps import AdminPrincipal, ReadPrincipal
from app.auth.schemas import KeyCreated, KeyIn, KeyOut, KeySelf, QuotaOut, QuotasOut
from app.db import SessionDep
from app.models.base import utcnow

router = APIRouter(prefix="/v1/keys", tags=["keys"])
quotas_router = APIRouter(prefix="/v1/quotas", tags=["keys"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=KeyCreated)
def create_key(key_in: KeyIn, session: SessionDep, _: AdminPrincipal) -> KeyCreated:
    """Create a key; the secret is in this response only."""
    expires = utcnow() + timedelta(days=key_in.expires_in_days) if key_in.expires_in_days else None
    key, secret = service.create(
        session, name=key_in.name, scope=key_in.scope, team=key_in.team, expires_at=expires
    )
    return KeyCreated(**KeyOut.model_validate(key).model_dump(), secret=secret)


@router.get("/me", response_model=KeySelf)
def who_am_i(principal: ReadPrincipal) -> KeySelf:
    """The calling key's name, scope and team (any valid key may ask)."""
    return KeySelf(
        id=principal.key_id, name=principal.name, scope=principal.scope, team=principal.team
    )


@router.get("", response_model=list[KeyOut])
def list_keys(session: SessionDep, _: AdminPrincipal) -> list[KeyOut]:
    """Every key, newest first, without secrets."""
    return [KeyOut.model_validate(k) for k in service.list_(session)]


@router.post("/{key_id}/revoke", response_model=KeyOut)
def revoke_key(key_id: str, session: SessionDep, _: AdminPrincipal) -> KeyOut:
    """Revoke a key (by id or unique id prefix) at once; requests with it get 401 from now on."""
    return KeyOut.model_validate(service.revoke(session, key_id=key_id))


@quotas_router.get("", response_model=QuotasOut)
def get_quotas(session: SessionDep, principal: ReadPrincipal) -> QuotasOut:
    """What the key's tenant holds under each quota, its limit and what is left (README
    "Quotas"); a create past a limit is refused with 409 `quota-exceeded`."""
    items = [
        QuotaOut(
            name=quota.value,
            setting=quota.setting,
            counts=quotas.NOUN[quota],
            limit=most,
            held=held,
            left=max(0, most - held),
        )
        for quota, (held, most) in quotas.usage(session, quotas.Tenant.of(principal)).items()
    ]
    return QuotasOut(team=principal.team, items=items)
