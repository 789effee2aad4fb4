"""The devices a worker hands to jobs, and the allocator that keeps their sets disjoint.

A worker has N devices: the GPUs NVML sees (the first TUNECOST_WORKER_GPU_COUNT of them when it
is set), or on a machine without GPUs TUNECOST_WORKER_GPU_COUNT logical CPU devices (1 unless
set), so that the whole path runs on a CPU. Celery's prefork pool runs up to N jobs at once, each
in its own process; a job takes its `num_gpus` devices all at once or not at all, under one
allocator lock, so two waiting jobs never hold half of what each needs; waiting jobs are served
in the order they started waiting.

A device is held through an advisory lock (flock(2)) on one file per device for as long as the
job's process holds it. The kernel drops the lock when that process dies, so a killed pool
process never leaks a device. GPU lock files are named by the GPU's UUID in one folder per
machine (two workers on one machine never share a GPU); CPU devices are per worker.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from app.config import Settings
from worker.training.metering import visible_gpu_uuids

LOCK_DIR_NAME = "tunecost-devices"
ALLOCATOR_LOCK = "allocator.lock"
WAIT_POLL_S = 0.5  # how often a job waiting for devices looks again
# NVML's answer, read once in the worker's main process: its pool processes are forked after
# that and reuse it, so NVML is never used across a fork.
_gpu_uuids: list[str] | None = None


class DeviceCountError(RuntimeError):
    """TUNECOST_WORKER_GPU_COUNT asks for more GPUs than this machine shows."""


@dataclass(frozen=True)
class Device:
    """One device a worker hands out: its index on the worker and how a job is pointed at it."""

    index: int
    lock_file: Path
    # The CUDA_VISIBLE_DEVICES entry for a GPU (its UUID, unambiguous whatever the worker's
    # own CUDA_VISIBLE_DEVICES says); None for a logical CPU device.
    cuda_id: str | None
    # A logical CPU device's share of the worker's cores (the job runs pinned to them, so jobs
    # on different CPU devices do not fight over cores); None for a GPU.
    cores: tuple[int, ...] | None = None


def gpu_uuids() -> list[str]:
    """The UUIDs of the GPUs this worker sees ([] without a GPU), asked of NVML once."""
    global _gpu_uuids
    if _gpu_uuids is None:
        _gpu_uuids = visible_gpu_uuids()
    return list(_gpu_uuids)


def device_count(settings: Settings) -> int:
    """How many devices this worker has (see the module docstring)."""
    return _count(settings, gpu_uuids())


def _count(settings: Settings, uuids: list[str]) -> int:
    wanted = settings.worker_gpu_count
    if not uuids:
        return wanted or 1
    if wanted is not None and wanted > len(uuids):
        raise DeviceCountError(
            f"TUNECOST_WORKER_GPU_COUNT={wanted} but NVML shows {len(uuids)} GPU(s) here; "
            f"set it to at most {len(uuids)}, or unset it to use every GPU"
        )
    return wanted or len(uuids)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "worker"


def lock_root(settings: Settings) -> Path:
    """The folder that holds every device lock file on this machine."""
    return settings.worker_lock_dir or Path(tempfile.gettempdir()) / LOCK_DIR_NAME


def worker_devices(*, nodename: str, settings: Settings) -> list[Device]:
    """This worker's devices, with the lock file of each."""
    uuids = gpu_uuids()
    count = _count(settings, uuids)
    root = lock_root(settings)
    if uuids:
        return [
            Device(index=i, lock_file=root / f"gpu-{_slug(uuid)}.lock", cuda_id=uuid)
            for i, uuid in enumerate(uuids[:count])
        ]
    folder = root / _slug(nodename)
    shares = core_shares(sorted(os.sched_getaffinity(0)), count)
    return [
        Device(index=i, lock_file=folder / f"cpu-{i}.lock", cuda_id=None, cores=shares[i])
        for i in range(count)
    ]


def core_shares(cores: list[int], devices: int) -> list[tuple[int, ...]]:
    """Split the cores into `devices` disjoint, contiguous shares.

    With more devices than cores, each device gets one core and the cores are reused in turn.
    """
    if devices > len(cores):
        return [(cores[i % len(cores)],) for i in range(devices)]
    size, extra = divmod(len(cores), devices)
    shares, start = [], 0
    for i in range(devices):
        end = start + size + (1 if i < extra else 0)
        shares.append(tuple(cores[start:end]))
        start = end
    return shares


def _try_lock(path: Path) -> IO[bytes] | None:
    """The open, locked file, or None when another process holds the lock."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        handle = path.open("ab")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
        # A job's lock file is unlinked by its holder before it unlocks: a lock won on the
        # unlinked file is worthless, so open the path again.
        try:
            same = os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return handle
        _unlock(handle)


def _unlock(handle: IO[bytes]) -> None:
    with contextlib.suppress(OSError):
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    handle.close()


@dataclass
class DeviceLease:
    """Devices held by this process until `release()` (or until the process dies)."""

    devices: list[Device]
    _handles: list[IO[bytes]] = field(default_factory=list, repr=False)

    @property
    def indexes(self) -> list[int]:
        """The devices' indexes on the worker."""
        return [d.index for d in self.devices]

    def device_ids(self) -> list[str]:
        """The set as the training runner takes it: GPU UUIDs, or CPU slots `cpu:<index>`."""
        return [d.cuda_id if d.cuda_id is not None else f"cpu:{d.index}" for d in self.devices]

    def cores(self) -> set[int] | None:
        """The cores a job on these CPU devices is pinned to; None for GPUs."""
        shares = [d.cores for d in self.devices if d.cores is not None]
        return {c for share in shares for c in share} if shares else None

    def cuda_visible_devices(self) -> str | None:
        """The CUDA_VISIBLE_DEVICES value for a job on these devices; None for CPU devices."""
        ids = [d.cuda_id for d in self.devices if d.cuda_id is not None]
        return ",".join(ids) if ids else None

    def release(self) -> None:
        """Give the devices back."""
        handles, self._handles = self._handles, []
        for handle in handles:
            _unlock(handle)

    def __enter__(self) -> DeviceLease:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


class Allocator:
    """Hands out disjoint sets of one worker's devices to the processes of that worker.

    First come, first served: a job that had to wait holds a numbered ticket, and no later job
    takes devices while an earlier ticket waits, so a job of many devices is not starved by a
    stream of small ones taking each device as it frees up (the price: a small job may wait
    behind a big one although a device is free).
    """

    def __init__(self, devices: list[Device]) -> None:
        if not devices:
            raise ValueError("a worker has at least one device")
        self.devices = devices
        root = devices[0].lock_file.parent
        self._mutex = root / ALLOCATOR_LOCK
        self._tickets = root / "waiting"
        self._counter = root / "waiting.next"

    @property
    def total(self) -> int:
        """How many devices the worker has."""
        return len(self.devices)

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        self._mutex.parent.mkdir(parents=True, exist_ok=True)
        with self._mutex.open("ab") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # held for microseconds by anyone
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _check(self, count: int) -> None:
        if not 1 <= count <= self.total:
            raise ValueError(f"this worker has {self.total} device(s); asked for {count}")

    def _take(self, count: int) -> DeviceLease | None:
        """Under the mutex: `count` free devices, lowest indexes first, or none at all."""
        lease = DeviceLease(devices=[])
        for device in self.devices:
            handle = _try_lock(device.lock_file)
            if handle is None:
                continue
            lease.devices.append(device)
            lease._handles.append(handle)
            if len(lease.devices) == count:
                return lease
        lease.release()  # all or nothing: never sit on part of a set
        return None

    def _waiting_before(self, mine: Path | None) -> bool:
        """Under the mutex: whether a live ticket precedes `mine` (any live one, when None)."""
        if not self._tickets.is_dir():
            return False
        for ticket in sorted(self._tickets.glob("*.wait")):
            if mine is not None and ticket.name >= mine.name:
                return False
            handle = _try_lock(ticket)
            if handle is None:
                return True  # its process holds it: it waits
            ticket.unlink(missing_ok=True)  # its process died waiting
            _unlock(handle)
        return False

    def _ticket(self) -> tuple[Path, IO[bytes]]:
        """Under the mutex: the next numbered ticket, locked by this process while it waits."""
        self._tickets.mkdir(parents=True, exist_ok=True)
        try:
            number = int(self._counter.read_text() or 0)
        except (FileNotFoundError, ValueError):
            number = 0
        self._counter.write_text(str(number + 1))
        path = self._tickets / f"{number:012d}.wait"
        handle = _try_lock(path)
        assert handle is not None, "a fresh ticket is nobody's"
        return path, handle

    def try_acquire(self, count: int) -> DeviceLease | None:
        """`count` free devices now, or None (too few free, or an earlier job waits for some)."""
        self._check(count)
        with self._exclusive():
            return None if self._waiting_before(None) else self._take(count)

    def acquire(
        self, count: int, *, should_stop: Callable[[], bool], poll_s: float = WAIT_POLL_S
    ) -> DeviceLease | None:
        """Wait in turn until `count` devices are free and take them; None once `should_stop()`."""
        self._check(count)
        with self._exclusive():
            lease = None if self._waiting_before(None) else self._take(count)
            if lease is not None:
                return lease
            ticket, handle = self._ticket()
        try:
            while True:
                if should_stop():
                    return None
                time.sleep(poll_s)
                with self._exclusive():
                    if not self._waiting_before(ticket):
                        lease = self._take(count)
                        if lease is not None:
                            return lease
        finally:
            with self._exclusive():
                ticket.unlink(missing_ok=True)  # while still locked: see _try_lock
                _unlock(handle)

    def free(self) -> int:
        """How many devices no process holds right now."""
        free = 0
        with self._exclusive():
            for device in self.devices:
                handle = _try_lock(device.lock_file)
                if handle is not None:
                    free += 1
                    _unlock(handle)
        return free


def _job_lock_file(*, nodename: str, settings: Settings, job_id: str) -> Path:
    return lock_root(settings) / _slug(nodename) / "jobs" / f"{_slug(job_id)}.lock"


@contextlib.contextmanager
def running_job(*, nodename: str, settings: Settings, job_id: str) -> Iterator[bool]:
    """Hold job `job_id`'s lock on this worker for the block; yields False if another holds it.

    With several pool processes, a second delivery of a job may reach this worker while one of
    its processes still runs the job; the lock tells that apart from a redelivery after the
    process that ran it died (the kernel dropped its lock).
    """
    path = _job_lock_file(nodename=nodename, settings=settings, job_id=job_id)
    handle = _try_lock(path)
    if handle is None:
        yield False
        return
    try:
        yield True
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # while still locked: see _try_lock
        _unlock(handle)
