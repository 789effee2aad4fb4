"""The job is the plan: it runs with the plan's levers, on what a worker can run, for the data
and model it was estimated for (else it is estimated again, or refused).

Jobs here are planned on GPUs no test worker serves, so they stay queued.
"""

from __future__ import annotations

from typing import Any

import pytest

from app.auth.service import Principal, authenticate
from app.db import session_scope
from app.errors import Conflict
from app.estimator.spec import Method
from app.jobs import service
from app.jobs.schemas import JobIn
from app.kit.admission import Admission
from tests.conftest import auth
from tests.jobs.conftest import TINY_NAME


def _estimate(client: Any, key: str, body: dict[str, Any]) -> dict[str, Any]:
    resp = client.post("/v1/estimates", json=body, headers=auth(key))
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def _submit(client: Any, key: str, body: dict[str, Any]) -> Any:
    return client.post("/v1/jobs", json=body, headers=auth(key))


def test_the_job_runs_with_the_levers_its_plan_chose(
    app_client: Any, keys: dict[str, str], dataset_id: str
) -> None:
    # Llama-3.1-8B LoRA on one 24 GB L4 at 2,048 tokens, 4 to a micro-batch: memory needs levers
    est = _estimate(
        app_client,
        keys["read"],
        {
            "model": "meta-llama/Llama-3.1-8B",
            "dataset": {"dataset_id": dataset_id},
            "methods": ["lora"],
            "training": {"seq_len": 2048, "padding": "max_length", "micro_batch_size": 4},
            "hardware": {"gpu": "L4", "num_gpus": 1, "provider": "aws"},
        },
    )
    planned = est["results"]["lora"]
    assert planned["fits"] and planned["runnable"]
    chosen = planned["training"]
    assert chosen["levers"], "the plan needs at least one lever at 2,048 tokens on 24 GB"
    resp = _submit(app_client, keys["submit"], {"estimate_id": est["id"], "method": "lora"})
    assert resp.status_code == 201, resp.text
    training = resp.json()["spec"]["training"]
    for name in (
        "micro_batch_size",
        "gradient_accumulation_steps",
        "gradient_checkpointing",
        "optimizer",
        "adapter_dtype",
    ):
        assert training[name] == chosen[name], name
    assert training["seq_len"] == 2048 and training["padding"] == "max_length"
    # the global batch asked for is the one that runs
    assert training["micro_batch_size"] * training["gradient_accumulation_steps"] == 4


def test_a_plan_no_worker_node_can_run_is_refused_naming_the_alternative(
    app_client: Any, keys: dict[str, str], dataset_id: str
) -> None:
    # 70B LoRA with every lever pinned off fits H100s only beyond one node
    est = _estimate(
        app_client,
        keys["read"],
        {
            "model": "meta-llama/Llama-3.1-70B",
            "dataset": {"dataset_id": dataset_id},
            "methods": ["lora"],
            "training": {
                "seq_len": 2048,
                "padding": "max_length",
                "gradient_checkpointing": False,
                "optimizer": "adamw",
                "adapter_dtype": "fp32",
            },
            "hardware": {"gpu": "H100-80GB-SXM"},
        },
    )
    planned = est["results"]["lora"]
    assert planned["fits"] and not planned["runnable"] and planned["num_gpus"] > 8
    assert est["recommendation"]["method"] is None
    resp = _submit(app_client, keys["submit"], {"estimate_id": est["id"], "method": "lora"})
    assert resp.status_code == 422 and resp.headers["content-type"] == "application/problem+json"
    problem = resp.json()
    assert problem["errors"][0]["loc"] == ["hardware"]
    assert "cannot run" in problem["detail"] and "one node" in problem["detail"]
    alternative = problem["alternative"]
    assert alternative["num_gpus"] <= 8
    best = next(p for p in est["plans"]["lora"] if p["fits"] and p["runnable"])
    assert (alternative["gpu"], alternative["num_gpus"]) == (best["gpu"], best["num_gpus"])
    assert f"{best['num_gpus']} x {best['gpu']}" in problem["detail"]


def test_a_job_on_other_data_than_its_estimate_is_estimated_again(
    app_client: Any, keys: dict[str, str], dataset_id: str
) -> None:
    # estimated for 50,000 examples; the job names the 120-example dataset
    est = _estimate(
        app_client,
        keys["read"],
        {
            "model": {"path": TINY_NAME},
            "dataset": {"num_examples": 50_000, "avg_tokens": 60, "max_tokens": 64},
            "methods": ["lora"],
            "training": {"seq_len": 64, "micro_batch_size": 2, "precision": "fp32"},
            "hardware": {"gpu": "L4", "provider": "aws"},
        },
    )
    resp = _submit(
        app_client,
        keys["submit"],
        {"estimate_id": est["id"], "method": "lora", "dataset_id": dataset_id},
    )
    assert resp.status_code == 201, resp.text
    job = resp.json()
    replanned = job["estimate"]["replanned"]
    assert replanned["from_estimate_id"] == est["id"] != job["estimate_id"]
    assert "50,000" in replanned["differences"][0] and dataset_id in replanned["differences"][0]
    again = app_client.get(f"/v1/estimates/{job['estimate_id']}", headers=auth(keys["read"]))
    assert again.status_code == 200
    assert again.json()["request"]["dataset"] == {"dataset_id": dataset_id}
    # the job's figures are those of what it runs: 120 examples, not 50,000
    assert job["est_cost_usd"] == again.json()["results"]["lora"]["cost_usd"]
    assert job["estimate"]["steps"] < est["results"]["lora"]["steps"] / 100
    assert job["dataset_id"] == dataset_id
    events = app_client.get(f"/v1/jobs/{job['id']}/events", headers=auth(keys["read"])).json()
    assert any("estimated again" in e["message"] for e in events["items"])
    # the same estimate with its own data is taken as it is
    same = _estimate(
        app_client,
        keys["read"],
        {
            "model": {"path": TINY_NAME},
            "dataset": {"dataset_id": dataset_id},
            "methods": ["lora"],
            "training": {"seq_len": 64, "micro_batch_size": 2, "precision": "fp32"},
            "hardware": {"gpu": "L4", "provider": "aws"},
        },
    )
    kept = _submit(
        app_client,
        keys["submit"],
        {"estimate_id": same["id"], "method": "lora", "dataset_id": dataset_id},
    )
    assert kept.status_code == 201, kept.text
    assert kept.json()["estimate_id"] == same["id"] and "replanned" not in kept.json()["estimate"]


def test_the_submit_service_refuses_a_different_job_it_was_not_given_a_new_plan_for(
    app_client: Any, keys: dict[str, str], dataset_id: str
) -> None:
    est = _estimate(
        app_client,
        keys["read"],
        {
            "model": {"path": TINY_NAME},
            "dataset": {"num_examples": 50_000, "avg_tokens": 60, "max_tokens": 64},
            "methods": ["lora"],
            "training": {"seq_len": 64, "precision": "fp32"},
            "hardware": {"gpu": "L4", "provider": "aws"},
        },
    )
    job_in = JobIn(estimate_id=est["id"], method=Method.LORA, dataset_id=dataset_id)
    with session_scope() as session:
        key = authenticate(session, secret=keys["submit"])
        assert key is not None
        principal = Principal(key.id, key.name, key.scope, key.team)
        with pytest.raises(Conflict) as refused:
            service.create(session, job_in=job_in, principal=principal, idempotency_key=None)
    assert refused.value.status == 409
    assert "differs from estimate" in refused.value.detail
    assert refused.value.extra["differences"][0].startswith("dataset:")


def test_an_estimate_made_at_submit_takes_an_estimator_slot(
    app_client: Any, keys: dict[str, str], dataset_id: str
) -> None:
    # One slot, no queue, held here: what the submit would estimate must wait for it.
    app = app_client.app
    kept = getattr(app.state, "estimate_admission", None)
    gate = Admission(what="the estimator is busy", slots=1, queue=0, wait_s=0.2)
    app.state.estimate_admission = gate
    body = {
        "method": "lora",
        "model": {"path": TINY_NAME},
        "dataset_id": dataset_id,
        "training": {"seq_len": 64, "micro_batch_size": 2, "precision": "fp32"},
        "hardware": {"gpu": "L4", "provider": "aws"},
    }
    other = _estimate(
        app_client,
        keys["read"],
        {
            "model": {"path": TINY_NAME},
            "dataset": {"num_examples": 50_000, "avg_tokens": 60, "max_tokens": 64},
            "methods": ["lora"],
            "training": body["training"],
            "hardware": body["hardware"],
        },
    )
    replan = {"estimate_id": other["id"], "method": "lora", "dataset_id": dataset_id}
    try:
        app_client.portal.call(gate.acquire)
        for refused in (body, replan):  # estimated from the body / estimated again
            resp = _submit(app_client, keys["submit"], refused)
            assert resp.status_code == 503, resp.text
            assert int(resp.headers["Retry-After"]) >= 1
            assert "the estimator is busy" in resp.json()["detail"]
        assert (gate.running, gate.waiting) == (1, 0)
        app_client.portal.call(gate.release)
        for admitted in (body, replan):
            resp = _submit(app_client, keys["submit"], admitted)
            assert resp.status_code == 201, resp.text
        assert (gate.running, gate.waiting) == (0, 0)
    finally:
        app.state.estimate_admission = kept
