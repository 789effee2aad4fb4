"""A worker's devices: how many it has, and disjoint sets handed to jobs in separate processes.

The allocator is exercised across real processes (the pool's processes are separate ones); only
NVML's answer is faked where a GPU machine is needed.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.config import Settings
from tests.support import wait_for
from worker import devices

ROOT = Path(__file__).resolve().parents[2]
UUIDS = ["GPU-0a1b", "GPU-2c3d", "GPU-4e5f"]

# Holds `count` of a 3-device worker's devices (with "wait<count>", once they are free; with
# "job", job job_1's lock), prints what it got, and keeps it until stdin closes or it is killed.
HOLDER = """
import sys
from pathlib import Path
from app.config import Settings
from tests.support import wait_for
from worker import devices
settings = Settings(worker_gpu_count=3, worker_lock_dir=Path(sys.argv[1]))
if sys.argv[2].startswith("wait"):
    alloc = devices.Allocator(devices.worker_devices(nodename="w1", settings=settings))
    lease = alloc.acquire(int(sys.argv[2][4:]), should_stop=lambda: False, poll_s=0.01)
    print(",".join(map(str, lease.indexes)), flush=True)
    sys.stdin.read()
elif sys.argv[2] == "job":
    with devices.running_job(nodename="w1", settings=settings, job_id="job_1") as ours:
        print(ours, flush=True)
        sys.stdin.read()
else:
    alloc = devices.Allocator(devices.worker_devices(nodename="w1", settings=settings))
    lease = alloc.try_acquire(int(sys.argv[2]))
    print(",".join(map(str, lease.indexes)) if lease else "none", flush=True)
    sys.stdin.read()
"""


def _settings(tmp_path: Path, count: int | None = 3) -> Settings:
    return Settings(worker_gpu_count=count, worker_lock_dir=tmp_path)


def _allocator(tmp_path: Path, nodename: str = "w1") -> devices.Allocator:
    settings = _settings(tmp_path)
    return devices.Allocator(devices.worker_devices(nodename=nodename, settings=settings))


def _start(tmp_path: Path, what: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path), what],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _holder(tmp_path: Path, what: str) -> tuple[subprocess.Popen[str], str]:
    proc = _start(tmp_path, what)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def _tickets(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "w1" / "waiting").glob("*.wait"))


def _kill(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def test_cpu_only_worker_has_one_device_unless_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(devices, "_gpu_uuids", [])
    assert devices.device_count(_settings(tmp_path, None)) == 1
    assert devices.device_count(_settings(tmp_path, 4)) == 4
    logical = devices.worker_devices(nodename="a@host", settings=_settings(tmp_path, 2))
    assert [d.index for d in logical] == [0, 1]
    assert all(d.cuda_id is None for d in logical)
    # Logical CPU devices are the worker's own: another worker's are other lock files.
    other = devices.worker_devices(nodename="b@host", settings=_settings(tmp_path, 2))
    assert not {d.lock_file for d in logical} & {d.lock_file for d in other}


def test_logical_cpu_devices_split_the_cores_between_them() -> None:
    assert devices.core_shares([0, 1, 2, 3, 4], 2) == [(0, 1, 2), (3, 4)]
    assert devices.core_shares([0, 1], 2) == [(0,), (1,)]
    assert devices.core_shares([4, 5], 1) == [(4, 5)]
    assert devices.core_shares([0, 1], 3) == [(0,), (1,), (0,)]  # more devices than cores


def test_a_cpu_lease_pins_to_its_devices_cores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(devices, "_gpu_uuids", [])
    logical = devices.worker_devices(nodename="w1", settings=_settings(tmp_path, 2))
    usable = os.sched_getaffinity(0)
    assert set(logical[0].cores or ()) | set(logical[1].cores or ()) == usable
    lease = devices.Allocator(logical).try_acquire(1)
    assert lease is not None
    with lease:
        assert lease.cores() == set(logical[0].cores or ())


def test_gpu_worker_counts_nvml_devices_and_never_claims_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(devices, "_gpu_uuids", list(UUIDS))
    assert devices.device_count(_settings(tmp_path, None)) == 3
    assert devices.device_count(_settings(tmp_path, 2)) == 2
    with pytest.raises(devices.DeviceCountError, match="TUNECOST_WORKER_GPU_COUNT=4"):
        devices.device_count(_settings(tmp_path, 4))
    gpus = devices.worker_devices(nodename="a@host", settings=_settings(tmp_path, 2))
    assert [d.cuda_id for d in gpus] == UUIDS[:2]
    # GPU locks are per machine: a second worker on it would contend for the same GPUs.
    again = devices.worker_devices(nodename="b@host", settings=_settings(tmp_path, 2))
    assert [d.lock_file for d in gpus] == [d.lock_file for d in again]
    lease = devices.Allocator(gpus).try_acquire(2)
    assert lease is not None
    with lease:
        assert lease.cuda_visible_devices() == "GPU-0a1b,GPU-2c3d"
        assert lease.device_ids() == ["GPU-0a1b", "GPU-2c3d"]
        assert lease.cores() is None  # a GPU job is not pinned
        assert devices.Allocator(again).try_acquire(1) is None


def test_devices_held_by_another_process_are_not_handed_out_until_it_dies(
    tmp_path: Path,
) -> None:
    proc, got = _holder(tmp_path, "2")
    try:
        assert got == "0,1"
        alloc = _allocator(tmp_path)
        assert alloc.free() == 1
        assert alloc.try_acquire(2) is None  # all or nothing: device 2 alone is not enough
        assert alloc.free() == 1  # and the failed try left nothing held
        lease = alloc.try_acquire(1)
        assert lease is not None and lease.indexes == [2]
        assert lease.device_ids() == ["cpu:2"] and lease.cuda_visible_devices() is None
        assert alloc.free() == 0
        _kill(proc)  # the kernel drops a dead process's locks: nothing leaks
        assert alloc.free() == 2
        both = alloc.try_acquire(2)
        assert both is not None
        with both:
            assert both.indexes == [0, 1]
        lease.release()
        assert alloc.free() == 3
    finally:
        if proc.poll() is None:
            _kill(proc)


def test_waiting_for_devices_stops_when_asked(tmp_path: Path) -> None:
    proc, got = _holder(tmp_path, "3")
    try:
        assert got == "0,1,2"
        asked = []

        def stop() -> bool:
            asked.append(True)
            return len(asked) >= 3

        assert _allocator(tmp_path).acquire(1, should_stop=stop, poll_s=0.01) is None
        assert len(asked) == 3
    finally:
        _kill(proc)


def test_waiting_jobs_are_served_in_turn_and_a_dead_waiter_holds_nothing(
    tmp_path: Path,
) -> None:
    alloc = _allocator(tmp_path)
    mine = alloc.try_acquire(1)
    assert mine is not None and mine.indexes == [0]
    big = _start(tmp_path, "wait3")  # needs every device: waits for ours
    started = [big]
    try:
        wait_for(lambda: len(_tickets(tmp_path)) == 1, timeout=60, what="the big job's ticket")
        # Two devices are free, but the big job came first: a small one may not jump the queue.
        assert alloc.free() == 2
        assert alloc.try_acquire(1) is None
        mine.release()
        assert big.stdout is not None and big.stdout.readline().strip() == "0,1,2"
        assert _tickets(tmp_path) == []  # served: its ticket is gone
        _kill(big)
        # A waiter killed while waiting leaves a ticket no one holds: it blocks nobody.
        mine = alloc.try_acquire(3)
        assert mine is not None
        dead = _start(tmp_path, "wait1")
        started.append(dead)
        wait_for(lambda: len(_tickets(tmp_path)) == 1, timeout=60, what="the waiter's ticket")
        _kill(dead)
        mine.release()
        again = alloc.try_acquire(2)
        assert again is not None and again.indexes == [0, 1]
        assert _tickets(tmp_path) == []
        again.release()
    finally:
        for proc in started:
            if proc.poll() is None:
                _kill(proc)


def _hammer(lock_dir: str, seed: int, rounds: int) -> None:
    """Take random-sized sets over and over; a device another process also holds is an error."""
    settings = Settings(worker_gpu_count=3, worker_lock_dir=Path(lock_dir))
    alloc = devices.Allocator(devices.worker_devices(nodename="w1", settings=settings))
    rng = random.Random(seed)
    for _ in range(rounds):
        want = rng.choice([1, 1, 2, 3])
        lease = alloc.acquire(want, should_stop=lambda: False, poll_s=0.001)
        assert lease is not None and len(set(lease.indexes)) == want
        with lease:
            markers = [Path(lock_dir) / f"in-use-{i}" for i in lease.indexes]
            for marker in markers:
                # O_EXCL: fails if another process marked this device as in use too.
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            time.sleep(rng.random() / 500)  # hold it a moment, so that others contend
            for marker in markers:
                marker.unlink()


def test_processes_competing_for_devices_never_share_one(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_hammer, args=(str(tmp_path), seed, 40)) for seed in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=300)
    assert [proc.exitcode for proc in procs] == [0, 0, 0, 0]
    assert _allocator(tmp_path).free() == 3


def test_a_job_running_in_one_process_is_told_apart_from_a_redelivery(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    proc, got = _holder(tmp_path, "job")
    try:
        assert got == "True"
        with devices.running_job(nodename="w1", settings=settings, job_id="job_1") as ours:
            assert ours is False  # another process of this worker runs it
        with devices.running_job(nodename="w2", settings=settings, job_id="job_1") as ours:
            assert ours is True  # another worker's locks are its own
        _kill(proc)  # the process that ran it died: a redelivery may run it again
        with devices.running_job(nodename="w1", settings=settings, job_id="job_1") as ours:
            assert ours is True
    finally:
        if proc.poll() is None:
            _kill(proc)
