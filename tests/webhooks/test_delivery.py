"""Webhooks delivered by a real control worker to a real HTTP receiver in the test.

Signed events arrive and verify with the subscription's secret (and fail with any other); a 500
is retried with exponential backoff (1 s, then 2 s here) until the receiver takes it; after the
last attempt the delivery fails, and a redelivery sends the same event again. Job and budget
events come from where they happen: a job cancelled, a job finished through the lifecycle, a
submit that takes a budget past a threshold.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from app.db import session_scope
from app.jobs import lifecycle
from app.models import DeliveryStatus, Job, JobAttempt, JobStatus, WebhookDelivery, WorkerNode
from app.models.base import new_id, utcnow
from app.webhooks import delivery, secrets, signing
from tests.budgets.budgets_support import budget_body, estimate, job_body, unique
from tests.conftest import auth
from tests.jobs.conftest import dataset_id, tiny_model  # noqa: F401 (fixtures)
from tests.reports.factory import make_job
from tests.support import WorkerProcess, wait_for
from tests.webhooks.receiver import Received, Receiver, receiver

pytestmark = pytest.mark.slow
URL = "/v1/webhooks"
SETTLE_S = 60  # a delivery is a message through Redis to the control worker and one POST


@pytest.fixture
def recv(control_worker: WorkerProcess, dev_targets: None) -> Iterator[Receiver]:
    with receiver() as r:
        yield r


def _subscribe(client: Any, keys: dict[str, str], url: str, events: list[str]) -> dict[str, Any]:
    resp = client.post(URL, json={"url": url, "events": events}, headers=auth(keys["submit"]))
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def _delivery(client: Any, keys: dict[str, str], sub: dict[str, Any], delivery_id: str) -> Any:
    path = f"{URL}/{sub['id']}/deliveries/{delivery_id}"
    resp = client.get(path, headers=auth(keys["read"]))
    assert resp.status_code == 200, resp.text
    return resp.json()


def _settled(client: Any, keys: dict[str, str], sub: dict[str, Any], delivery_id: str) -> Any:
    def done() -> Any:
        got = _delivery(client, keys, sub, delivery_id)
        return got if got["status"] != "pending" else None

    return wait_for(done, timeout=SETTLE_S, what=f"delivery {delivery_id} to settle")


def _verified(secret: str, request: Received) -> dict[str, Any]:
    signing.verify(secret, request.headers.get(signing.SIGNATURE_HEADER), request.body)
    return dict(json.loads(request.body))


def test_a_ping_arrives_signed_and_a_bad_signature_is_detected(
    app_client: Any, keys: dict[str, str], recv: Receiver
) -> None:
    sub = _subscribe(app_client, keys, recv.url + "/ping", ["job.failed"])
    ping = app_client.post(f"{URL}/{sub['id']}/ping", headers=auth(keys["submit"]))
    assert ping.status_code == 201, ping.text
    (request,) = wait_for(lambda: recv.at("/ping"), timeout=SETTLE_S, what="the ping")
    event = _verified(sub["secret"], request)
    assert event["type"] == "webhook.ping" and event["id"] == ping.json()["event_id"]
    assert event["data"]["subscription_id"] == sub["id"] and event["team"] == "ml"
    assert request.headers["Tunecost-Event"] == "webhook.ping"
    assert request.headers["Tunecost-Delivery"] == ping.json()["id"]
    assert request.headers["Content-Type"] == "application/json"
    # Signed with another secret, or with the body changed, the check fails.
    with pytest.raises(signing.BadSignature):
        signing.verify(secrets.new_secret(), request.headers["Tunecost-Signature"], request.body)
    with pytest.raises(signing.BadSignature):
        forged = request.body.replace(b"webhook.ping", b"job.succeeded")
        signing.verify(sub["secret"], request.headers["Tunecost-Signature"], forged)
    done = _settled(app_client, keys, sub, ping.json()["id"])
    assert done["status"] == "succeeded" and done["attempts"] == 1
    assert done["attempt_log"][0]["status_code"] == 200
    assert done["payload"] == event


def test_a_500_is_retried_with_exponential_backoff(
    app_client: Any, keys: dict[str, str], recv: Receiver
) -> None:
    recv.answer("/flaky", 500, 500)
    sub = _subscribe(app_client, keys, recv.url + "/flaky", ["job.failed"])
    ping = app_client.post(f"{URL}/{sub['id']}/ping", headers=auth(keys["submit"])).json()
    done = _settled(app_client, keys, sub, ping["id"])
    assert done["status"] == "succeeded", done
    assert [a["status_code"] for a in done["attempt_log"]] == [500, 500, 200]
    assert done["attempt_log"][0]["error"] == "HTTP 500"
    requests = recv.at("/flaky")
    assert len(requests) == 3
    # Waits of base x 2^(n-1): 1 s after the first failure, 2 s after the second.
    gaps = [b.at - a.at for a, b in itertools.pairwise(requests)]
    assert gaps[0] >= 1.0 and gaps[1] >= 2.0, gaps
    # Every attempt carries the same body, signed anew (with its own timestamp).
    assert len({r.body for r in requests}) == 1
    for request in requests:
        _verified(sub["secret"], request)
    assert [r.headers["Tunecost-Attempt"] for r in requests] == ["1", "2", "3"]


def test_the_last_failure_fails_the_delivery_and_a_redelivery_sends_it_again(
    app_client: Any, keys: dict[str, str], recv: Receiver
) -> None:
    recv.answer("/down", 503, 503, 503)
    sub = _subscribe(app_client, keys, recv.url + "/down", ["job.failed"])
    ping = app_client.post(f"{URL}/{sub['id']}/ping", headers=auth(keys["submit"])).json()
    failed = _settled(app_client, keys, sub, ping["id"])
    assert failed["status"] == "failed" and failed["attempts"] == 3  # the configured maximum
    assert failed["last_status_code"] == 503 and failed["next_attempt_at"] is None
    again = app_client.post(
        f"{URL}/{sub['id']}/deliveries/{ping['id']}/redeliver", headers=auth(keys["submit"])
    )
    assert again.status_code == 201, again.text
    redelivered = again.json()
    assert redelivered["redelivery_of"] == ping["id"]
    assert redelivered["event_id"] == ping["event_id"] and redelivered["id"] != ping["id"]
    done = _settled(app_client, keys, sub, redelivered["id"])
    assert done["status"] == "succeeded"
    requests = recv.at("/down")
    assert len(requests) == 4 and requests[3].body == requests[0].body
    log = app_client.get(f"{URL}/{sub['id']}/deliveries", headers=auth(keys["read"])).json()
    assert [d["id"] for d in log["items"]] == [redelivered["id"], ping["id"]]  # newest first


@pytest.fixture
def priced(app_client: Any, keys: dict[str, str], dataset_id: str) -> tuple[str, float]:  # noqa: F811
    return estimate(app_client, keys["submit"], dataset_id)


def _running_job(project: str) -> str:
    """A job claimed by a worker that is about to finish (no training needed for the hook)."""
    with session_scope() as session:
        job = make_job(session, tags={"project": project})
        job.status, job.finished_at, job.attempts = JobStatus.RUNNING, None, 1
        job.errors = None
        now = utcnow()
        session.add(
            JobAttempt(
                job_id=job.id,
                attempt=1,
                worker="w",
                started_at=now - timedelta(minutes=5),
                last_seen_at=now,
                outcome="running",
            )
        )
        return job.id


def test_job_and_budget_events_come_from_where_they_happen(
    app_client: Any, keys: dict[str, str], recv: Receiver, priced: tuple[str, float]
) -> None:
    estimate_id, cost = priced
    project = unique("events")
    events = ["job.cancelled", "job.succeeded", "calibration.updated", "budget.threshold_crossed"]
    sub = _subscribe(app_client, keys, recv.url + "/events", events)
    made = app_client.post(
        "/v1/budgets",
        json=budget_body(project, cost * 4, thresholds_pct=[20]),
        headers=auth(keys["admin"]),
    )
    assert made.status_code == 201, made.text
    job = app_client.post(
        "/v1/jobs", json=job_body(estimate_id, project), headers=auth(keys["submit"])
    ).json()
    cancelled = app_client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth(keys["submit"]))
    assert cancelled.status_code == 200
    finished_id = _running_job(project)
    with session_scope() as session:
        row = session.get(Job, finished_id, with_for_update=True)
        assert row is not None
        lifecycle.finish(session, row, attempt=1, status=JobStatus.SUCCEEDED, detail="finished")

    def all_four() -> list[Received] | None:
        got = recv.at("/events")
        return got if len(got) >= 4 else None

    received = wait_for(all_four, timeout=SETTLE_S, what="four events")
    by_type = {e["type"]: e for e in (_verified(sub["secret"], r) for r in received)}
    assert set(by_type) == set(events)
    crossed = by_type["budget.threshold_crossed"]["data"]
    assert crossed["budget"]["id"] == made.json()["id"] and crossed["threshold_pct"] == 20
    assert crossed["spend_usd"] == pytest.approx(cost)
    job_event = by_type["job.cancelled"]["data"]["job"]
    assert job_event["id"] == job["id"] and job_event["status"] == "cancelled"
    assert job_event["tags"]["project"] == project
    assert by_type["job.succeeded"]["data"]["job"]["id"] == finished_id
    assert by_type["calibration.updated"]["data"]["calibration"]["job_id"] == finished_id
    assert len(recv.at("/events")) == 4  # each event once


def test_a_lost_message_is_sent_again_by_the_sweep_and_the_control_worker_runs_no_jobs(
    app_client: Any, keys: dict[str, str], recv: Receiver, control_worker: WorkerProcess
) -> None:
    sub = _subscribe(app_client, keys, recv.url + "/lost", ["job.failed"])
    with session_scope() as session:
        # A delivery whose task message never reached the broker (written, never sent).
        row = WebhookDelivery(
            id=new_id("whd"),
            subscription_id=sub["id"],
            event_id=new_id("evt"),
            event_type="job.failed",
            body='{"lost": true}',
            status=DeliveryStatus.PENDING,
            attempts=0,
            next_attempt_at=utcnow() - timedelta(minutes=10),
            created_at=utcnow() - timedelta(minutes=10),
        )
        session.add(row)
        lost_id = row.id
    assert delivery.sweep() >= 1  # what beat runs every webhook_sweep_every_s
    done = _settled(app_client, keys, sub, lost_id)
    assert done["status"] == "succeeded"
    (request,) = recv.at("/lost")
    assert request.body == b'{"lost": true}'
    _verified(sub["secret"], request)
    with session_scope() as session:
        names = session.scalars(select(WorkerNode.hostname)).all()
    assert not any(n.startswith(control_worker.hostname) for n in names)  # no device capacity
