"""GET /v1/reports/estimate-vs-actual against seeded jobs on PostgreSQL: groups, filters, CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.reports.schemas import flat_columns
from tests.conftest import auth
from tests.reports.conftest import Seeded, expected_groups, expected_row, group_key

URL = "/v1/reports/estimate-vs-actual"
PROBLEM = "application/problem+json"
GROUPINGS = [
    "method",
    "gpu",
    "model",
    "provider",
    "status",
    "team",
    "tag:team",
    "tag:project",
    "job",
    "cost_source",
]


def _get(client: Any, key: str, params: dict[str, Any]) -> Any:
    r = client.get(URL, params=params, headers=auth(key))
    assert r.status_code == 200, r.text
    return r


def _assert_row(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert got["jobs"] == want["jobs"]
    for money in ("spend_usd", "billed_usd", "effective_usd"):
        assert got[money] == pytest.approx(want[money]), money
    for quantity in ("cost_usd", "gpu_hours", "peak_bytes"):
        for stat, value in want[quantity].items():
            have = got[quantity][stat]
            if value is None:
                assert have is None, (quantity, stat)
            else:
                assert have == pytest.approx(value, rel=1e-9, abs=1e-9), (quantity, stat)


@pytest.mark.parametrize("group_by", GROUPINGS)
def test_every_grouping_matches_the_jobs(
    app_client: TestClient, keys: dict[str, str], seeded: Seeded, group_by: str
) -> None:
    body = _get(app_client, keys["admin"], {**seeded.scope, "group_by": group_by}).json()
    want = expected_groups(seeded.jobs, group_key(seeded, group_by))
    got = {row["group"]: row for row in body["rows"]}
    assert set(got) == set(want)
    for group, row in got.items():
        _assert_row(row, want[group])
    _assert_row(body["total"], expected_row(seeded.jobs))
    assert body["group_by"] == group_by and body["truncated"] is False
    spends = [row["spend_usd"] for row in body["rows"]]
    assert spends == sorted(spends, reverse=True)  # biggest spender first


def test_errors_are_signed_estimate_minus_actual(
    app_client: TestClient, keys: dict[str, str], seeded: Seeded
) -> None:
    body = _get(app_client, keys["admin"], {**seeded.scope, "group_by": "job"}).json()
    by_id = {row["group"]: row for row in body["rows"]}
    under = next(
        j
        for j in seeded.jobs
        if j.est_gpu_hours and j.act_gpu_hours and j.est_gpu_hours < j.act_gpu_hours
    )
    assert under.est_gpu_hours is not None and under.act_gpu_hours is not None
    row = by_id[under.id]["gpu_hours"]
    # Estimated 1 h, took 2 h: the estimate is 50% low.
    assert row["mean_pct_error"] == pytest.approx(
        (under.est_gpu_hours - under.act_gpu_hours) / under.act_gpu_hours * 100
    )
    assert row["mean_pct_error"] < 0 and row["mape_pct"] == -row["mean_pct_error"]


FILTERS: list[tuple[dict[str, Any], Any]] = [
    ({"method": "lora"}, lambda j, t: j.method == "lora"),
    ({"method": "lora,full"}, lambda j, t: j.method in ("lora", "full")),
    ({"gpu": "H100-80GB-SXM"}, lambda j, t: j.gpu == "H100-80GB-SXM"),
    ({"status": ["failed", "cancelled"]}, lambda j, t: j.status in ("failed", "cancelled")),
    ({"provider": "aws"}, lambda j, t: j.provider == "aws"),
    ({"team": "ml"}, lambda j, t: j.team == "ml"),
    ({"tag.team": "b"}, lambda j, t: t.get("team") == "b"),
    (
        {"tag.project": "x,y", "tag.team": "a"},
        lambda j, t: t.get("project") in ("x", "y") and t.get("team") == "a",
    ),
    (
        {"from": "2025-03-04", "to": "2025-04-15T09:00:00Z"},
        lambda j, t: (
            datetime(2025, 3, 4, tzinfo=UTC) <= j.finished_at < datetime(2025, 4, 15, 9, tzinfo=UTC)
        ),
    ),
    (
        {"from": "2025-04-01T00:00:00+02:00"},
        lambda j, t: j.finished_at >= datetime(2025, 3, 31, 22, tzinfo=UTC),
    ),
]


@pytest.mark.parametrize(("params", "keep"), FILTERS, ids=[str(p) for p, _ in FILTERS])
def test_each_filter_selects_the_right_jobs(
    app_client: TestClient,
    keys: dict[str, str],
    seeded: Seeded,
    params: dict[str, Any],
    keep: Callable[..., bool],
) -> None:
    body = _get(app_client, keys["admin"], {**seeded.scope, **params, "group_by": "job"}).json()
    want = [j for j in seeded.jobs if keep(j, seeded.tags[j.id])]
    assert 0 < len(want) < len(seeded.jobs)  # the filter really narrows
    assert {row["group"] for row in body["rows"]} == {j.id for j in want}
    _assert_row(body["total"], expected_row(want))


def test_model_filter(app_client: TestClient, keys: dict[str, str], seeded: Seeded) -> None:
    model = f"{seeded.suite}/m2"
    body = _get(app_client, keys["admin"], {"model": model, "group_by": "method"}).json()
    want = [j for j in seeded.jobs if j.model_ref == model]
    assert body["total"]["jobs"] == len(want) == 2
    assert {r["group"] for r in body["rows"]} == {j.method for j in want}


def test_csv_has_the_same_rows(
    app_client: TestClient, keys: dict[str, str], seeded: Seeded
) -> None:
    params = {**seeded.scope, "group_by": "tag:team"}
    rows = _get(app_client, keys["admin"], params).json()["rows"]
    r = _get(app_client, keys["admin"], {**params, "format": "csv"})
    assert r.headers["content-type"].startswith("text/csv")
    reader = csv.DictReader(io.StringIO(r.text))
    assert reader.fieldnames == flat_columns()
    parsed = list(reader)
    assert len(parsed) == len(rows)
    for line, row in zip(parsed, rows, strict=True):
        assert (line["group"] or None) == row["group"]
        assert int(line["jobs"]) == row["jobs"]
        assert float(line["spend_usd"]) == pytest.approx(row["spend_usd"])
        for q in ("cost_usd", "gpu_hours", "peak_bytes"):
            for stat in ("n", "estimated", "mape_pct"):
                value = row[q][stat]
                cell = line[f"{q}_{stat}"]
                assert (cell == "") if value is None else float(cell) == pytest.approx(value)


def test_limit_truncates(app_client: TestClient, keys: dict[str, str], seeded: Seeded) -> None:
    body = _get(app_client, keys["admin"], {**seeded.scope, "group_by": "job", "limit": 2}).json()
    assert len(body["rows"]) == 2 and body["truncated"] is True
    assert body["total"]["jobs"] == len(seeded.jobs)


def test_needs_a_key(app_client: TestClient) -> None:
    assert app_client.get(URL).status_code == 401


def test_a_team_key_reports_only_its_own_teams_jobs(
    app_client: TestClient, keys: dict[str, str], seeded: Seeded
) -> None:
    # keys["read"] belongs to team ml; the suite also has jobs of team ops.
    params = {**seeded.scope, "group_by": "job"}
    own = {j.id for j in seeded.jobs if j.team == "ml"}
    assert 0 < len(own) < len(seeded.jobs)
    rows = _get(app_client, keys["read"], params).json()["rows"]
    assert {row["group"] for row in rows} == own
    spend = app_client.get(
        "/v1/reports/spend", params={**seeded.scope, "group_by": "team"}, headers=auth(keys["read"])
    ).json()
    assert {row["group"] for row in spend["rows"]} == {"ml"}
    focus = app_client.get(
        "/v1/reports/focus", params={**seeded.scope, "format": "json"}, headers=auth(keys["read"])
    )
    assert focus.status_code == 200
    assert {r["ResourceId"] for r in focus.json()["rows"]} <= own
