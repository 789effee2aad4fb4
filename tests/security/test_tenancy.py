"""Findings 5 and 6: no tenant reads another's jobs through calibration or /metrics, and no
tenant's jobs move another's estimates (the issue's scenario replayed on a real server)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from app.db import session_scope
from app.models import Job, JobStatus
from devtools.tinymodel import make_tiny_dataset, make_tiny_model
from tests.calibration.conftest import slowed_job
from tests.live_api import LiveApi
from tests.support import ServiceEnv

T0 = datetime(2026, 1, 5, 12, tzinfo=UTC)
ESTIMATE = {
    "model": "Qwen/Qwen2.5-0.5B",
    "dataset": {"total_tokens": 2_000_000},
    "methods": ["lora"],
}
MOVE_LIMIT = 0.10  # team A's estimate may not move by this much because of team B's jobs


def _estimate(live_api: LiveApi, secret: str, gpu: str) -> dict[str, Any]:
    body = {**ESTIMATE, "hardware": {"gpu": gpu, "provider": "aws"}}
    with live_api.client(secret) as client:
        r = client.post("/v1/estimates", json=body)
    assert r.status_code == 201, r.text
    return dict(r.json()["results"]["lora"])


def _finish(job_id: str, *, slowdown: float, finished_at: datetime) -> None:
    """Meter a job as its worker would: its matmuls took `slowdown` x its estimate's time."""
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        t = job.estimate_snapshot["time"]
        steps = sum(t[k] for k in ("weight_stream_s", "dequant_s", "optimizer_s", "comm_s"))
        train_s = steps + t.get("adapter_s", 0.0) + t["compute_s"] * slowdown
        job.status = JobStatus.SUCCEEDED
        job.started_at = finished_at - timedelta(hours=1)
        job.finished_at = finished_at
        job.act_wall_s = t["overhead_s"] + train_s
        job.act_gpu_hours = job.act_wall_s / 3600 * job.num_gpus
        job.act_cost_usd = job.act_gpu_hours * job.price_per_gpu_hour
        job.act_peak_bytes = job.est_peak_bytes
        job.act_peak_kind = "cuda_max_reserved"
        job.actuals = {"train_s": train_s}
        job.errors = {"complete_run": True}


def test_team_b_cannot_move_team_a_estimate(
    live_api: LiveApi, teams: dict[str, dict[str, str]], service_env: ServiceEnv, tmp_path: Any
) -> None:
    gpu = "L40S"
    with session_scope() as session:  # team A's five genuine runs, as estimated
        for i in range(5):
            slowed_job(
                session, slowdown=1.0, gpu=gpu, team="alpha", finished_at=T0 + timedelta(hours=i)
            )
    before = _estimate(live_api, teams["alpha"]["read"], gpu)
    assert before["basis"] == "calibrated"

    # Team B: an estimate of a tiny model, and six jobs of it that train a larger one instead.
    for name, width in (("sec-tiny", 64), ("sec-larger", 256)):
        if not (service_env.model_root / name).exists():
            make_tiny_model(service_env.model_root / name, vocab_size=384, hidden_size=width)
    data = make_tiny_dataset(tmp_path / "b.jsonl", n=40, fmt="text")
    with live_api.client(teams["beta"]["submit"]) as client:
        up = client.post(
            "/v1/datasets", files={"file": ("b.jsonl", data.read_bytes())}, data={"name": "b"}
        )
        assert up.status_code == 201, up.text
        tiny = client.post(
            "/v1/estimates",
            json={
                "model": {"path": "sec-tiny"},
                "dataset": {"dataset_id": up.json()["id"]},
                "methods": ["lora"],
                "hardware": {"gpu": gpu, "provider": "aws"},
            },
        )
        assert tiny.status_code == 201, tiny.text
        jobs = []
        for model in [{"path": "sec-larger"}] * 6 + [None] * 6:
            body: dict[str, Any] = {"estimate_id": tiny.json()["id"], "method": "lora"}
            if model is not None:
                body["model"] = model
            r = client.post("/v1/jobs", json=body)
            assert r.status_code == 201, r.text
            # a job naming another model is estimated again for the model it trains: it runs
            # as (re)estimated, never as the tiny model's estimate
            assert r.json()["spec"]["as_estimated"] is True
            replanned = r.json()["estimate"].get("replanned")
            if model is None:
                assert replanned is None and r.json()["estimate_id"] == tiny.json()["id"]
            else:
                assert replanned["from_estimate_id"] == tiny.json()["id"], replanned
                assert r.json()["estimate_id"] != tiny.json()["id"]
                assert any(d.startswith("model:") for d in replanned["differences"]), replanned
            jobs.append(r.json()["id"])
    # B's jobs (a slow machine of theirs) run 5x slower than their estimates: they may move
    # B's estimates, never team A's.
    for i, job_id in enumerate(jobs):
        _finish(job_id, slowdown=5.0, finished_at=T0 + timedelta(hours=10 + i))
    after = _estimate(live_api, teams["alpha"]["read"], gpu)
    moved = abs(after["cost_usd"] / before["cost_usd"] - 1)
    print(f"team A's estimate: ${before['cost_usd']:.6f} -> ${after['cost_usd']:.6f} ({moved:.1%})")
    assert moved < MOVE_LIMIT
    # B's own estimates learn from all twelve of B's jobs, each against what it was estimated as.
    b_fit = _calibration(live_api, teams["beta"]["read"], gpu)
    assert b_fit["mfu_jobs"] == 12 and b_fit["eligible_jobs"] == 12
    a_fit = _calibration(live_api, teams["alpha"]["read"], gpu)
    assert a_fit["mfu_jobs"] == 5


def _calibration(live_api: LiveApi, secret: str, gpu: str) -> dict[str, Any]:
    with live_api.client(secret) as client:
        r = client.get("/v1/calibration")
    assert r.status_code == 200, r.text
    groups = [g for g in r.json()["groups"] if g["gpu"] == gpu and g["method"] == "lora"]
    assert len(groups) == 1, r.json()
    return dict(groups[0])


def _metric_sum(text: str, name: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    )


def test_evaluation_and_metrics_show_only_the_keys_tenant(
    live_api: LiveApi, teams: dict[str, dict[str, str]], keys: dict[str, str]
) -> None:
    ids: dict[str, set[str]] = {"alpha": set(), "beta": set()}
    with session_scope() as session:
        for i in range(8):
            for team in ids:
                job = slowed_job(
                    session,
                    slowdown=1.0 + i / 10,
                    gpu="A10G",
                    team=team,
                    finished_at=T0 + timedelta(days=30, hours=i),
                )
                ids[team].add(job.id)
    with live_api.client(teams["alpha"]["read"]) as client:
        evaluation = client.get("/v1/calibration/evaluation", params={"include_jobs": "true"})
        metrics = client.get("/metrics")
    assert evaluation.status_code == 200, evaluation.text
    listed = {j["job_id"] for j in evaluation.json()["jobs"]}
    assert listed and not listed & ids["beta"]
    with session_scope() as session:
        teams_listed = set(session.scalars(select(Job.team).where(Job.id.in_(listed))))
        alpha_cost = session.scalar(
            select(func.sum(Job.act_cost_usd)).where(
                Job.team == "alpha", Job.finished_at.is_not(None)
            )
        )
        every_cost = session.scalar(
            select(func.sum(Job.act_cost_usd)).where(Job.finished_at.is_not(None))
        )
    assert teams_listed == {"alpha"}
    assert metrics.status_code == 200, metrics.text
    alpha_metric = _metric_sum(metrics.text, "tunecost_cost_usd_total")
    assert abs(alpha_metric - float(alpha_cost or 0.0)) < 1e-6
    assert "tunecost_http_request_duration_seconds" not in metrics.text
    with live_api.client(keys["admin"]) as client:
        everyone = client.get("/metrics").text
    assert abs(_metric_sum(everyone, "tunecost_cost_usd_total") - float(every_cost or 0.0)) < 1e-6
