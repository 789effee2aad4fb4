"""Every route x {no key, read, submit, admin, revoked, expired} gets the status its scope implies.

The table below is the contract; a route added to the app without a row here fails the test.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from app.auth import service
from app.db import session_scope
from app.models import Scope
from app.models.base import utcnow

# (method, path template, scope needed (None = open to anyone), the status a caller with that
# scope gets for the deliberately incomplete request below: the ids exist nowhere, the bodies
# are empty)
ROUTES: list[tuple[str, str, Scope | None, int]] = [
    ("GET", "/v1/health", None, 200),
    ("GET", "/v1/keys", Scope.ADMIN, 200),
    ("POST", "/v1/keys", Scope.ADMIN, 422),
    ("POST", "/v1/keys/{key_id}/revoke", Scope.ADMIN, 404),
    ("GET", "/v1/keys/me", Scope.READ, 200),
    ("GET", "/v1/quotas", Scope.READ, 200),
    ("GET", "/v1/catalog/gpus", Scope.READ, 200),
    ("GET", "/v1/catalog/models", Scope.READ, 200),
    ("GET", "/v1/catalog/models/{model_id}", Scope.READ, 404),
    ("GET", "/v1/catalog/prices", Scope.READ, 200),
    ("PUT", "/v1/catalog/prices/{provider}/{gpu}", Scope.ADMIN, 422),
    ("DELETE", "/v1/catalog/prices/{provider}/{gpu}", Scope.ADMIN, 404),
    ("GET", "/v1/catalog/price-imports", Scope.READ, 200),
    ("POST", "/v1/catalog/price-imports", Scope.ADMIN, 422),
    ("GET", "/v1/catalog/rate-card", Scope.READ, 200),
    ("PUT", "/v1/catalog/rate-card", Scope.ADMIN, 422),
    ("DELETE", "/v1/catalog/rate-card", Scope.ADMIN, 200),
    ("POST", "/v1/datasets", Scope.SUBMIT, 422),
    ("GET", "/v1/datasets", Scope.READ, 200),
    ("GET", "/v1/datasets/{dataset_id}", Scope.READ, 404),
    ("DELETE", "/v1/datasets/{dataset_id}", Scope.SUBMIT, 404),
    ("POST", "/v1/estimates", Scope.READ, 422),
    ("GET", "/v1/estimates", Scope.READ, 200),
    ("GET", "/v1/estimates/{estimate_id}", Scope.READ, 404),
    ("POST", "/v1/jobs", Scope.SUBMIT, 422),
    ("GET", "/v1/jobs", Scope.READ, 200),
    ("GET", "/v1/jobs/{job_id}", Scope.READ, 404),
    ("GET", "/v1/jobs/{job_id}/events", Scope.READ, 404),
    ("GET", "/v1/jobs/{job_id}/evals", Scope.READ, 404),
    ("GET", "/v1/jobs/{job_id}/evals/compare", Scope.READ, 422),
    ("POST", "/v1/jobs/{job_id}/cancel", Scope.SUBMIT, 404),
    ("GET", "/v1/jobs/{job_id}/artifact", Scope.SUBMIT, 404),
    ("GET", "/v1/jobs/{job_id}/evals", Scope.READ, 404),
    ("GET", "/v1/jobs/{job_id}/evals/compare", Scope.READ, 422),
    ("POST", "/v1/studies", Scope.SUBMIT, 422),
    ("GET", "/v1/studies", Scope.READ, 200),
    ("GET", "/v1/studies/{study_id}", Scope.READ, 404),
    ("POST", "/v1/studies/{study_id}/cancel", Scope.SUBMIT, 404),
    ("POST", "/v1/studies/{study_id}/run", Scope.SUBMIT, 404),
    ("GET", "/v1/reports/estimate-vs-actual", Scope.READ, 200),
    ("GET", "/v1/reports/benefit", Scope.READ, 200),
    ("GET", "/v1/reports/spend", Scope.READ, 200),
    ("GET", "/v1/reports/focus", Scope.READ, 200),
    ("GET", "/v1/reports/forecast", Scope.READ, 200),
    ("GET", "/v1/budgets", Scope.READ, 200),
    ("POST", "/v1/budgets", Scope.ADMIN, 422),
    ("GET", "/v1/budgets/{budget_id}", Scope.READ, 404),
    ("PATCH", "/v1/budgets/{budget_id}", Scope.ADMIN, 422),
    ("DELETE", "/v1/budgets/{budget_id}", Scope.ADMIN, 404),
    ("GET", "/v1/webhooks", Scope.READ, 200),
    ("POST", "/v1/webhooks", Scope.SUBMIT, 422),
    ("GET", "/v1/webhooks/{subscription_id}", Scope.READ, 404),
    ("PATCH", "/v1/webhooks/{subscription_id}", Scope.SUBMIT, 422),
    ("DELETE", "/v1/webhooks/{subscription_id}", Scope.SUBMIT, 404),
    ("POST", "/v1/webhooks/{subscription_id}/rotate-secret", Scope.SUBMIT, 404),
    ("POST", "/v1/webhooks/{subscription_id}/ping", Scope.SUBMIT, 404),
    ("GET", "/v1/webhooks/{subscription_id}/deliveries", Scope.READ, 404),
    ("GET", "/v1/webhooks/{subscription_id}/deliveries/{delivery_id}", Scope.READ, 404),
    (
        "POST",
        "/v1/webhooks/{subscription_id}/deliveries/{delivery_id}/redeliver",
        Scope.SUBMIT,
        404,
    ),
    ("GET", "/v1/calibration", Scope.READ, 200),
    ("GET", "/v1/calibration/evaluation", Scope.READ, 200),
    ("GET", "/metrics", Scope.READ, 200),
]

# Ids that exist nowhere: a caller who passes the key check gets its route's status above.
PATH_VALUES = {
    "key_id": "key_00000000000000000000000000000000",
    "model_id": "no-such/model",
    "provider": "aws",
    "gpu": "A100-80GB",
    "dataset_id": "ds_00000000000000000000000000000000",
    "estimate_id": "est_00000000000000000000000000000000",
    "job_id": "job_00000000000000000000000000000000",
    "study_id": "study_00000000000000000000000000000000",
    "budget_id": "bud_00000000000000000000000000000000",
    "subscription_id": "whk_00000000000000000000000000000000",
    "delivery_id": "whd_00000000000000000000000000000000",
}
CALLERS = ["none", "read", "submit", "admin", "revoked", "expired"]


@pytest.fixture(scope="module")
def callers(keys: dict[str, str]) -> dict[str, str | None]:
    with session_scope() as session:
        revoked, revoked_secret = service.create(session, name="gone", scope=Scope.ADMIN)
        service.revoke(session, key_id=revoked.id)
        _, expired_secret = service.create(
            session, name="old", scope=Scope.ADMIN, expires_at=utcnow() - timedelta(minutes=1)
        )
    return {**keys, "none": None, "revoked": revoked_secret, "expired": expired_secret}


def test_the_table_covers_every_route(app_client: Any) -> None:
    documented = {
        (method.upper(), path)
        for path, ops in app_client.app.openapi()["paths"].items()
        for method in ops
    }
    assert documented == {(m, p) for m, p, _, _ in ROUTES}


def _expected(needed: Scope | None, caller: str) -> int | None:
    """The status of a refused caller; None when the caller gets past the key check."""
    if needed is None:
        return None
    if caller in ("none", "revoked", "expired"):
        return 401
    if not Scope(caller).allows(needed):
        return 403
    return None


@pytest.mark.parametrize(
    ("method", "path", "needed", "let_in"), ROUTES, ids=[f"{m} {p}" for m, p, _, _ in ROUTES]
)
@pytest.mark.parametrize("caller", CALLERS)
def test_route_access(
    app_client: Any,
    callers: dict[str, str | None],
    method: str,
    path: str,
    needed: Scope | None,
    let_in: int,
    caller: str,
) -> None:
    secret = callers[caller]
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    # Bodies that are deliberately incomplete: an authorised caller gets 4xx for the body,
    # so nothing is created by this test.
    kwargs: dict[str, Any] = {"json": {}} if method in ("POST", "PUT") else {}
    if path == "/v1/datasets" and method == "POST":
        kwargs = {"files": {"file": ("x.jsonl", b"not json\n", "application/jsonl")}}
    response = app_client.request(method, path.format(**PATH_VALUES), headers=headers, **kwargs)
    expected = _expected(needed, caller)
    assert response.status_code == (let_in if expected is None else expected), response.text
    problem = response.headers["content-type"].startswith("application/problem+json")
    assert problem == (response.status_code >= 400), response.headers["content-type"]
