"""The estimate snapshot (max_steps scaling, signed errors) and the streamed artifact archives."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from app.catalog import load_catalog
from app.errors import InvalidInput
from app.estimator.engine import estimate
from app.estimator.model_analysis import analyze_model
from app.estimator.results import EstimateResult
from app.estimator.spec import (
    DatasetShape,
    HardwareSpec,
    LoraSpec,
    Method,
    QLoraSpec,
    TrainingSpec,
)
from app.jobs import artifacts, snapshot
from tests.estimator.realmodel import TINY


def _result(**over: object) -> EstimateResult:
    """A real LoRA estimate of a tiny Llama on the CPU, with round figures put in for the test."""
    real = estimate(
        analysis=analyze_model(TINY["llama"]),
        dataset=DatasetShape(num_examples=200, avg_tokens=40, max_tokens=64),
        methods=[Method.LORA],
        training=TrainingSpec(seq_len=64, micro_batch_size=2),
        lora=LoraSpec(),
        qlora=QLoraSpec(),
        hardware=HardwareSpec(gpu="cpu", provider="aws"),
        catalog=load_catalog(),
    )
    lora = real.results[Method.LORA]
    figures: dict[str, object] = {
        "steps": 100,
        "hours": 0.02,
        "gpu_hours": 0.02,
        "cost_usd": 0.0136,
        "time": lora.time.model_copy(update={"overhead_s": 36.0}),
        "memory": lora.memory.model_copy(update={"per_gpu_bytes": 123_456_789}),
        "artifact_bytes": 4096,
        "flops": 1e12,
        **over,
    }
    dataset = real.dataset.model_copy(update={"processed_tokens": 1e6})
    results = {Method.LORA: lora.model_copy(update=figures)}
    # Read back as a stored estimate is: through the model, from its JSON.
    stored = real.model_copy(update={"results": results, "dataset": dataset})
    return EstimateResult.model_validate(stored.model_dump(mode="json"))


def test_snapshot_scales_only_the_step_part_to_max_steps() -> None:
    full = snapshot.take(_result(), method="lora", max_steps=None)
    assert (full.steps, full.hours, full.cost_usd) == (100, 0.02, 0.0136)
    assert (full.gpu, full.provider, full.peak_bytes) == ("cpu", "aws", 123_456_789)
    assert full.as_json()["job_scaled"]["steps"] == 100
    assert full.flops_per_token == pytest.approx(1e12 / 1e6)

    capped = snapshot.take(_result(), method="lora", max_steps=25)
    overhead_h = 36.0 / 3600
    expected_hours = overhead_h + (0.02 - overhead_h) * 0.25
    assert capped.steps == 25
    assert capped.hours == pytest.approx(expected_hours)
    assert capped.gpu_hours == pytest.approx(expected_hours)
    assert capped.cost_usd == pytest.approx(0.0136 * expected_hours / 0.02)
    # Memory and artifact size do not depend on the number of steps.
    assert (capped.peak_bytes, capped.artifact_bytes) == (full.peak_bytes, full.artifact_bytes)
    # More steps than the estimate planned: the worker runs them all (max_steps overrides the
    # epochs, as in HF Trainer), so the step part grows by the same factor.
    more = snapshot.take(_result(), method="lora", max_steps=500)
    assert more.steps == 500
    assert more.hours - overhead_h == pytest.approx((full.hours - overhead_h) * 5)


def test_snapshot_of_a_pilot_on_a_fraction_of_the_data_scales_its_steps() -> None:
    pilot = snapshot.take(_result(), method="lora", max_steps=None, data_fraction=0.2)
    overhead_h = 36.0 / 3600
    assert pilot.steps == 20
    assert pilot.hours == pytest.approx(overhead_h + (0.02 - overhead_h) * 0.2)
    assert pilot.cost_usd == pytest.approx(0.0136 * pilot.hours / 0.02)
    # max_steps decides when it is given, as in the worker
    both = snapshot.take(_result(), method="lora", max_steps=50, data_fraction=0.2)
    assert both.steps == 50


def test_snapshot_of_a_method_the_estimate_lacks_names_what_it_has() -> None:
    with pytest.raises(InvalidInput, match=r"no result for method .full.*lora"):
        snapshot.take(_result(), method="full", max_steps=None)


def test_signed_errors_are_relative_to_the_actual() -> None:
    got = snapshot.errors(
        {"cost_usd": 1.5, "gpu_hours": 1.0, "peak_bytes": 100, "artifact_bytes": 10},
        {"cost_usd": 1.0, "gpu_hours": 2.0, "peak_bytes": 100, "artifact_bytes": 0},
        full_run=True,
    )
    assert got["cost_usd"]["error_pct"] == pytest.approx(50.0)
    assert got["gpu_hours"]["error_pct"] == pytest.approx(-50.0)
    assert got["peak_bytes"]["error_pct"] == 0.0
    assert got["artifact_bytes"]["error_pct"] is None  # zero actual: no percentage
    partial = snapshot.errors({"cost_usd": 1.0}, {"cost_usd": 0.1}, full_run=False)
    assert "cost_usd" not in partial and partial["complete_run"] is False


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "artifacts" / "job_x"
    (root / "sub").mkdir(parents=True)
    (root / "adapter_model.safetensors").write_bytes(bytes(range(256)) * 5000 + b"tail")
    (root / "sub" / "config.json").write_text('{"r": 8}')
    (root / "empty.txt").write_bytes(b"")
    return root


def _expected(root: Path) -> dict[str, bytes]:
    return {
        f"job_x/{p.relative_to(root).as_posix()}": p.read_bytes()
        for p in root.rglob("*")
        if p.is_file()
    }


def test_tar_stream_round_trips_every_file(folder: Path) -> None:
    data = b"".join(artifacts.stream_tar(str(folder), prefix="job_x"))
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        files = {m.name: tar.extractfile(m) for m in tar.getmembers()}
        got = {name: f.read() for name, f in files.items() if f is not None}
    assert len(got) == len(files)  # regular files only (a directory would have no file object)
    assert got == _expected(folder)


def test_zip_stream_round_trips_every_file(folder: Path) -> None:
    pieces = list(artifacts.stream_zip(str(folder), prefix="job_x"))
    assert len(pieces) > 1  # streamed, not built in one piece
    with zipfile.ZipFile(io.BytesIO(b"".join(pieces))) as archive:
        assert archive.testzip() is None
        got = {name: archive.read(name) for name in archive.namelist()}
    assert got == _expected(folder)
