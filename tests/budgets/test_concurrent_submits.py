"""Concurrent submits against a hard budget never overspend it: PostgreSQL and SQLite alike.

Parallel POST /v1/jobs against a real uvicorn process, each job alone fitting the budget, the
budget holding two of them: exactly two are accepted, every other answer is the 409 naming the
budget, and the budget's total stays within its amount.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from app.auth import service as keys_service
from app.db import session_scope
from app.kit.migrate import upgrade_head
from app.models import Scope
from devtools.tinymodel import make_tiny_dataset
from tests.budgets.budgets_support import budget_body, estimate, job_body, unique
from tests.conftest import auth
from tests.jobs.conftest import TINY_NAME, tiny_model  # noqa: F401 (fixture)
from tests.jobs.jobs_support import upload_dataset
from tests.live_api import LiveApi, serve
from tests.support import ServiceEnv, pointed_at

pytestmark = pytest.mark.slow
SUBMITS = 8  # at once; the budget holds two
HELD = 2


def _race(api: LiveApi, keys: dict[str, str]) -> None:
    with httpx.Client(base_url=api.url, timeout=120) as client:
        data = make_tiny_dataset(Path(api.log).parent / "race.jsonl", n=40, fmt="text")
        dataset = upload_dataset(client, keys["submit"], data, model_path=TINY_NAME)
        estimate_id, cost = estimate(client, keys["submit"], dataset)
        project = unique("race")
        made = client.post(
            "/v1/budgets",
            json=budget_body(project, cost * (HELD + 0.5), action="refuse"),
            headers=auth(keys["admin"]),
        )
        assert made.status_code == 201, made.text
        budget = made.json()

        def submit(_: int) -> httpx.Response:
            body = job_body(estimate_id, project)
            return client.post("/v1/jobs", json=body, headers=auth(keys["submit"]))

        with ThreadPoolExecutor(max_workers=SUBMITS) as pool:
            answers = list(pool.map(submit, range(SUBMITS)))
        codes = sorted(r.status_code for r in answers)
        assert codes == [201] * HELD + [409] * (SUBMITS - HELD), [r.text for r in answers]
        for refused in (r for r in answers if r.status_code == 409):
            assert refused.json()["budget"]["id"] == budget["id"]
        burn = client.get(f"/v1/budgets/{budget['id']}", headers=auth(keys["read"])).json()["burn"]
        assert burn["active_jobs"] == HELD
        assert burn["total_usd"] == pytest.approx(cost * HELD)
        assert burn["total_usd"] <= budget["amount_usd"]
        for accepted in (r for r in answers if r.status_code == 201):
            cancel = client.post(
                f"/v1/jobs/{accepted.json()['id']}/cancel", headers=auth(keys["submit"])
            )
            assert cancel.status_code == 200, cancel.text


def test_postgresql(
    live_api: LiveApi,
    keys: dict[str, str],
    tiny_model: Path,  # noqa: F811
) -> None:
    _race(live_api, keys)


def test_sqlite(service_env: ServiceEnv, tiny_model: Path, tmp_path: Path) -> None:  # noqa: F811
    env = replace(
        service_env,
        database_url=f"sqlite:///{tmp_path / 'tunecost.db'}",
        broker_url=f"sqla+sqlite:///{tmp_path / 'broker.db'}",
    )
    upgrade_head(env.database_url)
    with pointed_at(env.variables()):
        with session_scope() as session:
            keys = {
                scope.value: keys_service.create(
                    session,
                    name=f"race {scope}",
                    scope=scope,
                    team=None if scope == Scope.ADMIN else "ml",
                )[1]
                for scope in Scope
            }
        with serve(env.variables(), tmp_path / "uvicorn.log") as api:
            _race(api, keys)
