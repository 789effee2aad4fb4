"""The shipped catalog files and the frozen Catalog built from them."""

from __future__ import annotations

import csv
import dataclasses
from datetime import date

import pytest

from app.catalog import PriceRow, UnknownGpuError, UnknownProviderError, load_catalog
from app.catalog.loader import CATALOG_DIR

REQUIRED_GPUS = {
    "H200", "H100-80GB-SXM", "H100-80GB-PCIe", "A100-80GB", "A100-40GB", "L40S", "A10G", "L4",
    "T4", "V100-16GB", "RTX-4090", "RTX-3090", "RTX-A6000", "MI300X", "cpu",
}  # fmt: skip


def test_files_carry_units_dates_and_sources() -> None:
    with (CATALOG_DIR / "gpus.csv").open() as fh:
        header = next(csv.reader(fh))
    assert {"memory_gib", "bf16_tflops_dense", "hbm_gbps", "interconnect_gbps"} <= set(header)
    catalog = load_catalog()
    assert set(catalog.gpus) == REQUIRED_GPUS
    for row in catalog.prices:
        assert row.as_of <= date.today() and row.source.strip()
        assert row.usd_per_gpu_hour > 0 and row.gpus_per_instance >= 1
    assert {"aws", "gcp", "azure", "lambda", "runpod"} <= set(catalog.providers)
    assert {r.pricing for r in catalog.prices} == {"on_demand", "spot"}
    assert set(catalog.storage_prices) >= {"aws", "gcp", "azure"}


def test_specs_are_physically_consistent() -> None:
    for gpu in load_catalog().gpus.values():
        assert gpu.memory_bytes > 8 * 1024**3
        assert gpu.memory_bandwidth_gbps > 0 and gpu.fp32_tflops > 0
        # tensor-core 16-bit peaks exceed plain fp32 except on the CPU box
        if not gpu.is_cpu:
            assert max(gpu.bf16_tflops_dense, gpu.fp16_tflops_dense) > gpu.fp32_tflops
        assert (gpu.bf16_tflops_dense > 0) is gpu.supports_bf16


def test_unknown_ids_and_aliases() -> None:
    catalog = load_catalog()
    assert catalog.gpu("H100-80GB").id == "H100-80GB-SXM"
    assert catalog.gpu("a100-40gb").id == "A100-40GB"
    with pytest.raises(UnknownGpuError) as err:
        catalog.gpu("A100-48GB")
    assert isinstance(err.value, ValueError)
    assert "did you mean" in str(err.value) and set(err.value.valid) == REQUIRED_GPUS
    with pytest.raises(UnknownProviderError) as bad:
        catalog.prices_for("L4", provider="ovh")
    assert "gcp" in bad.value.valid


def test_price_overrides_make_a_new_version_and_keep_the_offer() -> None:
    base = load_catalog()
    listed = base.prices_for("A100-40GB", provider="aws", pricing="on_demand")[0]
    negotiated = PriceRow(
        provider="aws", gpu="A100-40GB", pricing="on_demand", usd_per_gpu_hour=2.0,
        as_of=date(2025, 6, 1), source="contract 42",
    )  # fmt: skip
    new = base.with_price_overrides([negotiated], version=base.version + 1)
    row = new.prices_for("A100-40GB", provider="aws", pricing="on_demand")[0]
    assert (row.usd_per_gpu_hour, row.source) == (2.0, "contract 42")
    assert row.instance == listed.instance and row.gpus_per_instance == listed.gpus_per_instance
    assert len(new.prices) == len(base.prices)  # replaced, not added
    assert base.prices_for("A100-40GB", provider="aws", pricing="on_demand")[0] == listed
    assert new.version == base.version + 1
    with pytest.raises(ValueError):
        base.with_price_overrides([negotiated], version=base.version - 1)
    with pytest.raises(ValueError):
        base.with_price_overrides(
            [dataclasses.replace(negotiated, usd_per_gpu_hour=-1.0)], version=base.version + 1
        )
    with pytest.raises(dataclasses.FrozenInstanceError):
        new.version = 7  # type: ignore[misc]  # the test: assigning the read-only property must fail
