"""Bad query parameters of the report routes and the job list: a 422 problem+json naming each."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import auth

EVA, SPEND, FOCUS, JOBS = (
    "/v1/reports/estimate-vs-actual",
    "/v1/reports/spend",
    "/v1/reports/focus",
    "/v1/jobs",
)
# The filters every one of these routes takes from the one dependency (app/jobs/filters.py).
FILTERS: list[tuple[dict[str, Any], str]] = [
    ({"from": "yesterday"}, "from"),
    ({"to": "2025-13-01"}, "to"),
    ({"from": "2025-05-01", "to": "2025-04-01"}, "from"),
    ({"method": "lora,sft"}, "method"),
    ({"status": "done"}, "status"),
    ({"methd": "lora"}, "methd"),
    ({"tag.": "x"}, "tag."),
    ({"tag": "team:ml"}, "tag"),
]
OWN: list[tuple[str, dict[str, Any], str]] = [
    (EVA, {"group_by": "colour"}, "group_by"),
    (EVA, {"group_by": "tag:"}, "group_by"),
    (EVA, {"format": "xml"}, "format"),
    (EVA, {"limit": "0"}, "limit"),
    (SPEND, {"bucket": "year"}, "bucket"),
    (SPEND, {"group_by": "job"}, "group_by"),
    (FOCUS, {"format": "parquet"}, "format"),
    (FOCUS, {"group_by": "method"}, "group_by"),  # not a parameter of the export
    (JOBS, {"group_by": "method"}, "group_by"),
    (JOBS, {"limit": "0"}, "limit"),
]
BAD = [(route, params, name) for route in (EVA, SPEND, FOCUS, JOBS) for params, name in FILTERS]
BAD += OWN


@pytest.mark.parametrize(("route", "params", "name"), BAD, ids=[f"{r}-{p}" for r, p, _ in BAD])
def test_bad_input_is_422_naming_the_parameter(
    app_client: TestClient, keys: dict[str, str], route: str, params: dict[str, Any], name: str
) -> None:
    r = app_client.get(route, params=params, headers=auth(keys["admin"]))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["errors"][0]["loc"][-1] == name
    assert name in body["detail"]
