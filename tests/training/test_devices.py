"""The device list a scheduler hands a job: parsed into one kind, refused clearly otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.estimator.spec import Method
from app.jobs.spec import JobSpec, ModelRef
from worker.training.devices import parse_devices
from worker.training.errors import JobSpecError
from worker.training.runner import run_job
from worker.training.spec import Launch, RunContext


def test_cpu_slots_are_one_rank_each_over_gloo() -> None:
    devices = parse_devices(["cpu:0", "cpu:1"])
    assert (devices.kind, devices.world_size, devices.backend) == ("cpu", 2, "gloo")
    assert devices.environment() == {}


def test_gpus_are_confined_with_cuda_visible_devices() -> None:
    devices = parse_devices(["3", "GPU-5c1f2a7e-0000-1111-2222-333344445555"])
    assert (devices.kind, devices.world_size, devices.backend) == ("cuda", 2, "nccl")
    assert devices.environment() == {
        "CUDA_VISIBLE_DEVICES": "3,GPU-5c1f2a7e-0000-1111-2222-333344445555"
    }


@pytest.mark.parametrize(
    ("devices", "says"),
    [
        ([], "no device"),
        (["0", "0"], "repeat a GPU"),
        (["cpu", "1"], "mix CPU slots and GPUs"),
        (["cuda:0"], "neither a CPU slot"),
        (["0,1"], "neither a CPU slot"),
    ],
)
def test_bad_device_lists_are_refused(devices: list[str], says: str) -> None:
    with pytest.raises(JobSpecError, match=says):
        parse_devices(devices)


def test_run_job_refuses_a_device_count_that_is_not_the_jobs(tmp_path: Path) -> None:
    launch = Launch(
        spec=JobSpec(method=Method.FULL, model=ModelRef(hub_id="o/m"), num_gpus=2),
        run=RunContext(job_id="x", dataset_path="d.jsonl"),
    )
    out = run_job(launch, devices=["cpu"], out_dir=tmp_path)
    assert out.status == "failed" and out.error_kind == "bad_job_spec"
    assert out.error == "the job needs 2 devices but was given 1 (cpu)"
