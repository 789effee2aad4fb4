"""Hours and cost carry low/high bounds; a plan whose high memory bound overflows is tight."""

from __future__ import annotations

import pytest

from app.catalog.loader import load_catalog
from app.catalog.model_catalog import get_model_config
from app.estimator.calibration_types import Calibration, CalibrationTable
from app.estimator.engine import estimate
from app.estimator.intervals import CALIBRATED_TIME_BAND, PRIOR_TIME_BAND
from app.estimator.model_analysis import analyze_model
from app.estimator.results import EstimateResult
from app.estimator.spec import DatasetShape, HardwareSpec, LoraSpec, Method, QLoraSpec, TrainingSpec

MODEL = "meta-llama/Llama-3.1-8B"


def _estimate(
    seq_len: int, gpu: str, calibration: CalibrationTable | None = None
) -> EstimateResult:
    return estimate(
        analysis=analyze_model(get_model_config(MODEL)),
        dataset=DatasetShape(total_tokens=1e7),
        methods=[Method.LORA],
        training=TrainingSpec(seq_len=seq_len),
        lora=LoraSpec(),
        qlora=QLoraSpec(),
        hardware=HardwareSpec(gpu=gpu, num_gpus=1),
        catalog=load_catalog(),
        calibration=calibration,
    )


def test_prior_bounds_are_wider_than_calibrated_ones() -> None:
    prior = _estimate(1024, "A100-80GB").results[Method.LORA]
    cal = {("A100-80GB", Method.LORA): Calibration(mfu=prior.mfu, memory_factor=None, jobs=5)}
    calibrated = _estimate(1024, "A100-80GB", cal).results[Method.LORA]
    for result, band in ((prior, PRIOR_TIME_BAND), (calibrated, CALIBRATED_TIME_BAND)):
        assert result.hours_range is not None and result.cost_usd_range is not None
        assert result.cost_usd is not None and result.gpu_hours_range is not None
        assert result.hours_range.low < result.hours < result.hours_range.high
        assert result.hours_range.low == pytest.approx(result.hours * band[0])
        assert result.cost_usd_range.high == pytest.approx(result.cost_usd * band[1])
        assert result.gpu_hours_range.high == pytest.approx(result.gpu_hours * band[1])
    assert calibrated.basis == "calibrated" and prior.basis == "prior"
    assert prior.hours_range is not None and calibrated.hours_range is not None
    prior_width = prior.hours_range.high / prior.hours_range.low
    cal_width = calibrated.hours_range.high / calibrated.hours_range.low
    assert cal_width < prior_width


def test_a_plan_that_fits_only_at_the_expected_peak_is_tight_and_said_so() -> None:
    result = _estimate(512, "L4")
    lora = result.results[Method.LORA]
    gpu_bytes = load_catalog().gpu("L4").memory_bytes
    assert lora.fits and lora.memory.per_gpu_bytes <= gpu_bytes < lora.memory.high_bytes
    assert lora.tight
    assert any(n.startswith("tight:") for n in lora.notes)
    assert result.recommendation.method is Method.LORA
    assert any(r.startswith("Tight fit") for r in result.recommendation.reasons)
    roomy = _estimate(512, "A100-80GB").results[Method.LORA]
    assert roomy.fits and not roomy.tight
    assert not any(
        r.startswith("Tight fit") for r in _estimate(512, "A100-80GB").recommendation.reasons
    )
