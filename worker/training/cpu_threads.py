"""How many threads a training job on the CPU uses.

PyTorch's CPU kernels run on OpenMP threads that spin-wait for each other at every parallel
region. When they outnumber the cores nothing else is using, a step waits for a thread that is
not running: a tiny LoRA job (2 layers, width 64, 40 steps) trained in 1.1 s on one thread and
in 10.7 s on two while other processes kept both cores of the machine busy. The API, the
database and the worker itself share a CPU worker's machine, so one core is left to them.
"""

from __future__ import annotations

import os

# Left to the rest of the stack (API, database, the worker's own process) on a CPU worker.
RESERVED_CORES = 1


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask, so container CPU sets count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_threads(configured: int | None = None, cores: int | None = None) -> int:
    """Threads for one CPU job: `configured` when set, else OMP_NUM_THREADS when set (a
    launcher's choice, e.g. torch.distributed.run gives each rank one), else all usable cores
    but RESERVED_CORES, and never below one."""
    if configured:
        return configured
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, (cores if cores is not None else usable_cores()) - RESERVED_CORES)
