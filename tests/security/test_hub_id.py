"""Finding 4: `hub_id` is a Hugging Face repo id, never a path, and the worker loads it only from
its hub cache — refused at submit on a real server, and trained from the cache by a real worker."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from devtools.tinymodel import make_tiny_dataset, make_tiny_model
from tests.conftest import auth
from tests.jobs.jobs_support import JOB_TIMEOUT_S
from tests.live_api import LiveApi
from tests.support import ServiceEnv, start_worker, wait_for
from worker.training.errors import ModelLoadError
from worker.training.model import resolve_model_source
from worker.training.spec import Launch, parse_launch

QUEUE_GPU = "H100-80GB-PCIe"  # a queue of its own: no other test submits to or serves it
REPO = "tunecost-test/tiny-llama"
# A catalog model (so the service can estimate it), laid out in the worker's hub cache with a
# tiny model's weights under its name: the job trains whatever that cache holds for the id.
CATALOG_REPO = "TinyLlama/TinyLlama-1.1B-Chat-v1.0"
TRAINING = {"seq_len": 64, "micro_batch_size": 2, "precision": "fp32", "optimizer": "adamw"}
PATHS = [
    "../outside",  # the attack: the worker loaded the folder beside its working directory
    "../../outside",
    "/abs/model",
    "./a/b",
    "owner/..",
    "owner/.",
    "owner/../x",
    "owner/.hidden",
    "a/b/c",
    "owner--x/name",  # '--' separates the parts of the hub cache's folder names
]


def cache_model(cache: Path, repo_id: str, folder: Path) -> Path:
    """Lay `folder` out in a Hugging Face hub cache as the snapshot of `repo_id` at `main`."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    revision = uuid.uuid4().hex + "0" * 8
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    snapshot = repo / "snapshots" / revision
    shutil.copytree(folder, snapshot)
    return snapshot


@pytest.mark.parametrize("hub_id", PATHS)
def test_a_hub_id_that_names_a_path_is_refused_at_submit(
    live_api: LiveApi, keys: dict[str, str], hub_id: str
) -> None:
    body = {"method": "lora", "model": {"hub_id": hub_id}, "dataset_id": "ds_any"}
    with live_api.client(keys["submit"]) as client:
        r = client.post("/v1/jobs", json=body)
    assert r.status_code == 422, r.text
    assert ["body", "model", "hub_id"] in [e["loc"][:3] for e in r.json()["errors"]], r.text


@pytest.fixture
def hub_launch(tmp_path: Path) -> Callable[[str], Launch]:
    data = make_tiny_dataset(tmp_path / "data.jsonl", n=8, fmt="text")

    def make(hub_id: str) -> Launch:
        spec = {"method": "lora", "model": {"hub_id": hub_id}}
        run = {"job_id": "hub", "dataset_path": str(data), "device": "cpu", "offline": True}
        return parse_launch({"spec": spec, "run": run})

    return make


def test_the_worker_never_loads_a_hub_id_as_a_folder(
    hub_launch: Callable[[str], Launch], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A model folder named like the repo, relative to the working directory: what
    # from_pretrained(hub_id) would have loaded. The answer names neither folder nor cache.
    make_tiny_model(tmp_path / "work" / REPO, vocab_size=384, hidden_size=64, layers=2)
    monkeypatch.chdir(tmp_path / "work")
    with pytest.raises(ModelLoadError) as err:
        resolve_model_source(hub_launch(REPO))
    assert str(err.value) == (
        f"model {REPO} is not in this worker's Hugging Face cache (LocalEntryNotFoundError)"
    )


def test_a_cached_hub_model_trains_from_the_cache(
    live_api: LiveApi,
    keys: dict[str, str],
    service_env: ServiceEnv,
    tmp_path: Path,
) -> None:
    folder = tmp_path / "src"
    make_tiny_model(folder, vocab_size=384, hidden_size=64, layers=2)
    cache = tmp_path / "hub"
    cache_model(cache, CATALOG_REPO, folder)
    model_in_root = service_env.model_root / "tiny-llama-hub"
    if not model_in_root.exists():
        shutil.copytree(folder, model_in_root)
    data = make_tiny_dataset(tmp_path / "data.jsonl", n=40, fmt="text")
    headers = auth(keys["submit"])
    with live_api.client(keys["submit"]) as client:
        with data.open("rb") as fh:
            up = client.post(
                "/v1/datasets",
                files={"file": ("d.jsonl", fh)},
                data={"model_path": "tiny-llama-hub"},
            )
        assert up.status_code == 201, up.text
        estimate = client.post(
            "/v1/estimates",
            json={
                "model": CATALOG_REPO,
                "dataset": {"dataset_id": up.json()["id"]},
                "methods": ["lora"],
                "training": TRAINING,
                "hardware": {"gpu": QUEUE_GPU, "provider": "runpod"},
            },
        )
        assert estimate.status_code == 201, estimate.text
        body: dict[str, Any] = {
            "estimate_id": estimate.json()["id"],
            "method": "lora",
            "max_steps": 2,
        }
        # A hub id the catalog does not know cannot be estimated again for the job: refused.
        unknown = client.post("/v1/jobs", json={**body, "model": {"hub_id": REPO}})
        assert unknown.status_code == 422, unknown.text
        assert unknown.json()["errors"][0]["loc"] == ["model"], unknown.text
        job = client.post("/v1/jobs", json=body, headers=headers)
        assert job.status_code == 201, job.text
        assert job.json()["spec"]["model"]["hub_id"] == CATALOG_REPO, job.json()["spec"]
        job_id = job.json()["id"]
        env = {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
        with start_worker(
            service_env,
            gpu=QUEUE_GPU,
            hostname=f"hub-{uuid.uuid4().hex[:6]}",
            log=tmp_path / "worker.log",
            extra_env=env,
        ):

            def finished() -> dict[str, Any] | None:
                current: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
                return current if current["status"] in ("succeeded", "failed") else None

            done = wait_for(finished, timeout=JOB_TIMEOUT_S, interval=1, what="the hub job")
    assert done["status"] == "succeeded", done
