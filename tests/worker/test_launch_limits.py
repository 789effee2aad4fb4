"""The training child reads a dataset under the service's own limit (TUNECOST_MAX_DATASET_BYTES,
or its default from the upload limit), not a limit of its own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.config import GZIP_EXPANSION_ALLOWANCE, get_settings
from app.estimator.spec import Method
from app.jobs.spec import JobSpec, ModelRef
from worker.job_rows import Claim
from worker.jobs import launch_of


@pytest.fixture
def fresh_settings() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _launched_limit() -> int:
    claim = Claim(
        job_id="job_limits",
        attempt=1,
        spec=JobSpec(method=Method.LORA, model=ModelRef(hub_id="o/m")),
        dataset_url=None,
        started_at_epoch=0.0,
        billed_usd=0.0,
    )
    return launch_of(claim, dataset_path=Path("d.jsonl")).run.max_dataset_bytes


def test_the_child_gets_the_configured_dataset_limit(
    monkeypatch: pytest.MonkeyPatch, fresh_settings: None
) -> None:
    monkeypatch.setenv("TUNECOST_MAX_DATASET_BYTES", "12345")
    get_settings.cache_clear()
    assert _launched_limit() == 12345


def test_unset_it_is_the_apis_default(
    monkeypatch: pytest.MonkeyPatch, fresh_settings: None
) -> None:
    monkeypatch.delenv("TUNECOST_MAX_DATASET_BYTES", raising=False)
    monkeypatch.setenv("TUNECOST_MAX_UPLOAD_BYTES", "1000")
    get_settings.cache_clear()
    assert _launched_limit() == get_settings().dataset_bytes_cap == 1000 * GZIP_EXPANSION_ALLOWANCE
