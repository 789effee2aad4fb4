"""The console's Budgets and Webhooks views in headless Chromium against a live API.

Budgets: a team budget with a queued job shows its burn (committed against the amount) and the
period's forecast, and an admin adds one from the page. Webhooks: a submit key subscribes from
the page and sees the secret once, then the delivery log with every attempt, and pings.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from app.db import session_scope
from app.models import DeliveryStatus, WebhookAttempt, WebhookDelivery
from app.models.base import new_id, utcnow
from devtools.tinymodel import make_tiny_dataset
from tests.live_api import LiveApi
from tests.ui.conftest import log_in

pytestmark = pytest.mark.slow
IDLE_GPU = {"gpu": "RTX-A6000", "provider": "runpod"}  # no test worker serves it: jobs stay queued


def _usd(x: float) -> str:
    """The console's dollar format (api.js usd)."""
    return f"${x:.4f}" if x < 1 else f"${x:.2f}"


@pytest.fixture(scope="module")
def queued(
    live_api: LiveApi,
    keys: dict[str, str],
    tiny_ui_model: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Any]]:
    """A budget of team ml's jobs tagged project=<unique>, four times one queued job's estimate."""
    project = f"ui-budget-{uuid.uuid4().hex[:6]}"
    path = make_tiny_dataset(tmp_path_factory.mktemp("ui-b") / "b.jsonl", n=60, fmt="text")
    with live_api.client(keys["submit"]) as client, path.open("rb") as fh:
        files = {"file": ("b.jsonl", fh)}
        ds = client.post("/v1/datasets", files=files, data={"model_path": tiny_ui_model})
        assert ds.status_code == 201, ds.text
        est = client.post(
            "/v1/estimates",
            json={
                "model": {"path": tiny_ui_model},
                "dataset": {"dataset_id": ds.json()["id"]},
                "training": {"seq_len": 64, "micro_batch_size": 2, "precision": "fp32"},
                "hardware": IDLE_GPU,
            },
        )
        assert est.status_code == 201, est.text
        cost = est.json()["results"]["lora"]["cost_usd"]
    with live_api.client(keys["admin"]) as admin:
        budget = admin.post(
            "/v1/budgets",
            json={
                "name": f"ui {project}",
                "amount_usd": cost * 4,
                "team": "ml",
                "tag_key": "project",
                "tag_value": project,
                "action": "refuse",
            },
        )
        assert budget.status_code == 201, budget.text
    with live_api.client(keys["submit"]) as client:
        job = client.post(
            "/v1/jobs",
            json={"estimate_id": est.json()["id"], "method": "lora", "tags": {"project": project}},
        )
        assert job.status_code == 201, job.text
    with live_api.client(keys["read"]) as client:
        got = client.get(f"/v1/budgets/{budget.json()['id']}").json()
    yield {"budget": got, "cost": cost, "project": project}
    with live_api.client(keys["submit"]) as client:
        client.post(f"/v1/jobs/{job.json()['id']}/cancel")


def test_budgets_show_burn_and_forecast(
    page: Any, keys: dict[str, str], queued: dict[str, Any]
) -> None:
    budget, cost = queued["budget"], queued["cost"]
    log_in(page, keys["read"])
    page.click("#tabs [data-view=budgets]")
    page.wait_for_selector("#view-budgets[data-ready=true]")
    assert page.inner_text("#budgets-error") == ""
    card = page.locator(f"[data-budget='{budget['id']}']")
    assert "refuses new jobs at 100%" in card.inner_text()
    assert card.locator(".used").inner_text() == f"25.0% of {_usd(cost * 4)}"
    assert card.locator("dd.committed").inner_text().startswith(_usd(cost))
    assert card.locator(".left").inner_text() == _usd(cost * 3)
    # 25% of the amount: none of the default thresholds (50, 80, 100%) is crossed yet.
    assert card.locator(".alerts").inner_text() == "none yet"
    width = card.locator(".burnbar .seg-committed").evaluate("el => el.style.width")
    assert float(width.rstrip("%")) == pytest.approx(25.0)
    assert page.locator("#budget-form").is_hidden()  # a read key adds no budget
    total = page.locator("#forecast-table tr[data-group=all]")
    assert total.count() == 1 and "$" in total.locator(".projected").inner_text()


def test_an_admin_adds_a_budget_from_the_page(
    page: Any, keys: dict[str, str], live_api: LiveApi
) -> None:
    name = f"page budget {uuid.uuid4().hex[:6]}"
    log_in(page, keys["admin"])
    page.click("#tabs [data-view=budgets]")
    page.wait_for_selector("#view-budgets[data-ready=true]")
    page.fill("#budget-name", name)
    page.fill("#budget-amount", "250")
    page.fill("#budget-team", "ml")
    page.fill("#budget-tag", "project=from-the-page")
    page.select_option("#budget-action", "refuse")
    page.click("#budget-create")
    page.wait_for_selector(f"#budgets-list .budget:has-text('{name}')")
    with live_api.client(keys["read"]) as client:
        made = [b for b in client.get("/v1/budgets").json()["items"] if b["name"] == name]
    assert len(made) == 1 and made[0]["action"] == "refuse"
    assert (made[0]["tag_key"], made[0]["tag_value"], made[0]["amount_usd"]) == (
        "project",
        "from-the-page",
        250,
    )


def _seed_log(subscription_id: str) -> str:
    """A delivery that failed once (500) and went through on its second attempt."""
    now = utcnow()
    with session_scope() as session:
        row = WebhookDelivery(
            id=new_id("whd"),
            subscription_id=subscription_id,
            event_id=new_id("evt"),
            event_type="job.succeeded",
            body="{}",
            status=DeliveryStatus.SUCCEEDED,
            attempts=2,
            created_at=now - timedelta(minutes=2),
            delivered_at=now,
        )
        session.add(row)
        session.flush()
        for n, code in ((1, 500), (2, 200)):
            session.add(
                WebhookAttempt(
                    delivery_id=row.id,
                    attempt=n,
                    started_at=now - timedelta(minutes=2 - n),
                    duration_ms=12.0,
                    status_code=code,
                    error="HTTP 500" if code == 500 else None,
                )
            )
        return row.id


def test_webhooks_subscribe_show_the_secret_once_and_the_delivery_log(
    page: Any, keys: dict[str, str], live_api: LiveApi
) -> None:
    url = f"https://93.184.215.14/ui-{uuid.uuid4().hex[:6]}"
    log_in(page, keys["submit"])
    page.click("#tabs [data-view=webhooks]")
    page.wait_for_selector("#view-webhooks[data-ready=true]")
    page.fill("#webhook-url", url)
    page.check("#webhook-form input[value='calibration.updated']")
    page.click("#webhook-create")
    page.wait_for_selector("#webhook-secret:not([hidden])")
    secret = page.inner_text("#webhook-secret-value")
    assert secret.startswith("whsec_")
    row = page.locator(f"#webhooks-table tr:has-text('{url}')")
    row.wait_for()
    sub_id = row.get_attribute("data-subscription")
    assert sub_id and secret[:10] in row.inner_text() and secret not in row.inner_text()
    with live_api.client(keys["read"]) as client:
        sub = client.get(f"/v1/webhooks/{sub_id}").json()
    assert "calibration.updated" in sub["events"] and "job.succeeded" in sub["events"]

    delivered = _seed_log(sub_id)
    row.locator("button.log").click()
    page.wait_for_selector(f"#deliveries[data-ready='{sub_id}']")
    logged = page.locator(f"#deliveries-table tr[data-delivery='{delivered}']")
    assert logged.get_attribute("data-status") == "succeeded"
    assert logged.locator(".attempts").inner_text() == "#1 500 (12 ms), #2 200 (12 ms)"

    row.locator("button.ping").click()
    page.wait_for_selector("#deliveries-table tr:has-text('webhook.ping')")
    assert page.locator("#deliveries-table tbody tr").count() == 2

    # A read key sees the log, but neither subscribes nor pings nor redelivers.
    page.click("#logout")
    log_in(page, keys["read"])
    page.click("#tabs [data-view=webhooks]")
    page.wait_for_selector("#view-webhooks[data-ready=true]")
    assert page.locator("#webhook-form").is_hidden()
    listed = page.locator(f"#webhooks-table tr[data-subscription='{sub_id}']")
    assert listed.count() == 1 and listed.locator("button.ping").count() == 0
