"""The scheduled price refresh: off unless configured; offline it changes nothing and says why."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app.catalog.prices.refresh import refresh_all
from app.config import Settings
from app.db import session_scope
from app.kit.queue import REFRESH_PRICES_TASK, celery_config
from app.models import CatalogVersion


def test_beat_schedule_is_off_by_default_and_on_when_configured() -> None:
    assert "refresh-prices" not in celery_config(Settings())["beat_schedule"]
    on = celery_config(Settings(price_refresh_every_h=24))["beat_schedule"]
    assert on["refresh-prices"] == {"task": REFRESH_PRICES_TASK, "schedule": 24 * 3600.0}


def test_the_task_is_registered_under_the_scheduled_name() -> None:
    import worker.tasks  # noqa: F401 (registers the tasks)
    from worker.celery_app import celery_app

    assert REFRESH_PRICES_TASK in celery_app.tasks


def test_a_refresh_without_credentials_changes_nothing(
    isolated_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TUNECOST_LAMBDA_API_KEY", raising=False)
    monkeypatch.delenv("TUNECOST_GCP_API_KEY", raising=False)
    with session_scope() as session:
        before = session.scalar(select(func.max(CatalogVersion.id)))
    outcome = refresh_all(["lambda", "gcp"])
    assert set(outcome) == {"lambda", "gcp"}
    assert all(said.startswith("not fetched, nothing changed") for said in outcome.values())
    assert "TUNECOST_LAMBDA_API_KEY" in outcome["lambda"]
    with session_scope() as session:
        assert session.scalar(select(func.max(CatalogVersion.id))) == before
