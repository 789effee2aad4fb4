"""Cost provenance: a CPU worker's jobs are self-hosted, a worker configured cloud bills them."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from app.catalog.loader import load_catalog
from app.config import Settings, SettingsError, load_settings
from app.jobs import provenance
from app.models import CostSource
from app.reports import delivery
from tests.conftest import auth
from tests.jobs.conftest import dataset_id, job_body, tiny_model  # noqa: F401 (fixtures)
from tests.jobs.jobs_support import submit, wait_status
from tests.reports.factory import unique
from tests.support import ServiceEnv, pointed_at, start_worker

EXPORT_ENV = "TUNECOST_FOCUS_EXPORT"  # where `make focus-check` wants the CSV export
DELIVERY_ENV = "TUNECOST_FOCUS_DELIVERY_EXPORT"  # ... and the delivered Parquet of the same rows
# A GPU kind no other test submits a job to or serves (others leave L4, A10G, L40S, T4 and
# V100 jobs queued on purpose: a worker of theirs would train those first); trained on this CPU.
CLOUD_GPU, CLOUD = "RTX-4090", "runpod"


def _decide(gpu: str, provider: str | None = "aws", **settings: Any) -> provenance.Provenance:
    return provenance.decide(
        settings=Settings(**settings),
        catalog=load_catalog(),
        gpu=gpu,
        provider=provider,
        pricing="on_demand",
    )


def test_cpu_defaults_to_self_hosted_at_its_energy_rate() -> None:
    got = _decide("cpu")
    assert got.cost_source == CostSource.SELF_HOSTED and got.billing_provider is None
    want = provenance.CPU_BOX_WATTS / 1000 * provenance.ELECTRICITY_USD_PER_KWH
    assert got.internal_usd_per_gpu_hour == pytest.approx(want)
    assert got.sku == "c5.4xlarge" and got.region is None  # the reference offer; runs at home
    assert got.list_price_reference is not None
    assert got.list_price_reference.startswith("aws c5.4xlarge on_demand us-east-1")


def test_gpu_defaults_to_cloud_billed_by_its_priced_provider() -> None:
    got = _decide("A100-40GB")
    assert (got.cost_source, got.billing_provider) == (CostSource.CLOUD, "aws")
    assert (got.region, got.sku, got.internal_usd_per_gpu_hour) == (
        "us-east-1",
        "p4d.24xlarge",
        None,
    )


def test_configuration_decides() -> None:
    own = _decide("H100-80GB-SXM", worker_cost_source="self_hosted", worker_region="on-prem-1")
    assert own.cost_source == CostSource.SELF_HOSTED and own.region == "on-prem-1"
    tdp = load_catalog().gpu("H100-80GB-SXM").tdp_watts
    assert own.internal_usd_per_gpu_hour == pytest.approx(
        tdp / 1000 * provenance.ELECTRICITY_USD_PER_KWH
    )
    rated = _decide("cpu", worker_cost_source="self_hosted", internal_rate_usd_per_gpu_hour=0.5)
    assert rated.internal_usd_per_gpu_hour == 0.5
    billed = _decide("cpu", worker_cost_source="cloud", worker_billing_provider="gcp")
    assert (billed.cost_source, billed.billing_provider) == (CostSource.CLOUD, "gcp")
    # Cloud-billed needs someone to bill: with no provider at all it stays self-hosted.
    orphan = _decide("cpu", provider=None, worker_cost_source="cloud")
    assert orphan.cost_source == CostSource.SELF_HOSTED


def test_a_bad_cost_source_fails_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNECOST_WORKER_COST_SOURCE", "free")
    with pytest.raises(SettingsError, match="TUNECOST_WORKER_COST_SOURCE"):
        load_settings()


def _focus_row(app_client: Any, keys: dict[str, str], suite: str) -> dict[str, Any]:
    r = app_client.get(
        "/v1/reports/focus",
        params={"tag.suite": suite, "format": "json"},
        headers=auth(keys["read"]),
    )
    (row,) = r.json()["rows"]
    return dict(row)


@pytest.mark.slow
def test_real_jobs_self_hosted_on_cpu_and_billed_on_a_cloud_worker(
    app_client: Any,
    keys: dict[str, str],
    cpu_worker: Any,
    job_body: Any,  # noqa: F811
    service_env: ServiceEnv,
    tmp_path: Path,
) -> None:
    own, cloud = unique("own"), unique("cloud")
    on_cpu = submit(app_client, keys, job_body("lora", max_steps=3, tags={"suite": own}))
    body = job_body(
        "lora",
        max_steps=3,
        hardware={"gpu": CLOUD_GPU, "provider": CLOUD},
        tags={"suite": cloud},
    )
    on_cloud = submit(app_client, keys, body)
    extra = {"TUNECOST_WORKER_COST_SOURCE": "cloud"}
    name = f"cloud-{uuid.uuid4().hex[:6]}"
    with start_worker(
        service_env, gpu=CLOUD_GPU, hostname=name, log=tmp_path / "cloud.log", extra_env=extra
    ) as worker:
        cpu_done = wait_status(app_client, keys, on_cpu["id"])
        cloud_done = wait_status(app_client, keys, on_cloud["id"])
    statuses = (cpu_done["status"], cloud_done["status"])
    assert statuses == ("succeeded", "succeeded"), worker.output()

    assert cpu_done["cost_source"] == "self_hosted"
    row = _focus_row(app_client, keys, own)
    assert row["x_CostSource"] == "self_hosted" and row["BilledCost"] == 0
    assert row["ProviderName"] == row["InvoiceIssuerName"] == "Self-hosted"
    rate = cpu_done["internal_usd_per_gpu_hour"]
    assert rate == pytest.approx(provenance.default_internal_rate(load_catalog().gpu("cpu")))
    assert row["EffectiveCost"] == pytest.approx(cpu_done["act_gpu_hours"] * rate)
    assert row["ListCost"] == pytest.approx(cpu_done["act_cost_usd"]) and row["ListCost"] > 0
    assert row["x_ListCostReference"].startswith("aws c5.4xlarge on_demand")

    assert cloud_done["cost_source"] == "cloud" and cloud_done["billing_provider"] == CLOUD
    row = _focus_row(app_client, keys, cloud)
    assert row["x_CostSource"] == "cloud" and row["ProviderName"] == "RunPod"
    assert row["BilledCost"] == row["EffectiveCost"] == pytest.approx(cloud_done["act_cost_usd"])
    assert row["BilledCost"] > 0
    assert (row["RegionId"], row["SkuId"]) == ("global", "runpod/RTX 4090 (secure cloud)")

    # `make focus-check` validates this very export (both jobs) with the FinOps validator.
    target = os.environ.get(EXPORT_ENV)
    if target:
        r = app_client.get(
            "/v1/reports/focus",
            params={"tag.suite": f"{own},{cloud}"},
            headers=auth(keys["read"]),
        )
        assert r.status_code == 200 and r.text.count("\n") == 3, r.text
        Path(target).write_text(r.text)
    parquet_target = os.environ.get(DELIVERY_ENV)
    if parquet_target:
        _deliver_to(Path(parquet_target), tmp_path / "delivery", app_client, keys)


def _deliver_to(target: Path, root: Path, app_client: Any, keys: dict[str, str]) -> None:
    """What the scheduled delivery (the beat's task) writes for this database, as one file."""
    with pointed_at({"TUNECOST_FOCUS_DELIVERY_URL": str(root)}):
        outcome = delivery.deliver_all()
    assert outcome and all(o.startswith("delivered") for o in outcome.values()), outcome
    table = ds.dataset(root / "parquet", format="parquet").to_table()
    everything = app_client.get(
        "/v1/reports/focus", params={"format": "json"}, headers=auth(keys["admin"])
    ).json()["rows"]
    assert table.num_rows == len(everything) > 0
    pq.write_table(table, target)
