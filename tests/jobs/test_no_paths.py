"""No absolute server path reaches a client: datasets, job specs, errors, events, artifacts."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import update

from app.db import session_scope
from app.jobs.lifecycle import add_event
from app.models import Job
from tests.conftest import auth
from tests.jobs.conftest import TINY_NAME
from tests.jobs.jobs_support import IDLE_HARDWARE, submit
from tests.support import ServiceEnv
from worker.jobs import _strip_server_paths

# The checkout's own folder stands for any server-side source path.
CHECKOUT = str(Path(__file__).resolve().parents[2])


def _server_paths(env: ServiceEnv) -> list[str]:
    return [str(env.storage_root), str(env.model_root), CHECKOUT, "site-packages"]


def test_datasets_jobs_errors_and_events_carry_no_server_path(
    app_client: Any,
    keys: dict[str, str],
    dataset_id: str,
    job_body: Callable[..., dict[str, Any]],
    service_env: ServiceEnv,
) -> None:
    read = auth(keys["read"])
    dataset = app_client.get(f"/v1/datasets/{dataset_id}", headers=read)
    assert dataset.json()["storage_path"] == f"datasets/{dataset_id}/data.jsonl"

    job = submit(app_client, keys, job_body(hardware=IDLE_HARDWARE))
    dataset_file = service_env.storage_root / "datasets" / dataset_id / "data.jsonl"
    leak = (
        f"the dataset file file://{dataset_file} is missing; Traceback: "
        f"{CHECKOUT}/.venv/lib/python3.11/site-packages/torch/nn/modules/module.py line 3"
    )
    with session_scope() as session:
        session.execute(
            update(Job).where(Job.id == job["id"]).values(error=leak, status_detail=leak)
        )
        add_event(session, job_id=job["id"], kind="status", message=leak)
    seen = app_client.get(f"/v1/jobs/{job['id']}", headers=read)
    events = app_client.get(f"/v1/jobs/{job['id']}/events", headers=read)
    listed = app_client.get("/v1/jobs", headers=read)
    for response in (dataset, seen, events, listed):
        assert response.status_code == 200, response.text
        for path in _server_paths(service_env):
            assert path not in response.text, (path, response.url)
    body = seen.json()
    assert body["spec"]["model"]["path"] == TINY_NAME
    assert f"<storage>/datasets/{dataset_id}/data.jsonl" in body["error"]
    assert "…/module.py" in body["error"]


def test_the_artifacts_adapter_config_names_the_model_relative_to_its_root(
    tmp_path: Path, service_env: ServiceEnv
) -> None:
    folder = tmp_path / "artifact"
    folder.mkdir()
    config = {"base_model_name_or_path": str(service_env.model_root / TINY_NAME), "r": 4}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    _strip_server_paths(folder)
    written = json.loads((folder / "adapter_config.json").read_text())
    assert written == {"base_model_name_or_path": TINY_NAME, "r": 4}
