"""One filter dependency: the same documented job filters, `tag.<key>=<value>` among them, on every
route that filters jobs."""

from __future__ import annotations

from typing import Any

import pytest

from app.jobs.filters import JOB_COLUMNS
from app.jobs.tag_filters import TAG_FILTER_HELP

FILTERING_ROUTES = (
    "/v1/jobs",
    "/v1/reports/estimate-vs-actual",
    "/v1/reports/spend",
    "/v1/reports/focus",
)


@pytest.mark.parametrize("path", FILTERING_ROUTES)
def test_openapi_documents_the_tag_filter(app_client: Any, path: str) -> None:
    spec = app_client.get("/openapi.json").json()
    params = {p["name"]: p for p in spec["paths"][path]["get"]["parameters"]}
    assert params["tag.<key>"]["in"] == "query"
    assert params["tag.<key>"]["description"] == TAG_FILTER_HELP


def test_every_filtering_route_declares_the_same_filters(app_client: Any) -> None:
    spec = app_client.get("/openapi.json").json()
    declared = {
        path: {(p["name"], p.get("description")) for p in spec["paths"][path]["get"]["parameters"]}
        for path in FILTERING_ROUTES
    }
    shared = set.intersection(*declared.values())
    assert {name for name, _ in shared} >= {"from", "to", *JOB_COLUMNS, "tag.<key>"}
