"""Jobs across nodes end to end: the API, one message per node, worker processes as nodes that
gang up, torch's launcher on each with one rendezvous, metering, a lost node, two gangs on three
workers.

Each worker runs on this CPU with its own logical devices (TUNECOST_WORKER_GPU_COUNT) and its own
lock folder, so two worker processes are two nodes; their ranks meet over gloo on 127.0.0.1. The
API's fleet settings decide how a plan's devices split into nodes (TUNECOST_GPUS_PER_NODE).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import datetime, timedelta
from typing import Any

import psutil
import pytest

from tests.conftest import auth
from tests.jobs.jobs_support import (
    device_worker,
    events,
    get,
    kill_worker,
    submit,
    wait_status,
)
from tests.support import ServiceEnv, WorkerProcess, pointed_at, start_worker, wait_for

pytestmark = pytest.mark.slow
Body = Callable[..., dict[str, Any]]
NODE_GPU = "H100-80GB-PCIe"  # no other test's worker serves it
GANG_GPU = "RTX-3090"  # nor this one: the three one-device workers of the gang test
PROVIDER = "runpod"
NODE_ENV = {"TUNECOST_WORKER_ADDRESS": "127.0.0.1"}
LOSS_TOLERANCE = 1e-4
LONG_RUN_STEPS = 1_000_000  # far more than any test waits for
GONE_WAIT_S = 60.0  # the stale limit (10 s in tests), the settle, the launcher's grace, exits
METHODS = (("full", "fsdp_zero3"), ("lora", "ddp"))


def _fleet(per_node: int) -> dict[str, str]:
    """The API's fleet: nodes of `per_node` devices, jobs of up to two nodes."""
    return {"TUNECOST_GPUS_PER_NODE": str(per_node), "TUNECOST_MAX_NODES_PER_JOB": "2"}


def _body(job_body: Body, method: str, sharding: str, **over: Any) -> dict[str, Any]:
    hardware = {"gpu": NODE_GPU, "provider": PROVIDER, "num_gpus": 4}
    body = job_body(method, hardware=hardware, **over)
    body["training"] = {**body["training"], "sharding": sharding}
    return body


def _node_workers(events_: list[dict[str, Any]]) -> dict[int, str]:
    """node index -> worker, from the job's status events."""
    found = {}
    for e in events_:
        m = re.match(r"node (\d+) of \d+ on (\S+) holds", e["message"] or "")
        if m:
            found[int(m.group(1))] = m.group(2)
    return found


@pytest.fixture(scope="module")
def one_node_runs(
    service_env: ServiceEnv,
    tmp_path_factory: pytest.TempPathFactory,
    app_client: Any,
    keys: dict[str, str],
    job_body: Body,
) -> dict[str, dict[str, Any]]:
    """Each method's job on one worker of four devices: the runs two nodes must match."""
    log = tmp_path_factory.mktemp("one-node") / "worker.log"
    done: dict[str, dict[str, Any]] = {}
    with device_worker(service_env, gpu=NODE_GPU, name="one-node", log=log, devices=4) as worker:
        for method, sharding in METHODS:
            with pointed_at(_fleet(4)):
                job = submit(app_client, keys, _body(job_body, method, sharding))
            assert job["nodes"] == 1
            done[method] = wait_status(app_client, keys, job["id"])
            assert done[method]["status"] == "succeeded", (done[method], worker.output())
    return done


@pytest.fixture(scope="module")
def two_nodes(
    service_env: ServiceEnv, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[WorkerProcess]]:
    """Two workers of two devices each: two nodes."""
    folder = tmp_path_factory.mktemp("two-nodes")
    with ExitStack() as stack:
        yield [
            stack.enter_context(
                device_worker(
                    service_env,
                    gpu=NODE_GPU,
                    name=f"node{i}",
                    log=folder / f"node{i}.log",
                    extra_env=NODE_ENV,
                )
            )
            for i in range(2)
        ]


def test_two_nodes_of_two_devices_train_as_one_node_of_four_and_bill_all_four(
    one_node_runs: dict[str, dict[str, Any]],
    two_nodes: list[WorkerProcess],
    app_client: Any,
    keys: dict[str, str],
    job_body: Body,
) -> None:
    for method, sharding in METHODS:
        with pointed_at(_fleet(2)):
            job = submit(app_client, keys, _body(job_body, method, sharding))
        assert (job["nodes"], job["num_gpus"], job["queue"]) == (2, 4, f"gpu.{NODE_GPU}.x2")
        done = wait_status(app_client, keys, job["id"])
        logs = "\n".join(w.output()[-3000:] for w in two_nodes)
        assert done["status"] == "succeeded", (method, done.get("error"), logs)
        act, one = done["actuals"], one_node_runs[method]["actuals"]
        assert (act["world_size"], act["nodes"], act["num_gpus"]) == (4, 2, 4), act
        assert (one["world_size"], one["nodes"]) == (4, 1)
        assert act["strategy"] == one["strategy"] == sharding
        assert len(act["peak_memory_per_rank_bytes"]) == 4
        # the same ranks on the same shards: the same losses as on one node
        assert act["steps"] == one["steps"] == job_body()["max_steps"]
        print(  # the figures behind the assertions, for `pytest -s`
            f"{method}: 1 node x 4 final_loss={one['final_loss']:.6f} "
            f"eval_loss={one['eval_loss']:.6f}; 2 nodes x 2 final_loss={act['final_loss']:.6f} "
            f"eval_loss={act['eval_loss']:.6f}; world_size={act['world_size']} "
            f"nodes={act['nodes']} num_gpus={act['num_gpus']} "
            f"gpu_hours={done['act_gpu_hours']:.6f} wall_s={done['act_wall_s']:.1f}"
        )
        assert abs(act["final_loss"] - one["final_loss"]) <= LOSS_TOLERANCE, (act, one)
        assert abs(act["eval_loss"] - one["eval_loss"]) <= LOSS_TOLERANCE, (act, one)
        # every device of both nodes is billed for the whole attempt
        assert done["act_gpu_hours"] == pytest.approx(done["act_wall_s"] / 3600 * 4)
        assert len(done["attempt_costs"]) == 1
        placed = _node_workers(events(app_client, keys, job["id"]))
        assert sorted(placed.values()) == sorted(w.hostname for w in two_nodes), placed
        assert done["worker"] == placed[0]  # node 0 claimed and stored the job


HELPERS = ("semaphore_tracker", "resource_tracker")  # a pool process's own, not a job's


def _tree(worker: WorkerProcess) -> list[psutil.Process]:
    """The worker's launchers and ranks: its processes below the pool processes (but for the
    pool's own helper processes)."""
    main = psutil.Process(worker.proc.pid)
    pool = set(main.children())
    below = [p for p in main.children(recursive=True) if p not in pool]
    return [p for p in below if not any(h in " ".join(_cmdline(p)) for h in HELPERS)]


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return list(process.cmdline())
    except psutil.Error:
        return []


def _describe(process: psutil.Process) -> str:
    try:
        return f"{process.pid} (parent {process.ppid()}): {' '.join(_cmdline(process))[:300]}"
    except psutil.Error as exc:
        return f"{process.pid}: {exc}"


def _runs(process: psutil.Process) -> bool:
    try:
        return bool(process.is_running() and process.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _training_on_both(app_client: Any, keys: dict[str, str], job_id: str) -> Callable[[], bool]:
    def check() -> bool:
        seen = events(app_client, keys, job_id)
        return len(_node_workers(seen)) == 2 and any(e["kind"] == "progress" for e in seen)

    return check


def test_a_cancel_ends_every_rank_on_every_node(
    two_nodes: list[WorkerProcess], app_client: Any, keys: dict[str, str], job_body: Body
) -> None:
    with pointed_at(_fleet(2)):
        job = submit(app_client, keys, _body(job_body, "lora", "ddp", max_steps=LONG_RUN_STEPS))
    wait_for(_training_on_both(app_client, keys, job["id"]), timeout=300, what="both training")
    ranks = [p for w in two_nodes for p in _tree(w)]
    assert len(ranks) >= 6, ranks  # a launcher and two ranks on each node
    resp = app_client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth(keys["submit"]))
    assert resp.status_code == 202, resp.text
    done = wait_status(app_client, keys, job["id"])
    assert (done["status"], done["attempts"]) == ("cancelled", 1), done
    _gone, alive = psutil.wait_procs(ranks, timeout=GONE_WAIT_S)
    left = [p for p in alive if _runs(p)] + [p for w in two_nodes for p in _tree(w) if _runs(p)]
    assert not left, [_describe(p) for p in left]
    print(  # the figures behind the assertions, for `pytest -s`
        f"cancelled a 2-node job: {len(ranks)} launcher/rank processes over both nodes, none "
        f"left; status {done['status']}, steps {done['actuals']['steps'] if done['actuals'] else 0}"
    )


def test_a_killed_node_ends_every_rank_and_the_job_is_retried_naming_it(
    two_nodes: list[WorkerProcess], app_client: Any, keys: dict[str, str], job_body: Body
) -> None:
    with pointed_at(_fleet(2)):
        job = submit(app_client, keys, _body(job_body, "lora", "ddp", max_steps=LONG_RUN_STEPS))

    wait_for(_training_on_both(app_client, keys, job["id"]), timeout=300, what="both training")
    placed = _node_workers(events(app_client, keys, job["id"]))
    by_name = {w.hostname: w for w in two_nodes}
    victim, survivor = by_name[placed[1]], by_name[placed[0]]
    ranks = {w.hostname: _tree(w) for w in two_nodes}
    # a launcher and two ranks on each node (and torch's own helpers, if any)
    assert all(len(tree) >= 3 for tree in ranks.values()), ranks
    kill_worker(victim)  # node 1's machine goes away: worker, launcher and ranks at once

    everything = [p for tree in ranks.values() for p in tree]
    _gone, alive = psutil.wait_procs(everything, timeout=GONE_WAIT_S)
    left = [p for p in alive if _runs(p)] + [p for p in _tree(survivor) if _runs(p)]
    assert not left, ([_describe(p) for p in left], survivor.output()[-6000:])

    def recovered() -> dict[str, Any] | None:
        said = [
            e["message"]
            for e in events(app_client, keys, job["id"])
            if e["kind"] == "status" and f"node 1 ({victim.hostname}) was lost" in e["message"]
        ]
        now = get(app_client, keys, job["id"])  # read after the events: never older than them
        retried = now["attempts"] == 1 and now["status"] == "queued" and said
        failed = now["status"] == "failed" and victim.hostname in (now["error"] or "")
        return {**now, "said": said} if retried or failed else None

    now = wait_for(recovered, timeout=120, what="the job retried or failed naming node 1")
    assert now["attempt_costs"][0]["outcome"] == "lost", now["attempt_costs"]
    resp = app_client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth(keys["submit"]))
    assert resp.status_code in (200, 202), resp.text  # queued again: cancelled at once
    assert wait_status(app_client, keys, job["id"])["status"] == "cancelled"
    print(  # the figures behind the assertions, for `pytest -s`
        f"killed {victim.hostname} (node 1): {len(everything)} launcher/rank processes over both "
        f"nodes, none left; attempt 1 {now['attempt_costs'][0]['outcome']}; job {now['status']}; "
        f"said: {now['said'] or now['error']}"
    )


@pytest.fixture
def three_workers(
    service_env: ServiceEnv, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[WorkerProcess]]:
    """Three workers of one device each."""
    folder = tmp_path_factory.mktemp("three-workers")
    with ExitStack() as stack:
        yield [
            stack.enter_context(
                start_worker(
                    service_env,
                    gpu=GANG_GPU,
                    hostname=f"solo{i}-{uuid.uuid4().hex[:6]}",
                    log=folder / f"solo{i}.log",
                    extra_env=NODE_ENV,
                )
            )
            for i in range(3)
        ]


def test_two_jobs_of_two_nodes_on_three_workers_run_one_after_the_other(
    three_workers: list[WorkerProcess], app_client: Any, keys: dict[str, str], job_body: Body
) -> None:
    hardware = {"gpu": GANG_GPU, "provider": PROVIDER, "num_gpus": 2}
    with pointed_at(_fleet(1)):
        jobs = [submit(app_client, keys, job_body("lora", hardware=hardware)) for _ in range(2)]
    assert [j["nodes"] for j in jobs] == [2, 2]
    done = [wait_status(app_client, keys, j["id"]) for j in jobs]
    logs = "\n".join(w.output()[-3000:] for w in three_workers)
    assert [d["status"] for d in done] == ["succeeded", "succeeded"], (done, logs)
    assert all(d["actuals"]["world_size"] == 2 and d["actuals"]["nodes"] == 2 for d in done)
    first, second = sorted(done, key=lambda d: d["started_at"])
    # One gang at a time: the second formed only once a node of the first had ended, on the
    # worker the first left idle and one of the first's.
    trained_until = datetime.fromisoformat(first["started_at"]) + timedelta(
        seconds=first["actuals"]["startup_s"] + first["actuals"]["train_s"]
    )
    assert datetime.fromisoformat(second["started_at"]) >= trained_until, (first, second)
    places = [set(_node_workers(events(app_client, keys, d["id"])).values()) for d in done]
    assert all(len(p) == 2 for p in places) and len(places[0] & places[1]) == 1, places
    assert places[0] | places[1] == {w.hostname for w in three_workers}
    print(  # the figures behind the assertions, for `pytest -s`
        f"two 2-node jobs on 3 workers: {[d['status'] for d in done]}; first "
        f"{first['started_at']}..{first['finished_at']} on {sorted(places[done.index(first)])}, "
        f"second {second['started_at']}..{second['finished_at']} on "
        f"{sorted(places[done.index(second)])}"
    )
