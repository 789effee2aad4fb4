"""POST /v1/jobs and the read routes, without a worker: snapshot, budget, idempotency, bad input.

Jobs here are planned on an L4, whose queue no test worker consumes, so they stay queued.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select

from app.db import session_scope
from app.models import Estimate, Job, JobEvent, JobTag
from devtools.tinymodel import make_tiny_causal_lm
from tests.conftest import auth
from tests.jobs.conftest import TINY_NAME
from tests.support import ServiceEnv

PROBLEM = "application/problem+json"
GPU = "L4"  # no test worker serves gpu.L4


def _counts() -> tuple[int, int, int, int]:
    with session_scope() as session:
        job, tag, event, estimate = (
            session.scalar(select(func.count()).select_from(model)) or 0
            for model in (Job, JobTag, JobEvent, Estimate)
        )
        return job, tag, event, estimate


@pytest.fixture
def body(job_body: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    def make(method: str = "lora", **over: Any) -> dict[str, Any]:
        return job_body(method, hardware={"gpu": GPU, "provider": "aws"}, **over)

    return make


def _post(client: Any, key: str, body: dict[str, Any], **headers: str) -> Any:
    return client.post("/v1/jobs", json=body, headers={**auth(key), **headers})


def test_submit_snapshots_the_methods_estimate_and_says_no_worker_serves_it(
    app_client: Any, keys: dict[str, str], body: Callable[..., dict[str, Any]]
) -> None:
    resp = _post(app_client, keys["submit"], body("qlora", tags={"project": "p1"}))
    assert resp.status_code == 201, resp.text
    job = resp.json()
    assert resp.headers["Location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued"
    assert (job["gpu"], job["queue"], job["num_gpus"]) == (GPU, f"gpu.{GPU}", 1)
    assert job["status_detail"] == f"no live worker for gpu.{GPU}; the job waits in the queue"
    assert job["tags"] == {"project": "p1", "team": "ml"}  # the key's team is added
    assert job["team"] == "ml"

    estimate = app_client.get(
        f"/v1/estimates/{job['estimate_id']}", headers=auth(keys["read"])
    ).json()
    planned = estimate["results"]["qlora"]
    # 6 steps asked; the estimate planned a whole epoch: time and money scale, memory does not.
    assert planned["steps"] > job["max_steps"] == job["estimate"]["job_scaled"]["steps"]
    assert job["est_peak_bytes"] == planned["memory"]["per_gpu_bytes"]
    assert job["est_artifact_bytes"] == planned["artifact_bytes"]
    assert 0 < job["est_cost_usd"] < planned["cost_usd"]
    assert job["price_per_gpu_hour"] == planned["price_per_gpu_hour"]
    assert job["spec"]["model"]["path"].endswith(TINY_NAME)
    assert job["spec"]["lora"]["r"] == 4

    got = app_client.get(f"/v1/jobs/{job['id']}", headers=auth(keys["read"]))
    assert got.status_code == 200 and got.json()["id"] == job["id"]
    events = app_client.get(f"/v1/jobs/{job['id']}/events", headers=auth(keys["read"])).json()
    assert [e["message"] for e in events["items"]] == [f"queued on gpu.{GPU}"]


def test_submit_by_estimate_id_takes_settings_from_the_estimate(
    app_client: Any, keys: dict[str, str], dataset_id: str
) -> None:
    est = app_client.post(
        "/v1/estimates",
        json={
            "model": {"path": TINY_NAME},
            "dataset": {"dataset_id": dataset_id},
            "methods": ["full", "lora"],
            "training": {"seq_len": 64, "micro_batch_size": 2, "precision": "fp32"},
            "hardware": {"gpu": GPU, "provider": "aws"},
        },
        headers=auth(keys["read"]),
    )
    assert est.status_code == 201, est.text
    est_id = est.json()["id"]
    resp = _post(app_client, keys["submit"], {"estimate_id": est_id, "method": "full"})
    assert resp.status_code == 201, resp.text
    job = resp.json()
    assert job["spec"]["model"]["path"].endswith(TINY_NAME)  # from the estimate's request
    assert job["dataset_id"] == dataset_id
    assert job["est_cost_usd"] == est.json()["results"]["full"]["cost_usd"]
    assert job["spec"]["training"]["seq_len"] == 64

    before = _counts()
    again = _post(
        app_client,
        keys["submit"],
        {"estimate_id": est_id, "method": "full", "training": {"seq_len": 32}},
    )
    assert again.status_code == 422 and "come from estimate" in again.json()["detail"]
    missing = _post(app_client, keys["submit"], {"estimate_id": est_id, "method": "qlora"})
    assert missing.status_code == 422
    assert "no result for method 'qlora'" in missing.json()["detail"]
    assert _counts() == before


def test_a_job_spec_its_model_cannot_train_is_a_422_at_submit(
    app_client: Any, keys: dict[str, str], dataset_id: str, service_env: ServiceEnv
) -> None:
    """The estimate's LoRA targets exist in its model, not in the other model the job names."""
    make_tiny_causal_lm(
        service_env.model_root / "tiny-gpt2",
        config={"model_type": "gpt2", "n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 128},
    )
    (service_env.model_root / "no-config").mkdir(exist_ok=True)
    est = app_client.post(
        "/v1/estimates",
        json={
            "model": {"path": TINY_NAME},
            "dataset": {"dataset_id": dataset_id},
            "methods": ["lora"],
            "lora": {"r": 4, "target_modules": ["q_proj", "v_proj"]},
            "training": {"seq_len": 64, "micro_batch_size": 2, "precision": "fp32"},
            "hardware": {"gpu": GPU, "provider": "aws"},
        },
        headers=auth(keys["read"]),
    )
    assert est.status_code == 201, est.text
    before = _counts()
    job = {"estimate_id": est.json()["id"], "method": "lora"}

    other = _post(app_client, keys["submit"], {**job, "model": {"path": "tiny-gpt2"}})
    assert other.status_code == 422, other.text
    assert other.headers["content-type"] == PROBLEM
    problem = other.json()
    assert problem["errors"][0]["loc"] == ["lora", "target_modules"]
    assert "'q_proj'" in problem["detail"] and "c_attn" in problem["detail"]  # the fix

    empty = _post(app_client, keys["submit"], {**job, "model": {"path": "no-config"}})
    assert empty.status_code == 422, empty.text
    assert empty.json()["errors"][0]["loc"] == ["model", "path"]
    assert "config.json" in empty.json()["detail"]
    assert _counts() == before  # neither left a job behind

    same = _post(app_client, keys["submit"], job)  # the estimate's own model: fine
    assert same.status_code == 201, same.text
    assert same.json()["spec"]["lora"]["target_modules"] == ["q_proj", "v_proj"]


def test_idempotency_key_replays_the_same_job_and_refuses_another_body(
    app_client: Any, keys: dict[str, str], body: Callable[..., dict[str, Any]]
) -> None:
    first = _post(app_client, keys["submit"], body(), **{"Idempotency-Key": "idem-1"})
    assert first.status_code == 201, first.text
    before = _counts()
    replay = _post(app_client, keys["submit"], body(), **{"Idempotency-Key": "idem-1"})
    assert replay.status_code == 200
    assert replay.json()["id"] == first.json()["id"]
    other = _post(app_client, keys["submit"], body(max_steps=7), **{"Idempotency-Key": "idem-1"})
    assert other.status_code == 422
    assert other.headers["content-type"] == PROBLEM
    assert first.json()["id"] in other.json()["detail"]
    assert _counts() == before  # neither wrote anything
    # Keys are per API key: the admin's "idem-1" is a different job.
    admin = _post(app_client, keys["admin"], body(), **{"Idempotency-Key": "idem-1"})
    assert admin.status_code == 201 and admin.json()["id"] != first.json()["id"]


def test_estimate_over_budget_is_409_with_the_estimate_unless_forced(
    app_client: Any, keys: dict[str, str], body: Callable[..., dict[str, Any]]
) -> None:
    before = _counts()
    resp = _post(app_client, keys["submit"], body(max_cost_usd=1e-9))
    assert resp.status_code == 409
    assert resp.headers["content-type"] == PROBLEM
    problem = resp.json()
    assert problem["estimate"]["estimated_cost_usd"] > 1e-9
    assert problem["estimate"]["gpu"] == GPU and problem["estimate"]["max_cost_usd"] == 1e-9
    assert _counts() == before  # not even the estimate made on the way is kept

    forced = _post(app_client, keys["submit"], body(max_cost_usd=1e-9, force=True))
    assert forced.status_code == 201
    assert forced.json()["max_cost_usd"] == 1e-9 and forced.json()["spec"]["forced"] is True


# Drops everything but the method from the default body (the test removes None values).
ONLY_METHOD = dict.fromkeys(("model", "dataset_id", "training", "hardware", "tags", "max_steps"))
BAD_BODIES: list[tuple[str, dict[str, Any], int, str]] = [
    ("path outside the roots", {"model": {"path": "../../etc"}}, 403, "outside the allowed"),
    ("missing model folder", {"model": {"path": "no-such-model"}}, 422, "model.path"),
    ("path and hub id", {"model": {"path": TINY_NAME, "hub_id": "a/b"}}, 422, "exactly one"),
    ("unknown hub id", {"model": {"hub_id": "nobody/nothing-7b"}}, 422, "not in the catalog"),
    ("unknown dataset", {"dataset_id": "ds_nope"}, 422, "no dataset with id"),
    ("unknown estimate", {"estimate_id": "est_nope", **ONLY_METHOD}, 422, "no estimate"),
    ("unknown method", {"method": "prompt-tuning"}, 422, "method"),
    ("unknown field", {"gpus": 8}, 422, "gpus"),
    ("zero steps", {"max_steps": 0}, 422, "max_steps"),
    ("negative budget", {"max_cost_usd": -1}, 422, "max_cost_usd"),
    ("bad tag key", {"tags": {"te am": "x"}}, 422, "tag key"),
    ("other team's tag", {"tags": {"team": "finance"}}, 422, "belongs to team 'ml'"),
    ("unknown gpu", {"hardware": {"gpu": "TPU-v9"}}, 422, "unknown GPU"),
    ("eval fraction too big", {"eval_fraction": 0.9}, 422, "eval_fraction"),
    ("unknown lora target", {"lora": {"target_modules": ["query_key_value"]}}, 422, "q_proj"),
]


@pytest.mark.parametrize(("case", "over", "status", "needle"), BAD_BODIES, ids=lambda v: v)
def test_bad_input_is_a_clear_4xx_and_writes_nothing(
    app_client: Any,
    keys: dict[str, str],
    body: Callable[..., dict[str, Any]],
    case: str,
    over: dict[str, Any],
    status: int,
    needle: str,
) -> None:
    payload = body()
    payload.update(over)
    payload = {k: v for k, v in payload.items() if v is not None}
    before = _counts()
    resp = _post(app_client, keys["submit"], payload)
    assert resp.status_code == status, (case, resp.text)
    assert resp.headers["content-type"] == PROBLEM
    assert needle in resp.text, (case, resp.text)
    assert _counts() == before


def test_bad_headers_and_scopes(
    app_client: Any, keys: dict[str, str], body: Callable[..., dict[str, Any]]
) -> None:
    before = _counts()
    long_key = _post(app_client, keys["submit"], body(), **{"Idempotency-Key": "k" * 201})
    assert long_key.status_code == 422
    assert _post(app_client, keys["read"], body()).status_code == 403
    assert app_client.post("/v1/jobs", json=body()).status_code == 401
    assert _counts() == before


def test_list_filters_and_pages(
    app_client: Any, keys: dict[str, str], body: Callable[..., dict[str, Any]]
) -> None:
    mine = {
        _post(app_client, keys["submit"], body(m, tags={"project": "listing"})).json()["id"]
        for m in ("full", "lora", "lora")
    }
    read = auth(keys["read"])
    tagged = app_client.get("/v1/jobs?tag.project=listing&limit=100", headers=read).json()
    assert {j["id"] for j in tagged["items"]} == mine
    lora = app_client.get(
        "/v1/jobs?tag.project=listing&tag.team=ml&method=lora", headers=read
    ).json()
    assert len(lora["items"]) == 2 and {j["method"] for j in lora["items"]} == {"lora"}
    assert app_client.get("/v1/jobs?tag.project=nobody", headers=read).json()["items"] == []
    either = app_client.get("/v1/jobs?tag.project=nobody,listing&limit=100", headers=read).json()
    assert {j["id"] for j in either["items"]} == mine  # values of one key: any matches

    seen: list[str] = []
    cursor = None
    while True:
        url = "/v1/jobs?tag.project=listing&status=queued&limit=2"
        page = app_client.get(url + (f"&cursor={cursor}" if cursor else ""), headers=read).json()
        seen += [j["id"] for j in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(mine) and len(seen) == 3
    old = app_client.get("/v1/jobs?tag=project:listing", headers=read)  # one syntax only
    assert old.status_code == 422 and old.json()["errors"][0]["loc"] == ["query", "tag"]
    assert "tag.<key>=<value>" in old.json()["detail"]
    bad = app_client.get("/v1/jobs?tag.no%20space=x", headers=read)
    assert bad.status_code == 422 and bad.json()["errors"][0]["loc"] == ["query", "tag.no space"]
    assert app_client.get("/v1/jobs?status=exploded", headers=read).status_code == 422
    # The report filters (app/jobs/filters.py), refused by name when wrong.
    two = app_client.get("/v1/jobs?tag.project=listing&method=full,lora&team=ml", headers=read)
    assert {j["id"] for j in two.json()["items"]} == mine
    ended = app_client.get("/v1/jobs?tag.project=listing&from=2020-01-01", headers=read)
    assert ended.json()["items"] == []  # queued jobs have not finished in any window
    for query, name in (("methd=lora", "methd"), ("method=sft", "method"), ("to=x", "to")):
        r = app_client.get(f"/v1/jobs?{query}", headers=read)
        assert r.status_code == 422 and r.json()["errors"][0]["loc"][-1] == name, r.text


def test_cancel_a_queued_job_at_once_and_ownership(
    app_client: Any, keys: dict[str, str], body: Callable[..., dict[str, Any]]
) -> None:
    from app.auth import service as keys_service
    from app.models import Scope

    with session_scope() as session:
        _, other_team = keys_service.create(
            session, name="finance", scope=Scope.SUBMIT, team="finance"
        )
    job = _post(app_client, keys["submit"], body()).json()
    url = f"/v1/jobs/{job['id']}"

    # Another tenant's job is answered as if it did not exist.
    denied = app_client.post(url + "/cancel", headers=auth(other_team))
    assert denied.status_code == 404 and "no job" in denied.json()["detail"]
    assert app_client.post(url + "/cancel", headers=auth(keys["read"])).status_code == 403

    done = app_client.post(url + "/cancel", headers=auth(keys["submit"]))
    assert done.status_code == 200
    assert done.json()["status"] == "cancelled" and done.json()["finished_at"] is not None
    again = app_client.post(url + "/cancel", headers=auth(keys["admin"]))
    assert again.status_code == 409 and "already ended: cancelled" in again.json()["detail"]

    assert app_client.get(url + "/artifact", headers=auth(other_team)).status_code == 404
    none = app_client.get(url + "/artifact", headers=auth(keys["submit"]))
    assert none.status_code == 404 and "no artifact" in none.json()["detail"]
    assert (
        app_client.post("/v1/jobs/job_nope/cancel", headers=auth(keys["admin"])).status_code == 404
    )
    events = app_client.get(url + "/events?after=0", headers=auth(keys["read"])).json()["items"]
    assert [e["message"] for e in events][-1] == "cancelled while queued"
    later = app_client.get(
        url + f"/events?after={events[-1]['id']}", headers=auth(keys["read"])
    ).json()
    assert later == {"items": [], "next_after": events[-1]["id"]}


def test_broker_refusing_the_task_undoes_the_job(
    app_client: Any,
    keys: dict[str, str],
    body: Callable[..., dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from celery import Celery

    import app.kit.queue
    from app.config import get_settings
    from app.kit.queue import celery_config

    dead = Celery("dead-broker")
    # Port 1 refuses connections at once; the client gives up after its publish retries.
    dead.conf.update(celery_config(get_settings()) | {"broker_url": "redis://127.0.0.1:1/0"})
    monkeypatch.setattr(app.kit.queue, "_client", dead)
    before = _counts()
    resp = _post(app_client, keys["submit"], body(), **{"Idempotency-Key": "broker-down"})
    assert resp.status_code == 503, resp.text
    assert resp.headers["content-type"] == PROBLEM
    problem = resp.json()
    assert problem["status"] == 503 and problem["title"] == "Service unavailable"
    assert "broker did not accept the job" in problem["detail"]
    assert "retry with the same Idempotency-Key" in problem["detail"]
    # Nothing half-written: no job, tag or event, and not the estimate the body implied.
    assert _counts() == before
    monkeypatch.undo()
    retry = _post(app_client, keys["submit"], body(), **{"Idempotency-Key": "broker-down"})
    assert retry.status_code == 201
