"""Check a worker's device sets for real: each child given a lease sees exactly its own GPUs.

    PYTHONPATH=. python bench/device_sets.py [--per-job 1] [--nodename bench@host]

Takes this machine's devices as a worker would (NVML, TUNECOST_WORKER_GPU_COUNT), hands out
leases of `--per-job` devices until none is left, checks that one more is refused while they are
held, and for each lease spawns a child with the environment the training runner gives a job
(`worker/training/devices.py`) that reports what torch sees there: how many GPUs, and their
UUIDs. Prints one line per lease and exits 1 if a child saw a GPU that is not its own. Without a
GPU it leases the logical CPU devices and says the CUDA check was not run. The tests fake NVML's
answer for this path; this script is what runs it against a driver.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys

from app.config import get_settings
from worker import devices
from worker.training.devices import parse_devices

CHILD = """
import json, torch
n = torch.cuda.device_count()
uuids = ["GPU-" + str(torch.cuda.get_device_properties(i).uuid) for i in range(n)]
print(json.dumps({"count": n, "uuids": uuids}))
"""


def _child_sees(environment: dict[str, str]) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD],
        env={**os.environ, **environment},
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(done.stdout))


def main() -> int:
    """Lease every device, check each child's view; 0 when every view was its own."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-job", type=int, default=1, help="devices per lease")
    parser.add_argument("--nodename", default=f"bench@{socket.gethostname()}")
    args = parser.parse_args()
    settings = get_settings()
    allocator = devices.Allocator(devices.worker_devices(nodename=args.nodename, settings=settings))
    print(f"worker devices: {allocator.total} (free now: {allocator.free()})")
    leases = []
    while (lease := allocator.try_acquire(args.per_job)) is not None:
        leases.append(lease)
    print(f"leases of {args.per_job}: {len(leases)}; one more refused: {lease is None}")
    bad = 0
    for lease in leases:
        device_set = parse_devices(lease.device_ids())
        if device_set.kind != "cuda":
            print(f"  devices {lease.indexes}: CPU slots {lease.device_ids()} (no CUDA to check)")
            continue
        seen = _child_sees(device_set.environment())
        own = seen["uuids"] == lease.device_ids()
        bad += not own
        print(
            f"  devices {lease.indexes}: child sees {seen['count']} GPU(s) {seen['uuids']}: "
            f"{'its own' if own else 'NOT its own'}"
        )
    seen_ids = [d for lease in leases for d in lease.device_ids()]
    print(f"every device leased once: {len(seen_ids) == len(set(seen_ids))}")
    for lease in leases:
        lease.release()
    print(f"free after release: {allocator.free()}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
