"""CONTRIBUTING.md's "Add a GPU" recipe is the real one: its columns are the catalog's, and its
example rows, added as it says, give a GPU the estimator plans and prices."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.catalog import loader
from app.catalog.model_catalog import get_model_config
from app.estimator.engine import estimate
from app.estimator.model_analysis import analyze_model
from app.estimator.spec import DatasetShape, HardwareSpec, LoraSpec, Method, QLoraSpec, TrainingSpec

GUIDE = Path(__file__).resolve().parent.parent / "CONTRIBUTING.md"


def _recipe() -> str:
    text = GUIDE.read_text(encoding="utf-8")
    start = text.index("### Add a GPU")
    return text[start : text.index("\n### ", start + 1)]


def _header(path: Path) -> str:
    return path.read_text(encoding="utf-8").splitlines()[0]


@pytest.fixture
def catalog_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The shipped catalog's CSV files in a folder of the test's own, loaded from there."""
    for name in ("gpus.csv", "prices.csv", "storage_prices.csv"):
        shutil.copy(loader.CATALOG_DIR / name, tmp_path / name)
    monkeypatch.setattr(loader, "CATALOG_DIR", tmp_path)
    loader.load_catalog.cache_clear()
    yield tmp_path
    loader.load_catalog.cache_clear()


def test_the_documented_columns_are_the_catalogs() -> None:
    columns = re.findall(r"`(id,name,[^`]+)`|`(provider,gpu,[^`]+)`", _recipe())
    gpus, prices = columns[0][0], columns[1][1]
    assert gpus == _header(loader.CATALOG_DIR / "gpus.csv")
    assert prices == _header(loader.CATALOG_DIR / "prices.csv")


def test_following_the_recipe_gives_a_priced_gpu(catalog_copy: Path) -> None:
    gpu_row, price_row = re.findall(r"```csv\n\s*(.+?)\n\s*```", _recipe())
    with (catalog_copy / "gpus.csv").open("a", encoding="utf-8") as fh:
        fh.write(gpu_row + "\n")
    with (catalog_copy / "prices.csv").open("a", encoding="utf-8") as fh:
        fh.write(price_row + "\n")
    gpu_id, provider = gpu_row.split(",")[0], price_row.split(",")[0]
    catalog = loader.load_catalog()
    assert gpu_id in catalog.gpus

    result = estimate(
        analysis=analyze_model(get_model_config("meta-llama/Llama-3.2-1B")),
        dataset=DatasetShape(total_tokens=1e6),
        methods=[Method.LORA],
        training=TrainingSpec(seq_len=1024),
        lora=LoraSpec(),
        qlora=QLoraSpec(),
        hardware=HardwareSpec(gpu=gpu_id, provider=provider),
        catalog=catalog,
    ).results[Method.LORA]
    assert result.gpu == gpu_id and result.fits
    assert result.price_per_gpu_hour == pytest.approx(float(price_row.split(",")[3]))
    assert result.cost_usd is not None and result.cost_usd > 0
