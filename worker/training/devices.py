"""The device set a job runs on: which devices, of which kind, and how a rank sees them.

The scheduler hands each job a list of device ids. On a GPU worker they are
`CUDA_VISIBLE_DEVICES` entries (ordinals such as "0", "3", or UUIDs such as "GPU-5c1f..."): the
job's processes see exactly those GPUs, renumbered from 0, and rank r trains on `cuda:r`. On a
CPU-only worker they are CPU slots, "cpu" or "cpu:N": one rank per slot, all on the host CPU,
talking over gloo. One id is one rank; the world size is the number of ids.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from worker.training.errors import JobSpecError

DeviceKind = Literal["cpu", "cuda"]
_CPU_SLOT = re.compile(r"^cpu(:\d+)?$")
# What CUDA_VISIBLE_DEVICES accepts: an ordinal, or a GPU/MIG UUID (nvidia-smi -L prints them).
_CUDA_ID = re.compile(r"^(\d+|(GPU|MIG)-[0-9A-Za-z/-]+)$")


@dataclass(frozen=True)
class DeviceSet:
    """The devices one job was given; one rank per device."""

    ids: tuple[str, ...]
    kind: DeviceKind

    @property
    def world_size(self) -> int:
        """How many ranks the job runs."""
        return len(self.ids)

    def environment(self) -> dict[str, str]:
        """Variables a process of this job needs before it imports torch."""
        if self.kind == "cuda":
            return {"CUDA_VISIBLE_DEVICES": ",".join(self.ids)}
        return {}

    @property
    def backend(self) -> str:
        """The torch.distributed backend: NCCL between GPUs, gloo between CPU ranks."""
        return "nccl" if self.kind == "cuda" else "gloo"


def parse_devices(devices: Sequence[str]) -> DeviceSet:
    """Validate a scheduler's device list; raise JobSpecError naming the bad entry."""
    ids = tuple(str(d).strip() for d in devices)
    if not ids:
        raise JobSpecError("the job was given no device; give at least one")
    if len(set(ids)) != len(ids) and not all(_CPU_SLOT.match(d) for d in ids):
        raise JobSpecError(f"devices {list(ids)} repeat a GPU; each rank needs its own")
    kinds = {"cpu" if _CPU_SLOT.match(d) else "cuda" if _CUDA_ID.match(d) else "?" for d in ids}
    if "?" in kinds:
        bad = next(d for d in ids if not (_CPU_SLOT.match(d) or _CUDA_ID.match(d)))
        raise JobSpecError(
            f"device {bad!r} is neither a CPU slot ('cpu', 'cpu:N') nor a CUDA device "
            "(an ordinal or a GPU UUID)"
        )
    if len(kinds) > 1:
        raise JobSpecError(f"devices {list(ids)} mix CPU slots and GPUs; give one kind")
    kind: DeviceKind = "cpu" if kinds == {"cpu"} else "cuda"
    return DeviceSet(ids=ids, kind=kind)
