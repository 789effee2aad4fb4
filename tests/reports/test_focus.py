"""GET /v1/reports/focus: FOCUS 1.2 columns, types and nulls, in JSON and CSV, streamed."""

from __future__ import annotations

import csv
import io
import json
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.db import session_scope
from app.jobs.filters import parse_filters
from app.models import Job
from app.reports import focus
from app.reports.focus_columns import COLUMNS
from tests.conftest import auth
from tests.reports.conftest import Seeded
from tests.reports.factory import edit_tags, make_job, unique

URL = "/v1/reports/focus"
DECIMALS = (
    "BilledCost",
    "EffectiveCost",
    "ListCost",
    "ContractedCost",
    "ListUnitPrice",
    "ContractedUnitPrice",
    "ConsumedQuantity",
    "PricingQuantity",
    "x_InternalUnitPrice",
    "x_EstimatedCost",
    "x_EstimatedGpuHours",
    "x_EstimateErrorPct",
)
# FOCUS 1.2 Mandatory columns (specification/columns/*.md: "MUST be present").
MANDATORY = (
    "BilledCost",
    "BillingAccountId",
    "BillingAccountName",
    "BillingCurrency",
    "BillingPeriodEnd",
    "BillingPeriodStart",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargePeriodEnd",
    "ChargePeriodStart",
    "ContractedCost",
    "EffectiveCost",
    "InvoiceIssuerName",
    "ListCost",
    "PricingQuantity",
    "PricingUnit",
    "ProviderName",
    "PublisherName",
    "ServiceCategory",
    "ServiceName",
)
# Never null on a Usage row that is not a correction (ChargeClass is only ever null here).
NOT_NULL = (
    *(c for c in MANDATORY if c != "ChargeClass"),
    "ServiceSubcategory",
    "ListUnitPrice",
    "ContractedUnitPrice",
    "SkuId",
    "SkuPriceId",
    "ResourceId",
)
PROVIDER_NAMES = {"aws": "AWS", "gcp": "Google Cloud"}
FOCUS_DATETIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def _json_rows(client: Any, key: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    r = client.get(URL, params={**params, "format": "json"}, headers=auth(key))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["focus_version"] == "1.2"
    result: list[dict[str, Any]] = body["rows"]
    return result


def test_json_columns_types_and_values(
    app_client: TestClient, keys: dict[str, str], seeded: Seeded
) -> None:
    rows = _json_rows(app_client, keys["admin"], seeded.scope)
    charged = [j for j in seeded.jobs if j.act_cost_usd is not None]
    assert [r["ResourceId"] for r in rows] == [
        j.id for j in sorted(charged, key=lambda j: (j.finished_at, j.id))
    ]
    jobs = {j.id: j for j in charged}
    for row in rows:
        job = jobs[row["ResourceId"]]
        assert tuple(row) == COLUMNS
        for name in DECIMALS:
            assert row[name] is None or isinstance(row[name], int | float), name
        for name in NOT_NULL:
            assert row[name] is not None, name
        assert FOCUS_DATETIME.match(row["ChargePeriodStart"])
        assert FOCUS_DATETIME.match(row["ChargePeriodEnd"])
        assert row["ChargePeriodStart"] <= row["ChargePeriodEnd"]
        assert set(MANDATORY) <= set(row)
        assert FOCUS_DATETIME.match(row["BillingPeriodStart"])
        assert row["BillingPeriodStart"] <= row["ChargePeriodEnd"] < row["BillingPeriodEnd"]
        assert row["BillingPeriodStart"][8:] == "01T00:00:00Z"
        if job.cost_source == "cloud":
            assert job.provider is not None
            assert row["BilledCost"] == row["EffectiveCost"] == pytest.approx(job.act_cost_usd)
            assert row["ProviderName"] == PROVIDER_NAMES[job.provider]
            assert row["InvoiceIssuerName"] == row["PublisherName"] == row["ProviderName"]
            assert row["SkuId"].startswith(job.provider + "/")
        else:
            assert row["BilledCost"] == 0
            rate = job.internal_usd_per_gpu_hour
            assert job.act_gpu_hours is not None and rate is not None
            assert row["EffectiveCost"] == pytest.approx(job.act_gpu_hours * rate)
            assert row["x_InternalUnitPrice"] == pytest.approx(rate)
            assert row["ProviderName"] == "Self-hosted"
            assert row["SkuId"] == f"self-hosted/{job.gpu}"
        assert row["x_CostSource"] == job.cost_source
        assert row["ContractedCost"] == row["ListCost"] == pytest.approx(job.act_cost_usd)
        assert row["SubAccountId"] == row["SubAccountName"] == job.team
        assert row["ListCost"] == pytest.approx(row["ListUnitPrice"] * row["PricingQuantity"])
        assert row["ConsumedQuantity"] == pytest.approx(job.act_gpu_hours)
        assert row["ConsumedUnit"] == row["PricingUnit"] == "GPU-Hours"
        assert row["BillingCurrency"] == "USD"
        assert row["ChargeCategory"] == "Usage"
        assert row["ServiceCategory"] == "AI and Machine Learning"
        assert row["Tags"] == seeded.tags[job.id]
        assert row["x_Method"] == job.method and row["x_Model"] == job.model_ref
        assert row["x_EstimatedCost"] == pytest.approx(job.est_cost_usd)
        assert job.act_cost_usd is not None
        if job.act_cost_usd > 0:
            assert job.est_cost_usd is not None
            want = (job.est_cost_usd - job.act_cost_usd) / job.act_cost_usd * 100
            assert row["x_EstimateErrorPct"] == pytest.approx(want)
        else:
            assert row["x_EstimateErrorPct"] is None  # no error against a zero cost


def test_spot_is_dynamic_pricing(
    app_client: TestClient, keys: dict[str, str], seeded: Seeded
) -> None:
    rows = _json_rows(app_client, keys["admin"], seeded.scope)
    pricing = {j.id: j.pricing for j in seeded.jobs}
    for row in rows:
        want = "Dynamic" if pricing[row["ResourceId"]] == "spot" else "Standard"
        assert row["PricingCategory"] == want


def test_csv_matches_json(app_client: TestClient, keys: dict[str, str], seeded: Seeded) -> None:
    rows = _json_rows(app_client, keys["admin"], seeded.scope)
    r = app_client.get(URL, params=seeded.scope, headers=auth(keys["admin"]))  # csv by default
    assert r.headers["content-type"].startswith("text/csv")
    reader = csv.DictReader(io.StringIO(r.text))
    assert tuple(reader.fieldnames or ()) == COLUMNS
    lines = list(reader)
    assert len(lines) == len(rows)
    for line, row in zip(lines, rows, strict=True):
        assert json.loads(line["Tags"]) == row["Tags"]
        for name in COLUMNS:
            value = row[name]
            if value is None:
                assert line[name] == "", name
            elif name in DECIMALS or name == "x_NumGpus":
                assert float(line[name]) == pytest.approx(value), name
            elif name != "Tags":
                assert line[name] == value, name


def test_filters_apply(app_client: TestClient, keys: dict[str, str], seeded: Seeded) -> None:
    rows = _json_rows(app_client, keys["admin"], {**seeded.scope, "tag.team": "b"})
    want = {j.id for j in seeded.jobs if seeded.tags[j.id].get("team") == "b"}
    assert {r["ResourceId"] for r in rows} == want


def test_empty_export_is_valid(app_client: TestClient, keys: dict[str, str]) -> None:
    assert _json_rows(app_client, keys["admin"], {"tag.suite": "nobody-has-this"}) == []
    r = app_client.get(URL, params={"tag.suite": "nobody"}, headers=auth(keys["admin"]))
    assert r.text.strip() == ",".join(COLUMNS)


def test_written_batch_by_batch(seeded: Seeded, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(focus, "BATCH_ROWS", 2)
    filters = parse_filters(start=None, end=None, params={"tag.suite": [seeded.suite]})
    with session_scope() as session:
        chunks = list(focus.render_csv(focus.iter_batches(session, filters)))
    charged = sum(1 for j in seeded.jobs if j.act_cost_usd is not None)
    assert len(chunks) == 1 + -(-charged // 2)  # the header, then one chunk per batch of 2
    assert sum(c.count("\n") for c in chunks) == 1 + charged


def _text(chunks: Any) -> str:
    return "".join(c.decode() if isinstance(c, bytes) else c for c in chunks)


def test_database_rendering_matches_python_rendering(seeded: Seeded) -> None:
    # PostgreSQL renders the export itself (COPY of CSV, json_build_object); the generic path
    # writes the same records from Python. Both say the same thing, the CSV byte for byte
    # (tests/reports/test_focus_pg.py tries every kind of text and number).
    filters = parse_filters(start=None, end=None, params={"tag.suite": [seeded.suite]})
    with session_scope() as session:
        by_db = _text(focus.stream(session, filters, "csv"))
        by_py = "".join(focus.render_csv(focus.iter_batches(session, filters)))
        json_db = json.loads(_text(focus.stream(session, filters, "json")))
        json_py = json.loads("".join(focus.render_json(focus.iter_batches(session, filters))))
    assert by_db == by_py
    assert by_db.count("\n") == 1 + sum(1 for j in seeded.jobs if j.act_cost_usd is not None) > 1
    assert json_db["rows"] == json_py["rows"]


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_unfiltered_export_has_every_jobs_tags(seeded: Seeded, fmt: str) -> None:
    # With no filter the tags come from one grouped pass joined by job id, not per-job lookups.
    everything = parse_filters(start=None, end=None, params={})
    with session_scope() as session:
        text = _text(focus.stream(session, everything, fmt))
    if fmt == "csv":
        rows = [dict(r) for r in csv.DictReader(io.StringIO(text))]
        tags = {r["ResourceId"]: json.loads(r["Tags"]) for r in rows}
    else:
        tags = {r["ResourceId"]: r["Tags"] for r in json.loads(text)["rows"]}
    for job in seeded.jobs:
        if job.act_cost_usd is not None:
            assert tags[job.id] == seeded.tags[job.id]
        else:
            assert job.id not in tags


def test_awkward_text_survives_both_formats(app_client: TestClient, keys: dict[str, str]) -> None:
    suite = unique("awkward")
    odd = 'say "hi"\\ back\\slash, comma\nnew line\ttab é ✓ \\n'
    with session_scope() as session:
        job = make_job(session, model=f'{suite}/m"1\\', tags={"suite": suite, "note": odd})
        job_id, model = job.id, job.model_ref
    rows = _json_rows(app_client, keys["admin"], {"tag.suite": suite})
    assert [(r["ResourceId"], r["x_Model"], r["Tags"]) for r in rows] == [
        (job_id, model, {"suite": suite, "note": odd})
    ]
    r = app_client.get(URL, params={"tag.suite": suite}, headers=auth(keys["admin"]))
    (line,) = list(csv.DictReader(io.StringIO(r.text)))
    assert line["x_Model"] == model and json.loads(line["Tags"])["note"] == odd


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_a_client_leaving_early_frees_the_connection(
    seeded: Seeded, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    monkeypatch.setattr(focus, "CHUNK_BYTES", 1)  # every COPY row becomes its own chunk
    monkeypatch.setattr(focus, "BATCH_ROWS", 1)
    filters = parse_filters(start=None, end=None, params={"tag.suite": [seeded.suite]})
    with session_scope() as session:
        chunks = focus.stream(session, filters, fmt)
        next(chunks), next(chunks)  # mid-export
        chunks.close()  # what the server does when the client disconnects
        session.rollback()
        assert session.execute(select(func.count()).select_from(Job)).scalar_one() > 0


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_tags_follow_edits_of_a_finished_job(service_env: object, fmt: str) -> None:
    # The export copies each job's stored tags text; every flush writing tag rows rewrites it.
    suite = unique("retag")
    with session_scope() as session:
        start = {"suite": suite, "team": "a", "env": "dev"}
        ids = [make_job(session, act_hours=1.0, tags=start).id for _ in "123"]
    with session_scope() as session:
        edit_tags(session, ids[0], {"suite": suite, "team": "b", "project": "p-2"})
        edit_tags(session, ids[1], {"suite": suite})
        edit_tags(session, ids[2], {"suite": suite, "team": "a", "env": "dev", "cost_center": "c"})
    everything = parse_filters(start=None, end=None, params={})
    for filters in (everything, parse_filters(start=None, end=None, params={"tag.suite": [suite]})):
        with session_scope() as session:
            text = _text(focus.stream(session, filters, fmt))
        if fmt == "csv":
            rows = csv.DictReader(io.StringIO(text))
            tags = {r["ResourceId"]: json.loads(r["Tags"]) for r in rows}
        else:
            tags = {r["ResourceId"]: r["Tags"] for r in json.loads(text)["rows"]}
        assert tags[ids[0]] == {"project": "p-2", "suite": suite, "team": "b"}
        assert list(tags[ids[0]]) == ["project", "suite", "team"]  # keys in order
        assert tags[ids[1]] == {"suite": suite}
        assert tags[ids[2]] == {"cost_center": "c", "env": "dev", "suite": suite, "team": "a"}
