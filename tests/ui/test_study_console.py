"""The console's Study view in headless Chromium against a live API.

A study is submitted through the API on a GPU kind no test worker serves; its pilots' final
evaluations are then written as a worker would (per-item losses drawn around a known curve
E + B * D^-beta per candidate) and each pilot is ended through the job lifecycle, so the study's
own job-ended hook fits, predicts and decides. The page must show the recommendation with its
reasons, the frontier and pilot-curve charts over every candidate and pilot, the candidates'
predicted loss and cost, and run the chosen candidate on the whole data.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from app.db import session_scope
from app.jobs import lifecycle
from app.models import Job, JobEval, JobStatus
from app.models.base import utcnow
from app.studies import analysis
from devtools.tinymodel import make_tiny_dataset
from tests.live_api import LiveApi
from tests.ui.conftest import log_in

pytestmark = pytest.mark.slow
IDLE_GPU = {"gpu": "RTX-A6000", "provider": "runpod"}  # no test worker serves it: jobs stay queued
ITEMS = 40
# (E, B, beta) of each candidate's curve: LoRA levels off above the full fine-tune.
LAWS = {0: (2.0, 0.3, 0.6), 1: (1.5, 0.5, 0.5)}
BASE_LOSS = 5.9


def _item_losses(mean: float, rng: np.random.Generator) -> list[float]:
    return [float(x) for x in mean + rng.normal(0, 0.05, ITEMS)]


def _end_pilots(study: dict[str, Any]) -> None:
    """Each pilot scored at its end on the same 40 items, then ended succeeded."""
    analysis.install()  # this test process ends the pilots: the study's hook must run here
    rng = np.random.default_rng(7)
    tokens = [20] * ITEMS
    for cand in study["candidates"]:
        e, b, beta = LAWS[cand["index"]]
        for pilot in cand["pilots"]:
            mean = e + b * (pilot["rows"] / study["full_rows"]) ** -beta
            with session_scope() as session:
                job = session.get(Job, pilot["job_id"], with_for_update=True)
                assert job is not None
                for step, loss in ((0, BASE_LOSS), (10, mean)):
                    losses = _item_losses(loss, rng)
                    session.add(
                        JobEval(
                            job_id=job.id,
                            attempt=1,
                            created_at=utcnow(),
                            step=step,
                            total_steps=10,
                            tokens=step * 100,
                            elapsed_s=float(step),
                            accrued_cost_usd=0.001 * step,
                            final=step > 0,
                            eval_set_id="es_40_ui",
                            loss=float(np.mean(losses)),
                            loss_se=0.01,
                            token_accuracy=None,
                            items=ITEMS,
                            loss_tokens=sum(tokens),
                            item_loss_sums=[x * t for x, t in zip(losses, tokens, strict=True)],
                            item_tokens=tokens,
                        )
                    )
                job.attempts, job.act_cost_usd = 1, 0.01  # its one attempt ran
                lifecycle.end(session, job, JobStatus.SUCCEEDED, detail="succeeded")


@pytest.fixture(scope="module")
def study(
    live_api: LiveApi,
    keys: dict[str, str],
    tiny_ui_model: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Any]]:
    """An analysed study of LoRA r4 and full fine-tuning, its pilots ended as described."""
    path = make_tiny_dataset(tmp_path_factory.mktemp("ui-s") / "s.jsonl", n=120, fmt="text")
    with live_api.client(keys["submit"]) as client, path.open("rb") as fh:
        ds = client.post(
            "/v1/datasets", files={"file": ("s.jsonl", fh)}, data={"model_path": tiny_ui_model}
        )
        assert ds.status_code == 201, ds.text
        resp = client.post(
            "/v1/studies",
            json={
                "model": {"path": tiny_ui_model},
                "dataset_id": ds.json()["id"],
                "candidates": [{"method": "lora", "lora": {"r": 4}}, {"method": "full"}],
                "fractions": [0.1, 0.2, 0.4],
                "target": {"eval_loss": 2.0},
                "pilot_budget_usd": 50.0,
                "training": {"seq_len": 64, "micro_batch_size": 2, "precision": "fp32"},
                "hardware": IDLE_GPU,
            },
        )
        assert resp.status_code == 201, resp.text
    _end_pilots(resp.json())
    with live_api.client(keys["read"]) as client:
        got = client.get(f"/v1/studies/{resp.json()['id']}").json()
    assert got["status"] == "succeeded", got
    for cand in got["candidates"]:  # each pilot's final evaluation, near its candidate's curve
        e, b, beta = LAWS[cand["index"]]
        for pilot in cand["pilots"]:
            law = e + b * (pilot["rows"] / got["full_rows"]) ** -beta
            assert pilot["eval_loss"] == pytest.approx(law, abs=0.05)
    yield got


def _open(page: Any, study: dict[str, Any]) -> None:
    page.click("#tabs [data-view=studies]")
    page.click(f"#studies-table tr[data-study='{study['id']}'] a")
    page.wait_for_selector(f"#study-id:text('{study['id']}')")
    page.wait_for_selector("#view-studies[data-ready=true]")


def test_the_study_view_shows_the_frontier_curves_and_the_recommendation(
    page: Any, keys: dict[str, str], study: dict[str, Any]
) -> None:
    # LoRA levels off at 2.0 + 0.3 = 2.3 at full data, above the 2.0 target; full reaches 2.0.
    rec = study["recommendation"]
    assert rec["name"] == "full fine-tuning", rec
    log_in(page, keys["read"])
    _open(page, study)
    assert page.inner_text("#studies-error") == ""
    assert page.inner_text("#study-recommendation h3") == "Recommended: full fine-tuning"
    shown = page.locator("#study-recommendation li").all_inner_texts()
    assert shown == rec["reasons"]
    assert page.get_attribute("#study-frontier", "data-candidates") == "2"
    assert page.get_attribute("#study-frontier", "data-frontier") == ",".join(
        str(i) for i in study["frontier"]
    )
    assert page.get_attribute("#study-curves", "data-pilots") == "6"
    for cand in study["candidates"]:
        row = page.locator(f"#study-candidates tr[data-candidate='{cand['index']}']")
        pred = cand["predicted_eval_loss"]
        assert row.locator(".loss").inner_text().startswith(f"{pred['value']:.3f} (")
        assert f"{pred['low']:.3f} \u2013 {pred['high']:.3f}" in row.locator(".loss").inner_text()
        assert row.locator(".pilots").inner_text().count("succeeded") == 3
        per_unit = float(row.locator(".per-unit").inner_text().removeprefix("$"))
        assert per_unit == pytest.approx(cand["usd_per_eval_loss_unit"], rel=5e-3)
    assert page.locator("#study-candidates tr.recommended").get_attribute("data-candidate") == "1"
    assert page.locator("#study-run").is_hidden()  # a read key runs nothing


def test_the_chosen_candidate_runs_on_the_full_data_from_the_page(
    page: Any, keys: dict[str, str], study: dict[str, Any], live_api: LiveApi
) -> None:
    log_in(page, keys["submit"])
    _open(page, study)
    chosen = page.locator("#study-run-candidate").input_value()
    assert chosen == str(study["recommendation"]["candidate"])
    page.click("#study-run-btn")
    job_id = page.locator("#study-run-result code.job").inner_text()
    with live_api.client(keys["submit"]) as client:
        job = client.get(f"/v1/jobs/{job_id}").json()
        assert job["method"] == "full" and job["spec"]["data_fraction"] == 1.0
        assert job["tags"]["study"] == study["id"]
        assert job["status"] == "queued"
        client.post(f"/v1/jobs/{job_id}/cancel")


def test_reports_show_dollars_per_unit_of_eval_loss_removed_by_method(
    page: Any, keys: dict[str, str], study: dict[str, Any], live_api: LiveApi
) -> None:
    with live_api.client(keys["read"]) as client:
        rows = {r["method"]: r for r in client.get("/v1/reports/benefit").json()["rows"]}
    assert {"lora", "full"} <= set(rows)  # the study's pilots at least
    log_in(page, keys["read"])
    page.click("#tabs [data-view=reports]")
    page.wait_for_selector("#view-reports[data-ready=true]")
    for method, row in rows.items():
        cell = page.locator(f"#benefit-table tr[data-method='{method}'] .per-unit")
        value, shown = row["usd_per_eval_loss_unit"], cell.inner_text()
        if value is None:
            assert shown == "-"
        else:  # three significant figures
            assert float(shown.removeprefix("$")) == pytest.approx(value, rel=5e-3)
