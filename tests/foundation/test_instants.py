"""Every instant the API writes is UTC with an explicit offset: in the OpenAPI and in responses.

The app runs here on the embedded SQLite database, which hands back naive datetimes: the case
where an instant without an offset would otherwise leak out.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy.orm import Session

from app.db import make_engine
from app.kit.instants import INSTANT_PATTERN
from app.kit.migrate import upgrade_head
from app.models import (
    Budget,
    BudgetAction,
    BudgetAlert,
    BudgetPeriod,
    DeliveryStatus,
    JobAttempt,
    JobEvent,
    Scope,
    WebhookAttempt,
    WebhookDelivery,
    WebhookSubscription,
    WorkerNode,
)
from tests.conftest import auth
from tests.prices.test_importers import SAMPLES
from tests.reports.factory import make_job
from tests.support import ServiceEnv, clear_caches

LOOKS_LIKE_INSTANT = re.compile(r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d")
INSTANT = re.compile(INSTANT_PATTERN)
ESTIMATE = {
    "model": "meta-llama/Llama-2-7b-hf",
    "dataset": {"num_examples": 1000, "avg_tokens": 150, "max_tokens": 512},
    "methods": ["lora"],
    "training": {"micro_batch_size": 1, "seq_len": 512},
    "hardware": {"gpu": "A100-40GB", "num_gpus": 1},
}


@pytest.fixture(scope="module")
def sqlite_client(
    service_env: ServiceEnv, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """The real app on its own SQLite file, with every kind of timestamped row in it."""
    from fastapi.testclient import TestClient

    from app.auth import service as keys
    from app.main import create_app

    url = f"sqlite:///{tmp_path_factory.mktemp('instants') / 'tc.db'}"
    upgrade_head(url)
    os.environ["TUNECOST_DATABASE_URL"] = url
    os.environ["TUNECOST_BOOTSTRAP_ADMIN_KEY"] = "false"
    clear_caches()
    engine = make_engine(url)
    with Session(engine) as session:
        _, admin = keys.create(session, name="admin", scope=Scope.ADMIN, team=None)
        finished = datetime(2025, 3, 10, 12, tzinfo=UTC)
        for i in range(8):
            job = make_job(session, gpu="A100-80GB", finished_at=finished + timedelta(hours=i))
            job.heartbeat_at = job.finished_at
            job.cancel_requested_at = job.finished_at
            session.add(JobEvent(job_id=job.id, created_at=job.finished_at, kind="status"))
            session.add(
                JobAttempt(
                    job_id=job.id,
                    attempt=1,
                    worker="w",
                    started_at=finished + timedelta(hours=i, minutes=-5),
                    last_seen_at=job.finished_at,
                    outcome="succeeded",
                    gpu_hours=job.act_gpu_hours,
                    cost_usd=job.act_cost_usd,
                )
            )
        # A live worker (its heartbeat is now): /v1/health lists it with its last_seen_at.
        session.add(
            WorkerNode(
                hostname="instants@host",
                gpu="cpu",
                queue="gpu.cpu",
                device_name="cpu",
                device_count=1,
                devices_free=1,
                pid=1,
            )
        )
        # A custom budget over those jobs, with a threshold it crossed.
        session.add(
            Budget(
                id="bud_instants",
                team="ml",
                name="instants",
                tag_key="team",
                tag_value="ml",
                period=BudgetPeriod.CUSTOM,
                starts_at=datetime(2025, 3, 1, tzinfo=UTC),
                ends_at=datetime(2025, 4, 1, tzinfo=UTC),
                amount_usd=10.0,
                thresholds_pct=[50.0],
                action=BudgetAction.WARN,
            )
        )
        session.flush()
        session.add(
            BudgetAlert(
                budget_id="bud_instants",
                period_start=datetime(2025, 3, 1, tzinfo=UTC),
                threshold_pct=50.0,
                crossed_at=finished,
                spend_usd=5.0,
            )
        )
        # A webhook subscription with a delivery that failed once, then went through.
        session.add(
            WebhookSubscription(
                id="whk_instants",
                team=None,
                created_by_key_id=None,
                url="https://93.184.215.14/hook",
                events=["job.failed"],
                secret_sealed="sealed",
                secret_hint="whsec_abcd",
                active=True,
            )
        )
        session.flush()
        session.add(
            WebhookDelivery(
                id="whd_instants",
                subscription_id="whk_instants",
                event_id="evt_instants",
                event_type="job.failed",
                body="{}",
                status=DeliveryStatus.SUCCEEDED,
                attempts=2,
                next_attempt_at=finished,
                created_at=finished,
                delivered_at=finished,
            )
        )
        session.flush()
        session.add(
            WebhookAttempt(
                delivery_id="whd_instants",
                attempt=1,
                started_at=finished,
                duration_ms=5.0,
                status_code=500,
            )
        )
        session.commit()
    engine.dispose()
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        client.headers.update(auth(admin))
        yield client
    os.environ["TUNECOST_DATABASE_URL"] = service_env.database_url
    os.environ.pop("TUNECOST_BOOTSTRAP_ADMIN_KEY", None)
    clear_caches()


def _responses(client: Any) -> list[tuple[str, Any]]:
    """(route, JSON body) of a real call to every route that returns instants."""
    created = client.post(
        "/v1/keys", json={"name": "x", "scope": "read", "expires_in_days": 1}
    ).json()
    client.post(f"/v1/keys/{created['id']}/revoke")
    client.get("/v1/keys")  # the admin key now has a last_used_at
    files = {"file": ("d.jsonl", io.BytesIO(b'{"text": "a b c"}\n' * 5), "application/jsonl")}
    dataset = client.post("/v1/datasets", files=files).json()
    estimate = client.post("/v1/estimates", json=ESTIMATE).json()
    price = client.put("/v1/catalog/prices/aws/A100-40GB", json={"usd_per_gpu_hour": 3.0}).json()
    lambda_list = json.loads((SAMPLES / "lambda_instance_types.json").read_text())
    imported = client.post(
        "/v1/catalog/price-imports", params={"source": "sample"}, json=lambda_list
    ).json()
    jobs = client.get("/v1/jobs", params={"limit": 100}).json()
    job_id = jobs["items"][0]["id"]
    out = [
        ("POST /v1/keys", created),
        ("GET /v1/keys", client.get("/v1/keys").json()),
        ("POST /v1/datasets", dataset),
        ("GET /v1/datasets", client.get("/v1/datasets").json()),
        ("POST /v1/estimates", estimate),
        ("GET /v1/estimates", client.get("/v1/estimates").json()),
        ("PUT /v1/catalog/prices", price),
        ("GET /v1/catalog/prices", client.get("/v1/catalog/prices").json()),
        ("POST /v1/catalog/price-imports", imported),
        ("GET /v1/catalog/price-imports", client.get("/v1/catalog/price-imports").json()),
        ("GET /v1/jobs", jobs),
        ("GET /v1/jobs/{id}", client.get(f"/v1/jobs/{job_id}").json()),
        ("GET /v1/jobs/{id}/events", client.get(f"/v1/jobs/{job_id}/events").json()),
        ("GET /v1/calibration", client.get("/v1/calibration").json()),
        ("GET /v1/health", client.get("/v1/health").json()),
        (
            "GET /v1/calibration/evaluation",
            client.get("/v1/calibration/evaluation", params={"include_jobs": "true"}).json(),
        ),
        ("GET /v1/budgets", client.get("/v1/budgets").json()),
        ("GET /v1/webhooks", client.get("/v1/webhooks").json()),
        (
            "GET /v1/webhooks/{id}/deliveries",
            client.get("/v1/webhooks/whk_instants/deliveries").json(),
        ),
    ]
    window = {"from": "2025-03-01T00:00:00+02:00", "to": "2025-04-01"}
    for report in ("estimate-vs-actual", "spend"):
        out.append((report, client.get(f"/v1/reports/{report}", params=window).json()))
    forecast = client.get("/v1/reports/forecast", params={**window, "period": "custom"})
    out.append(("forecast", forecast.json()))
    focus = client.get("/v1/reports/focus", params={**window, "format": "json"})
    out.append(("focus", json.loads(focus.text)))
    return out


def _walk(value: Any, path: str = "") -> Iterator[tuple[str, str, Any]]:
    """(path, key, value) of every leaf of a JSON document."""
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, dict | list):
                yield from _walk(item, f"{path}.{key}")
            else:
                yield path, key, item
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item, f"{path}[]")


def _deref(spec: dict[str, Any], node: Any) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(schema name, property, property schema) of every property reachable from `node`."""
    seen: set[str] = set()
    stack = [("", node)]
    while stack:
        name, item = stack.pop()
        if isinstance(item, dict):
            ref = item.get("$ref")
            if isinstance(ref, str):
                target = ref.rsplit("/", 1)[-1]
                if target not in seen:
                    seen.add(target)
                    stack.append((target, spec["components"]["schemas"][target]))
                continue
            for prop, sub in (item.get("properties") or {}).items():
                yield name, prop, sub
            stack.extend((name, v) for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            stack.extend((name, v) for v in item)


def _instant_properties(spec: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """Every date-time property of every response body in the OpenAPI document."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path_item in spec["paths"].values():
        for operation in path_item.values():
            for response in operation.get("responses", {}).values():
                for schema_name, prop, sub in _deref(spec, response.get("content", {})):
                    options = sub.get("anyOf", [sub])
                    for option in options:
                        if option.get("format") == "date-time":
                            found[(schema_name, prop)] = option
    return found


def test_every_instant_in_the_openapi_responses_is_utc_with_z(sqlite_client: Any) -> None:
    props = _instant_properties(sqlite_client.get("/openapi.json").json())
    assert {p for _, p in props} >= {"created_at", "started_at", "finished_at", "set_at"}
    for where, schema in props.items():
        assert schema.get("pattern") == INSTANT_PATTERN, where


def test_every_instant_in_real_responses_has_an_offset(sqlite_client: Any) -> None:
    props = _instant_properties(sqlite_client.get("/openapi.json").json())
    instant_names = {p for _, p in props}
    seen: set[str] = set()
    for route, body in _responses(sqlite_client):
        for path, key, value in _walk(body):
            if isinstance(value, str) and LOOKS_LIKE_INSTANT.match(value):
                assert INSTANT.match(value), f"{route} {path}.{key} = {value!r}"
                seen.add(key)
    # Each date-time property of the schema was seen filled in at least once.
    assert instant_names <= seen | {"ChargePeriodStart"}, instant_names - seen


def test_naive_and_offset_values_are_written_in_utc() -> None:
    from pydantic import TypeAdapter

    from app.kit.instants import UtcInstant

    adapter = TypeAdapter(UtcInstant)
    naive = datetime(2025, 1, 2, 3, 4, 5)
    plus_two = datetime(2025, 1, 2, 6, 4, 5, 250000, tzinfo=timezone(timedelta(hours=2)))
    assert adapter.dump_json(adapter.validate_python(naive)) == b'"2025-01-02T03:04:05Z"'
    assert adapter.dump_json(adapter.validate_python(plus_two)) == b'"2025-01-02T04:04:05.250000Z"'
