"""The planner recommends only strategies the worker runs, and the worker resolves them alike."""

from __future__ import annotations

from typing import Any

import pytest

from app.estimator.memory import resolve_strategy
from app.estimator.spec import Method
from app.jobs.spec import JobSpec
from worker.training.distributed import RUNNABLE, job_strategy


@pytest.mark.parametrize("method", list(Method))
@pytest.mark.parametrize("sharding", ["auto", "ddp", "fsdp_zero2", "fsdp_zero3"])
def test_every_planned_strategy_is_one_the_worker_runs(method: Method, sharding: str) -> None:
    planned = resolve_strategy(method=method, num_gpus=4, sharding=sharding)
    assert planned in RUNNABLE
    if method is Method.QLORA:
        assert planned == "ddp"  # the 4-bit base is replicated, never FSDP-sharded
    assert resolve_strategy(method=method, num_gpus=1, sharding=sharding) == "single"
    # fp16 mixed precision: loss scaling is not shard-aware here, so never FSDP
    assert (
        resolve_strategy(method=method, num_gpus=4, sharding=sharding, precision="fp16_mixed")
        == "ddp"
    )


def _spec(**fields: Any) -> JobSpec:
    return JobSpec.model_validate({"method": "full", "model": {"path": "m"}, **fields})


def test_the_worker_runs_the_estimates_choice_over_the_training_setting() -> None:
    spec = _spec(num_gpus=2, strategy="ddp", training={"sharding": "fsdp_zero3"})
    assert job_strategy(spec) == "ddp"
    assert job_strategy(_spec(num_gpus=2, training={"sharding": "fsdp_zero2"})) == "fsdp_zero2"
    assert job_strategy(_spec(num_gpus=2)) == "fsdp_zero3"
    assert job_strategy(_spec(num_gpus=2, method="lora")) == "ddp"
    assert job_strategy(_spec(num_gpus=2, method="qlora", strategy="fsdp_zero3")) == "ddp"
    assert job_strategy(_spec(num_gpus=1, strategy="single")) == "single"
    fp16 = {"precision": "fp16_mixed", "sharding": "fsdp_zero3"}
    assert job_strategy(_spec(num_gpus=2, training=fp16)) == "ddp"
