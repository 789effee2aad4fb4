"""The fit feeds the real estimator: the next estimate is `calibrated` and moves toward the jobs."""

from __future__ import annotations

import statistics
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session

from app.calibration import service
from app.catalog.loader import load_catalog
from app.catalog.model_catalog import get_model_config
from app.estimator import analyze_model
from app.estimator.engine import estimate
from app.estimator.results import EstimateResult
from app.estimator.spec import (
    DatasetShape,
    HardwareSpec,
    LoraSpec,
    Method,
    QLoraSpec,
    TrainingSpec,
)
from tests.calibration.conftest import slowed_job

MODEL = "Qwen/Qwen2.5-0.5B"
GPU = "A100-80GB"
SLOWDOWNS = (2.9, 3.0, 3.1, 3.0)  # the matmuls really ran ~3x slower than the prior
MEMORY = 1.3  # and the peak was 30% above the estimate


def _estimate(calibration: Any = None) -> EstimateResult:
    return estimate(
        analysis=analyze_model(get_model_config(MODEL)),
        dataset=DatasetShape(num_examples=5000, avg_tokens=400, max_tokens=1024),
        methods=[Method.LORA, Method.QLORA],
        training=TrainingSpec(micro_batch_size=4),
        lora=LoraSpec(),
        qlora=QLoraSpec(),
        hardware=HardwareSpec(gpu=GPU, num_gpus=1),
        catalog=load_catalog(),
        calibration=calibration,
    )


@pytest.fixture(scope="module")
def prior() -> EstimateResult:
    """The uncalibrated estimate the seeded jobs were submitted with."""
    return _estimate()


def test_calibration_changes_the_next_estimate(session: Session, prior: EstimateResult) -> None:
    before = prior.results[Method.LORA]
    assert before.basis == "prior" and before.calibration_jobs == 0
    snap = before.model_dump(mode="json")
    t0 = datetime(2025, 8, 1, tzinfo=UTC)
    jobs = [
        slowed_job(session, slowdown=slow, mem=MEMORY, snap=snap, gpu=GPU, method="lora",
                   finished_at=t0 + timedelta(hours=i))
        for i, slow in enumerate(SLOWDOWNS)
    ]  # fmt: skip
    session.commit()

    table = service.fit(session)
    cal = table[(GPU, Method.LORA)]
    # Every job has the same shape, so the floor and the efficiency cannot be told apart: the
    # fit moves them as little as it must (towards the prior) to reproduce the jobs' loops.
    assert cal.mfu is not None and cal.host_scale is not None
    assert before.time.mfu_peak is not None
    assert cal.mfu <= before.time.mfu_peak and cal.host_scale >= 1.0
    assert cal.run_overhead_s == pytest.approx(before.time.overhead_s, rel=1e-6)
    assert cal.memory_factor == pytest.approx(MEMORY, rel=1e-3)
    assert cal.jobs == len(jobs)

    after = _estimate(table).results[Method.LORA]
    assert after.basis == "calibrated" and after.calibration_jobs == len(jobs)
    assert after.time.mfu_peak == pytest.approx(cal.mfu)
    assert after.time.host_scale == pytest.approx(cal.host_scale)
    assert after.memory.per_gpu_bytes == pytest.approx(
        before.memory.per_gpu_bytes * MEMORY, rel=1e-3
    )
    assert after.hours > before.hours
    # The calibrated estimate lands near what the jobs took; the prior one did not.
    took = statistics.fmean(j.act_wall_s for j in jobs if j.act_wall_s is not None)
    assert all(j.act_wall_s is not None for j in jobs)
    assert abs(after.time.total_s - took) / took < 0.05
    assert abs(before.time.total_s - took) / took > 0.2
    assert after.cost_usd is not None and before.cost_usd is not None  # the GPU has a price
    assert after.cost_usd > before.cost_usd
    # QLoRA on the same GPU has no finished jobs: it keeps its prior.
    assert _estimate(table).results[Method.QLORA].basis == "prior"
