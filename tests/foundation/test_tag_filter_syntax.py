"""One tag-filter syntax, `tag.<key>=<value>`, documented on every route that filters by tag."""

from __future__ import annotations

from typing import Any

import pytest

from app.tag_filters import TAG_FILTER_HELP

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
