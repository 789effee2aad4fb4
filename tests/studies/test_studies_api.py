"""POST /v1/studies and the read routes without a worker: the pilots as queued jobs, the pilot
budget, bad input, tenancy, pagination and cancel.

Pilots here are planned on a GPU kind no test worker serves, so they stay queued.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select

from app.auth import service as keys_service
from app.db import session_scope
from app.models import Scope, Study
from tests.conftest import auth
from tests.jobs.conftest import TINY_NAME, TRAINING, dataset_id, tiny_model  # noqa: F401 (fixtures)
from tests.jobs.jobs_support import IDLE_HARDWARE
from tests.support import pointed_at

PROBLEM = "application/problem+json"
Body = Callable[..., dict[str, Any]]


@pytest.fixture
def study_body(dataset_id: str) -> Body:  # noqa: F811 (the fixture above)
    def make(**over: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": {"path": TINY_NAME},
            "dataset_id": dataset_id,
            "candidates": [
                {"method": "lora", "lora": {"r": 16, "alpha": 32}},
                {"method": "lora", "lora": {"r": 64, "alpha": 64, "target_modules": "all-linear"}},
                {"method": "full"},
            ],
            "fractions": [0.1, 0.2, 0.4],
            "target": {"relative_improvement": 0.2},
            "pilot_budget_usd": 100.0,
            "training": dict(TRAINING),
            "hardware": IDLE_HARDWARE,
            "tags": {"project": "studies"},
        }
        body.update(over)
        return body

    return make


def _problem(resp: Any, status: int, field: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM)
    doc = dict(resp.json())
    locs = [".".join(str(p) for p in e["loc"]) for e in doc.get("errors", [])]
    assert any(field in loc for loc in locs), doc
    return doc


def test_a_study_runs_its_pilots_as_jobs_and_cancels_them(
    app_client: Any, keys: dict[str, str], study_body: Body
) -> None:
    resp = app_client.post("/v1/studies", json=study_body(), headers=auth(keys["submit"]))
    assert resp.status_code == 201, resp.text
    study = resp.json()
    assert resp.headers["Location"] == f"/v1/studies/{study['id']}"
    assert study["id"].startswith("study_") and study["status"] == "running"
    assert [c["name"] for c in study["candidates"]] == [
        "LoRA r16",
        "LoRA r64 all-linear",
        "full fine-tuning",
    ]
    assert study["progress"] == {"pilots": 9, "ended": 0, "succeeded": 0, "running": 0}
    assert study["recommendation"] is None and study["frontier"] == []
    full_rows = study["full_rows"]
    # 120 examples, 6 held out (5%): 114 to train on; pilots on nested shares of them.
    assert full_rows == 114
    for cand in study["candidates"]:
        assert [p["fraction"] for p in cand["pilots"]] == [0.1, 0.2, 0.4]
        assert [p["rows"] for p in cand["pilots"]] == [12, 23, 46]
        assert {p["status"] for p in cand["pilots"]} == {"queued"}
    priced = sum(p["cost_usd"] for c in study["candidates"] for p in c["pilots"])
    assert study["est_pilot_cost_usd"] == pytest.approx(priced)
    assert 0 < study["est_pilot_cost_usd"] <= 100

    # Each pilot is an ordinary job of the tenant on its fraction, tagged with the study.
    pilot = study["candidates"][1]["pilots"][2]
    job = app_client.get(f"/v1/jobs/{pilot['job_id']}", headers=auth(keys["read"])).json()
    assert job["spec"]["data_fraction"] == 0.4 and job["spec"]["lora"]["r"] == 64
    assert job["spec"]["lr_schedule"] == "cosine"
    assert job["tags"] == {"project": "studies", "study": study["id"], "team": "ml"}
    assert job["team"] == "ml"

    got = app_client.get(f"/v1/studies/{study['id']}", headers=auth(keys["read"])).json()
    assert got["candidates"] == study["candidates"]
    # Another team's key sees no such study.
    with session_scope() as session:
        _, other = keys_service.create(session, name="other", scope=Scope.SUBMIT, team="team-b")
    for method, url in (
        ("GET", f"/v1/studies/{study['id']}"),
        ("POST", f"/v1/studies/{study['id']}/cancel"),
    ):
        resp = app_client.request(method, url, headers=auth(other))
        assert resp.status_code == 404 and resp.headers["content-type"].startswith(PROBLEM)
    listed = app_client.get("/v1/studies", headers=auth(other)).json()
    assert study["id"] not in [s["id"] for s in listed["items"]]

    resp = app_client.post(f"/v1/studies/{study['id']}/cancel", headers=auth(keys["submit"]))
    assert resp.status_code == 200, resp.text
    cancelled = resp.json()
    assert cancelled["status"] == "cancelled"
    assert {p["status"] for c in cancelled["candidates"] for p in c["pilots"]} == {"cancelled"}
    assert cancelled["progress"]["ended"] == 9
    resp = app_client.post(f"/v1/studies/{study['id']}/cancel", headers=auth(keys["submit"]))
    assert resp.status_code == 409 and study["id"] in resp.json()["detail"]


def test_studies_list_newest_first_in_pages(
    app_client: Any, keys: dict[str, str], study_body: Body
) -> None:
    body = study_body(candidates=[{"method": "lora", "lora": {"r": 4}}])
    made = [
        app_client.post("/v1/studies", json=body, headers=auth(keys["submit"])).json()["id"]
        for _ in range(3)
    ]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = app_client.get("/v1/studies", params=params, headers=auth(keys["read"])).json()
        seen += [s["id"] for s in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [s for s in seen if s in made] == made[::-1]
    for study_id in made:  # their pilots leave no queued jobs behind
        resp = app_client.post(f"/v1/studies/{study_id}/cancel", headers=auth(keys["submit"]))
        assert resp.status_code == 200, resp.text


def test_pilots_over_the_pilot_budget_are_refused_naming_it(
    app_client: Any, keys: dict[str, str], study_body: Body
) -> None:
    resp = app_client.post(
        "/v1/studies", json=study_body(pilot_budget_usd=1e-9), headers=auth(keys["submit"])
    )
    doc = _problem(resp, 422, "pilot_budget_usd")
    assert doc["estimated_pilot_cost_usd"] > 1e-9
    assert "LoRA r16 $" in doc["detail"] and "full fine-tuning $" in doc["detail"]


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"fractions": [0.1, 0.1, 0.2]}, "fractions"),
        ({"fractions": [0.2, 1.0]}, "fractions"),
        ({"fractions": [0.001, 0.002, 0.003]}, "fractions"),  # one example each: not distinct
        ({"target": {}}, "target"),
        ({"target": {"eval_loss": 1.0, "relative_improvement": 0.1}}, "target"),
        ({"candidates": []}, "candidates"),
        ({"candidates": [{"method": "full", "lora": {"r": 8}}]}, "candidates"),
        ({"candidates": [{"method": "lora"}, {"method": "lora"}]}, "candidates"),
        ({"dataset_id": "ds_nope"}, "dataset_id"),
        ({"pilot_budget_usd": 0}, "pilot_budget_usd"),
        ({"hardware": {"gpu": "NO-SUCH-GPU"}}, "hardware.gpu"),
        (
            {"candidates": [{"method": "lora", "lora": {"target_modules": ["nope"]}}]},
            "candidates.0",
        ),
    ],
)
def test_bad_studies_are_422_naming_the_field(
    app_client: Any, keys: dict[str, str], study_body: Body, over: dict[str, Any], field: str
) -> None:
    resp = app_client.post("/v1/studies", json=study_body(**over), headers=auth(keys["submit"]))
    _problem(resp, 422, field)


def test_a_study_past_the_active_jobs_quota_is_refused_whole(
    app_client: Any, keys: dict[str, str], study_body: Body
) -> None:
    def held() -> tuple[int, int]:
        quotas = app_client.get("/v1/quotas", headers=auth(keys["read"])).json()["items"]
        active = next(q for q in quotas if q["name"] == "quota_active_jobs")
        with session_scope() as session:
            studies = session.scalar(select(func.count()).where(Study.team == "ml"))
        return active["held"], int(studies or 0)

    before = held()
    # Room for 8 more jobs: the study's 9 pilots do not fit, and none of them is made.
    with pointed_at({"TUNECOST_QUOTA_ACTIVE_JOBS": str(before[0] + 8)}):
        resp = app_client.post("/v1/studies", json=study_body(), headers=auth(keys["submit"]))
        assert resp.status_code == 409, resp.text
        assert resp.json()["quota"]["name"] == "quota_active_jobs"
        assert held() == before
    with pointed_at({"TUNECOST_QUOTA_ACTIVE_JOBS": str(before[0] + 9)}):
        resp = app_client.post("/v1/studies", json=study_body(), headers=auth(keys["submit"]))
        assert resp.status_code == 201, resp.text
    study = resp.json()["id"]
    assert app_client.post(f"/v1/studies/{study}/cancel", headers=auth(keys["submit"])).is_success
    assert held()[0] == before[0]
