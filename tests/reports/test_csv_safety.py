"""Every CSV the API writes is safe to open in a spreadsheet (OWASP CSV injection rule)."""

from __future__ import annotations

import csv
import io
import random
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.db import session_scope
from app.kit import csv_out
from devtools.tinymodel import make_tiny_dataset
from tests.conftest import auth
from tests.jobs.conftest import TINY_NAME, TRAINING, tiny_model  # noqa: F401 (fixture)
from tests.reports.factory import make_job, unique
from tests.support import wait_for

HOSTILE = (
    '=HYPERLINK("http://x","y")',
    "@SUM(A1:A9)",
    "+1+1",
    "-2+3",
    "=cmd|' /C calc'!A0",
    "-",
    "+",
)
# (route, group_by): every CSV the API writes, grouped so hostile text lands in a cell.
CSV_ROUTES = (
    ("/v1/reports/estimate-vs-actual", "tag:project"),
    ("/v1/reports/estimate-vs-actual", "team"),
    ("/v1/reports/estimate-vs-actual", "model"),
    ("/v1/reports/spend", "tag:project"),
    ("/v1/reports/spend", "team"),
    ("/v1/reports/focus", None),
)


@pytest.mark.parametrize("value", [*HOSTILE, "\tx", "\r=1"])
def test_formula_text_is_quoted(value: str) -> None:
    assert csv_out.neutralise(value) == "'" + value


@pytest.mark.parametrize("value", ["-3.5", "+2", "-1e-3", "ml", "a=b", "", 0, -1.5, 7])
def test_numbers_and_plain_text_are_kept(value: Any) -> None:
    assert csv_out.neutralise(value) == value


def _formula_cells(text: str) -> list[str]:
    cells = [cell for row in csv.reader(io.StringIO(text)) for cell in row]
    return [
        c for c in cells if c.startswith(csv_out.FORMULA_PREFIXES) and csv_out.neutralise(c) != c
    ]


@pytest.fixture(scope="module")
def hostile_suite(service_env: object) -> str:
    """Jobs whose tags, team names and model names are each a formula."""
    suite = unique("hostile")
    with session_scope() as session:
        for i, value in enumerate(HOSTILE):
            make_job(
                session,
                team=value,
                model=value if i % 2 else f"{suite}/m",
                tags={"suite": suite, "project": value, "note": value},
            )
    return suite


@pytest.mark.parametrize(("url", "group_by"), CSV_ROUTES)
def test_no_csv_cell_starts_with_a_formula(
    app_client: TestClient, keys: dict[str, str], hostile_suite: str, url: str, group_by: str | None
) -> None:
    params = {"tag.suite": hostile_suite, "format": "csv"}
    if group_by:
        params["group_by"] = group_by
    # The jobs belong to the hostile teams: only an admin key sees every tenant's rows.
    r = app_client.get(url, params=params, headers=auth(keys["admin"]))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    assert _formula_cells(r.text) == []
    cells = {cell for row in csv.reader(io.StringIO(r.text)) for cell in row}
    if group_by in ("tag:project", "team"):
        # The hostile text is still there, readable, behind the quote.
        assert {"'" + v for v in HOSTILE} <= cells


def test_tag_values_with_control_characters_are_refused(
    app_client: TestClient, keys: dict[str, str]
) -> None:
    for value in ("\t=1+1", "\r=1", "a\nb", " padded "):
        r = app_client.post(
            "/v1/jobs",
            json={"method": "lora", "estimate_id": "est_x", "tags": {"project": value}},
            headers=auth(keys["submit"]),
        )
        assert r.status_code == 422, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["errors"][0]["loc"][:2] == ["body", "tags"]


def _cell_by_cell(header: list[str], rows: list[list[Any]]) -> str:
    # Every row written with CRLF as its terminator (so a cell with either line break is
    # quoted), then ended with LF like the header.
    out = []
    for row in [header, *([csv_out.neutralise(c) for c in row] for row in rows)]:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\r\n").writerow(row)
        out.append(buffer.getvalue()[:-2] + "\n")
    return "".join(out)


def test_the_inlined_check_writes_what_neutralise_would() -> None:
    # The writer calls neutralise() only on text that starts with a formula character (an
    # inlined test): whatever the cells, the result must equal neutralising every cell.
    rng = random.Random(13)
    pieces = ["=", "+", "-", "@", "\t", "\r", "\n", ",", '"', "1", "2.5", "e-3", "a", " ", "'"]
    cells: list[Any] = [None, 0, -1.5, 2.0, 1e-05, -3, "-", "-1", "-1,2", "x"]
    for _ in range(3000):
        rows = [
            [
                rng.choice(cells)
                if rng.random() < 0.3
                else "".join(rng.choice(pieces) for _ in range(rng.randint(0, 4)))
                for _ in range(3)
            ]
            for _ in range(rng.randint(1, 2))
        ]
        header = ["a", "b", "c"]
        text = "".join(csv_out.chunks(header, [rows]))
        assert text == _cell_by_cell(header, rows), rows
        assert list(csv.reader(io.StringIO(text, newline=""))) == [
            header,
            *([str(csv_out.neutralise(c)) for c in row] for row in rows),
        ]


def test_a_hostile_team_name_from_the_admin_api_is_quoted(
    app_client: Any,
    keys: dict[str, str],
    tiny_model: Any,  # noqa: F811
    tmp_path: Any,
) -> None:
    # The admin API names a team as a formula; a job of that team's key ends; its CSV row.
    suite = unique("hostile-team")
    team = f'=HYPERLINK("http://x/{suite}","y")'
    made = app_client.post(
        "/v1/keys",
        json={"name": "hostile", "scope": "submit", "team": team},
        headers=auth(keys["admin"]),
    )
    assert made.status_code == 201, made.text
    hostile = auth(made.json()["secret"])
    path = make_tiny_dataset(tmp_path / "tiny.jsonl", n=40, fmt="text")
    with path.open("rb") as fh:
        files = {"file": ("tiny.jsonl", fh, "application/x-ndjson")}
        ds = app_client.post(
            "/v1/datasets", files=files, data={"model_path": TINY_NAME}, headers=hostile
        )
    assert ds.status_code == 201, ds.text
    body = {
        "method": "lora",
        "model": {"path": TINY_NAME},
        "dataset_id": ds.json()["id"],
        "training": dict(TRAINING),
        "hardware": {"gpu": "cpu", "provider": "aws"},
        "max_steps": 2,
        "tags": {"suite": suite},
    }
    job = app_client.post("/v1/jobs", json=body, headers=hostile)
    assert job.status_code == 201, job.text
    assert job.json()["team"] == team
    job_id = job.json()["id"]
    cancelled = app_client.post(f"/v1/jobs/{job_id}/cancel", headers=hostile)
    assert cancelled.json()["status"] in ("cancelled", "cancel_requested")

    def final() -> bool:
        # Queued, it ends at once; a live CPU worker may have taken it first: then it ends soon.
        status = app_client.get(f"/v1/jobs/{job_id}", headers=hostile).json()["status"]
        return status not in ("queued", "running", "cancel_requested")

    wait_for(final, timeout=300, what=f"job {job_id} to end")
    r = app_client.get(
        "/v1/reports/estimate-vs-actual",
        params={"tag.suite": suite, "group_by": "team", "format": "csv"},
        headers=auth(keys["admin"]),
    )
    assert r.status_code == 200, r.text
    assert _formula_cells(r.text) == []
    (row,) = list(csv.DictReader(io.StringIO(r.text)))
    assert row["group"] == "'" + team and row["jobs"] == "1"
