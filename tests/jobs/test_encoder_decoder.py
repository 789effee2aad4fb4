"""A job for an encoder-decoder model is refused at submit, before anything is queued."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.db import session_scope
from app.models import Job
from tests.conftest import auth


def test_t5_job_is_refused_up_front_naming_the_reason(
    app_client: TestClient, keys: dict[str, str], job_body: Callable[..., dict[str, Any]]
) -> None:
    with session_scope() as session:
        before = session.scalar(select(func.count()).select_from(Job))
    body: dict[str, Any] = job_body(model={"hub_id": "google/flan-t5-base"})
    r = app_client.post("/v1/jobs", json=body, headers=auth(keys["submit"]))
    assert r.status_code == 422, r.text
    problem = r.json()
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "encoder-decoder" in problem["detail"] and "decoder-only" in problem["detail"]
    assert problem["errors"][0]["loc"] == ["model"]
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == before
