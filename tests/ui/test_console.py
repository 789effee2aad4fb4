"""The console at /ui/ in headless Chromium against a live API, a real worker and real jobs.

Order matters within this module: the plan submitted from the page trains to the end, and the
reports then show it (and the job the fixture ran) next to its estimate.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Any

import pytest

from devtools.tinymodel import make_tiny_dataset
from tests.live_api import LiveApi
from tests.support import WorkerProcess
from tests.ui.conftest import Offline, log_in

pytestmark = pytest.mark.slow
JOB_TIMEOUT_MS = 420_000  # start-up of a training child on two busy cores (tests/jobs)
TAG = "ui-test"


@pytest.fixture(scope="module")
def dataset_id(
    live_api: LiveApi,
    keys: dict[str, str],
    tiny_ui_model: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> str:
    """A tiny text dataset uploaded through the live API."""
    path = make_tiny_dataset(tmp_path_factory.mktemp("ui") / "api.jsonl", n=120, fmt="text")
    with live_api.client(keys["submit"]) as client, path.open("rb") as fh:
        resp = client.post(
            "/v1/datasets", files={"file": ("api.jsonl", fh)}, data={"model_path": tiny_ui_model}
        )
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


def _api_job(live_api: LiveApi, keys: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    with live_api.client(keys["submit"]) as client:
        resp = client.post("/v1/jobs", json=body)
        assert resp.status_code == 201, resp.text
        return dict(resp.json())


def _job_body(model: str, dataset_id: str, **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "method": "full",
        "model": {"path": model},
        "dataset_id": dataset_id,
        "training": {"seq_len": 64, "micro_batch_size": 2, "precision": "fp32"},
        "hardware": {"gpu": "cpu", "provider": "aws"},
        "max_steps": 4,
        "tags": {"project": "api-test"},
    }
    return body | over


def test_read_only_key_sees_no_submit_or_cancel(
    page: Any, keys: dict[str, str], live_api: LiveApi, tiny_ui_model: str, dataset_id: str
) -> None:
    # A queued job on a GPU kind no worker serves: it stays cancellable for the whole test.
    _api_job(live_api, keys, _job_body(tiny_ui_model, dataset_id, hardware={"gpu": "T4"}))
    log_in(page, keys["read"])
    assert "(read" in page.inner_text("#who")
    assert page.is_hidden("#submit-form") and page.is_hidden("#ds-file")
    page.click("#tabs [data-view=jobs]")
    page.wait_for_selector("#jobs-table tbody tr[data-status=queued]")
    assert page.locator("#jobs-table button.cancel").count() == 0


def test_a_bad_key_is_refused_and_not_kept(page: Any) -> None:
    log_in_failed = page.goto("/ui/")
    assert log_in_failed is not None and log_in_failed.status == 200
    page.fill("#key-input", "tc_not_a_key")
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#login-error:has-text('401')")
    assert page.evaluate("sessionStorage.getItem('tunecost.key')") is None
    assert page.is_hidden("#tabs")


def test_plan_from_the_page_is_submitted_and_finishes(
    page: Any,
    keys: dict[str, str],
    live_api: LiveApi,
    cpu_worker: WorkerProcess,
    tiny_ui_model: str,
    tmp_path: Path,
) -> None:
    data = make_tiny_dataset(tmp_path / "page.jsonl", n=120, fmt="text")
    log_in(page, keys["submit"])
    page.check("input[name=model_kind][value=path]")
    page.fill("#model-path", tiny_ui_model)
    page.check("input[name=data_kind][value=uploaded]")
    page.set_input_files("#ds-file", str(data))
    page.wait_for_selector("#ds-upload-status:has-text('uploaded page.jsonl: 120 examples')")
    page.select_option("#hw-gpu", "cpu")
    page.select_option("#hw-provider", "aws")
    page.fill("#tr-seq", "64")
    page.fill("#tr-mb", "2")
    page.select_option("#tr-precision", "fp32")
    page.click("#estimate-btn")
    page.wait_for_selector("#plan-result:not([hidden])")

    with live_api.client(keys["read"]) as client:
        estimate = client.get("/v1/estimates?limit=1").json()["items"][0]
    assert estimate["request"]["model"] == {"path": tiny_ui_model}
    for method in ("full", "lora", "qlora"):
        card = page.locator(f"#methods .card[data-method={method}]")
        result = estimate["results"][method]
        # What the page shows is the API's answer, in GiB and dollars with the interval.
        assert f"{result['memory']['per_gpu_bytes'] / 2**30:.2f} GiB" in card.inner_text()
        low, high = result["cost_usd_range"]["low"], result["cost_usd_range"]["high"]
        assert f"{low:.4f}" in card.locator(".cost").inner_text()
        assert f"{high:.4f}" in card.locator(".cost").inner_text()
        assert card.locator(".membar span").count() == 7 and card.locator(".membar .cap").count()
        assert ("fits" in card.inner_text()) == result["fits"]
    reasons = estimate["recommendation"]["reasons"]
    assert reasons and reasons[0] in page.inner_text("#recommendation")

    page.select_option("#job-method", "lora")
    page.fill("#job-steps", "4")
    page.fill("#job-budget", "5")
    page.fill("#job-tags", f"project={TAG}")
    page.click("#submit-job")
    page.wait_for_selector("#view-jobs:not([hidden])")

    with live_api.client(keys["read"]) as client:
        job = client.get(f"/v1/jobs?tag.project={TAG}").json()["items"][0]
    assert job["estimate_id"] == estimate["id"] and job["method"] == "lora"
    assert job["max_steps"] == 4 and job["max_cost_usd"] == 5
    row = page.locator(f"#jobs-table tr[data-job='{job['id']}']")
    row.wait_for()
    page.wait_for_selector(
        f"#jobs-table tr[data-job='{job['id']}'][data-status=succeeded]", timeout=JOB_TIMEOUT_MS
    )
    assert "100%" in row.locator(".progress").inner_text()
    assert re.fullmatch(r"\d+", row.locator(".tps").inner_text())
    assert row.locator(".spent").inner_text().endswith("/ $5.00")


def test_the_plan_view_tells_one_story_against_the_gpus_memory(
    page: Any, keys: dict[str, str], live_api: LiveApi
) -> None:
    """70B on H100s under a $1 budget: every method fits but costs more, so no card says
    `fits`; each memory bar is drawn against the H100's memory (not the estimate's high bound);
    the stale-price notes are a list naming only the offers the results are priced at."""
    log_in(page, keys["read"])
    page.select_option("#model-catalog", "meta-llama/Llama-3.1-70B")
    page.fill("#ds-examples", "50000")
    page.fill("#ds-avg", "300")
    page.fill("#ds-max", "2048")
    page.select_option("#hw-gpu", "H100-80GB-SXM")
    page.fill("#budget", "1")
    page.click("#estimate-btn")
    page.wait_for_selector("#plan-result:not([hidden])", timeout=120_000)
    with live_api.client(keys["read"]) as client:
        estimate = client.get("/v1/estimates?limit=1").json()["items"][0]
    assert estimate["request"]["budget_usd"] == 1
    h100 = 79.6 * 2**30
    for method, result in estimate["results"].items():
        assert result["fits"] and result["over_budget"], method
        card = page.locator(f"#methods .card[data-method={method}]")
        assert card.locator(".badge").inner_text() == "over budget"
        assert card.locator(".badge.fits").count() == 0
        bar = card.locator(".membar")
        capacity = int(bar.get_attribute("data-capacity-bytes") or 0)
        assert capacity == result["gpu_memory_bytes"] == int(h100)
        assert card.locator(".memory").inner_text().endswith(f"of {h100 / 2**30:.2f} GiB")
        # the GPU's mark sits at the end of the bar: the peak is drawn to the GPU's scale
        assert int(bar.get_attribute("data-scale-bytes") or 0) == capacity
        mark = bar.locator(".cap").get_attribute("style") or ""
        assert "left: 100%" in mark
        levers = [lever["lever"] for lever in result["training"]["levers"]]
        assert levers == [li.get_attribute("data-lever") for li in card.locator(".levers li").all()]
    assert page.locator("#recommendation h3").inner_text() == "No method to recommend"
    assert estimate["recommendation"]["method"] is None
    notes = page.locator("#recommendation ul.est-notes li")
    stale = [n for n in estimate["notes"] if n.startswith("stale price")]
    assert stale and notes.count() == len(estimate["notes"])
    used = {r["provider"] for r in estimate["results"].values()}
    shown = [n for n in notes.all_inner_texts() if n.startswith("stale price")]
    assert sorted(n.split()[2] for n in shown) == sorted(used)  # one line per provider used
    for note in shown:
        offers = {
            f"{r['gpu']} {r['pricing']}"
            for r in estimate["results"].values()
            if r["provider"] == note.split()[2]
        }
        assert all(offer in note for offer in offers)
        assert "A100" not in note and "MI300X" not in note  # alternatives are not used


def test_jobs_view_follows_a_running_job_and_cancels_it(
    page: Any,
    keys: dict[str, str],
    live_api: LiveApi,
    cpu_worker: WorkerProcess,
    tiny_ui_model: str,
    dataset_id: str,
) -> None:
    long_run = {"seq_len": 64, "micro_batch_size": 2, "precision": "fp32", "epochs": 1000}
    job = _api_job(
        live_api,
        keys,
        _job_body(tiny_ui_model, dataset_id, method="lora", training=long_run, max_steps=None),
    )
    log_in(page, keys["submit"])
    page.click("#tabs [data-view=jobs]")
    row = page.locator(f"#jobs-table tr[data-job='{job['id']}']")

    # Live figures: a percent, tokens/s and an ETA once two progress events are in. Waiting in
    # the browser (not time.sleep) keeps playwright serving the page's requests meanwhile.
    page.wait_for_function(
        """id => {
          const row = document.querySelector(`#jobs-table tr[data-job='${id}']`);
          return row && row.dataset.status === "running"
            && row.querySelector(".eta").textContent !== "-"
            && row.querySelector(".tps").textContent !== "-";
        }""",
        arg=job["id"],
        timeout=JOB_TIMEOUT_MS,
    )
    assert re.search(r"\d+%", row.locator(".progress").inner_text())
    assert re.fullmatch(r"\d+[hms]( \d+[ms])?", row.locator(".eta").inner_text())
    assert row.locator(".spent").inner_text().startswith("$")
    row.locator("button.cancel").click()
    page.wait_for_selector(
        f"#jobs-table tr[data-job='{job['id']}'][data-status=cancelled]", timeout=60_000
    )
    assert row.locator("td.id").inner_text() == job["id"]  # whole, as the CLI takes it

    # "find" takes a unique start of an id, as the CLI does; a miss is the API's own words.
    page.fill("#job-find-id", job["id"][:12])
    page.click("#job-find button[type=submit]")
    page.wait_for_function("() => document.querySelectorAll('#jobs-table tbody tr').length === 1")
    assert page.locator("#jobs-table tbody tr").get_attribute("data-job") == job["id"]
    page.fill("#job-find-id", "job_ffffffffffff")
    page.click("#job-find button[type=submit]")
    page.wait_for_selector("#jobs-error:has-text('no job with id')")
    assert page.locator("#jobs-table tbody tr").count() == 0
    page.click("#job-find-clear")
    page.wait_for_selector(f"#jobs-table tr[data-job='{job['id']}']")


def test_reports_show_finished_jobs_against_their_estimates(
    page: Any,
    keys: dict[str, str],
    live_api: LiveApi,
    cpu_worker: WorkerProcess,
    tiny_ui_model: str,
    dataset_id: str,
) -> None:
    with live_api.client(keys["read"]) as client:
        finished = client.get("/v1/jobs?status=succeeded&limit=100").json()["items"]
    assert finished, "the plan submitted from the page should have finished"
    log_in(page, keys["read"])
    page.click("#tabs [data-view=reports]")
    page.wait_for_selector("#view-reports[data-ready=true]")
    assert page.inner_text("#reports-error") == ""
    assert page.get_attribute("#scatter", "data-points") == str(len(finished))
    assert int(page.get_attribute("#spend", "data-rows") or 0) >= 1
    lora = page.locator("#eva-table tr[data-group=lora]")
    assert lora.count() == 1 and "%" in lora.inner_text()

    page.select_option("#scatter-quantity", "hours")
    assert page.get_attribute("#scatter", "data-points") == str(len(finished))
    with page.expect_download() as info:
        page.click("button.download[data-file='focus.csv']")
    rows = list(csv.DictReader(io.StringIO(Path(info.value.path()).read_text())))
    assert {r["ResourceId"] for r in rows} >= {j["id"] for j in finished}


def test_docs_work_offline(page: Any, offline: Offline) -> None:
    page.goto("/docs")
    page.wait_for_selector('.opblock-summary-path[data-path="/v1/estimates"]')
    assert page.locator(".opblock").count() > 20
    assert offline.blocked == []


def test_the_network_guard_sees_a_request_elsewhere(page: Any, offline: Offline) -> None:
    # What makes "nothing blocked" above mean something: a CDN request is caught and failed.
    # From a blank page: on the console's own pages the Content-Security-Policy refuses it
    # before it reaches the network (tests/ui/test_security_headers.py).
    page.set_content("<p>no policy here</p>")
    failed = page.evaluate(
        "fetch('https://cdn.jsdelivr.net/npm/chart.js').then(() => false, () => true)"
    )
    assert failed and offline.blocked == ["https://cdn.jsdelivr.net/npm/chart.js"]
    offline.blocked.clear()  # expected here; the page fixture checks the list is empty
