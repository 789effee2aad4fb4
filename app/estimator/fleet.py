"""What the workers can run: the rule that decides whether a plan is runnable.

A job's ranks are processes of one worker node, or of up to `nodes_per_job` worker nodes that run
it together (README, "Jobs across nodes"). A plan is runnable when its devices fit that many
nodes of a GPU kind the fleet serves. The numbers come from settings (`TUNECOST_GPUS_PER_NODE`,
`TUNECOST_MAX_NODES_PER_JOB`, `TUNECOST_FLEET_GPUS`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from app.estimator.spec import MAX_GPUS_PER_NODE


@dataclass(frozen=True)
class Fleet:
    """Devices per node, nodes one job may span, and the GPU kinds workers serve (None: any)."""

    gpus_per_node: int = MAX_GPUS_PER_NODE
    nodes_per_job: int = 1
    gpu_kinds: frozenset[str] | None = None

    @property
    def max_gpus(self) -> int:
        """The most devices one job can have."""
        return self.gpus_per_node * self.nodes_per_job

    def nodes(self, num_gpus: int) -> int:
        """Machines `num_gpus` devices take."""
        return max(1, math.ceil(num_gpus / self.gpus_per_node))

    def why_not(self, gpu: str, num_gpus: int) -> str | None:
        """Why no worker can run `num_gpus` x `gpu`, or None when one can."""
        if self.gpu_kinds is not None and gpu not in self.gpu_kinds:
            served = ", ".join(sorted(self.gpu_kinds)) or "none"
            return f"no worker serves {gpu} (the fleet serves {served}: TUNECOST_FLEET_GPUS)"
        if num_gpus <= self.max_gpus:
            return None
        nodes = self.nodes(num_gpus)
        if self.nodes_per_job == 1:
            return (
                f"needs {num_gpus} GPUs over {nodes} nodes; a worker node has "
                f"{self.gpus_per_node} (TUNECOST_GPUS_PER_NODE) and a job runs on one node"
            )
        return (
            f"needs {num_gpus} GPUs over {nodes} nodes; a job may span "
            f"{self.nodes_per_job} nodes of {self.gpus_per_node} (TUNECOST_MAX_NODES_PER_JOB)"
        )


ANY = Fleet()  # one node of up to 8 GPUs of any catalog kind
