"""What one rank of a multi-device job needs: its place in the group, the strategy, the shards.

A job on N devices runs N ranks (worker/training/launch.py starts them with torch's elastic
launcher). Each rank loads the same model with the same seed, wraps it by the job's strategy
(FSDP2's `fully_shard` per decoder layer and at the root, or DDP), and trains on its own share of
the micro-batches. The global batch of one optimizer step is micro_batch_size x
gradient_accumulation_steps x world_size sequences, and it is the very set of sequences a
1-device run with gradient_accumulation_steps x world_size would take: rank r takes micro-batches
r, r + N, r + 2N, ... of the one seeded stream. Every micro-batch's loss is weighted by its share
of the loss tokens of the whole global batch (summed over ranks first), so the step's gradient
and loss are those of the 1-device run, up to the order of fp32 additions.

Ranks agree on everything that changes control flow (stop, NaN) through one all-reduce per step,
so no rank ever waits in a collective for a peer that has left the loop. `SOLO` is the same
interface for a 1-device job: no process group, every reduction the identity.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import fully_shard
from torch.nn.parallel import DistributedDataParallel

from app.estimator.memory import resolve_strategy
from app.jobs.spec import JobSpec
from worker.training.errors import JobSpecError, UnsupportedOnDevice
from worker.training.spec import Launch

T = TypeVar("T")
# A collective that waits longer than this fails the rank instead of hanging the job. A healthy
# step of the largest model we plan (8 GPUs, 70B, ZeRO-3) all-gathers in seconds; the first
# collective also waits for the slowest rank to load its model, which on a cold disk can take
# minutes (a 70B checkpoint is ~140 GB at ~1 GB/s).
PROCESS_GROUP_TIMEOUT = timedelta(minutes=10)
RUNNABLE = ("ddp", "fsdp_zero2", "fsdp_zero3")  # the multi-device strategies this worker runs


@dataclass(frozen=True)
class Ranks:
    """This process's place among the job's ranks, and the collectives the loop needs."""

    rank: int
    world_size: int
    device: torch.device
    strategy: str = "single"
    local_rank: int = 0  # on its node: a job across nodes has several ranks 0..n-1 locally

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that reports progress, saves the artifact and meters."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when there is a process group (more than one rank)."""
        return self.world_size > 1

    def sum(self, values: Sequence[float]) -> list[float]:
        """Each value summed over the ranks (fp64, so token counts stay exact)."""
        if not self.distributed:
            return [float(v) for v in values]
        tensor = torch.tensor(list(values), dtype=torch.float64, device=self._comm_device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return [float(v) for v in tensor.tolist()]

    def gather(self, value: T) -> list[T]:
        """`value` from every rank, in rank order."""
        if not self.distributed:
            return [value]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out

    def shard(self, micro_batches: Iterator[T]) -> Iterator[T]:
        """This rank's micro-batches: every world_size-th of the one stream, from its rank."""
        if not self.distributed:
            return micro_batches
        return itertools.islice(micro_batches, self.rank, None, self.world_size)

    @property
    def _comm_device(self) -> torch.device:
        # NCCL reduces CUDA tensors only; gloo reduces CPU tensors.
        return self.device if self.device.type == "cuda" else torch.device("cpu")


SOLO = Ranks(rank=0, world_size=1, device=torch.device("cpu"))


def job_strategy(spec: JobSpec) -> str:
    """The strategy this job runs: the spec's (the estimate's), else training.sharding.

    "auto" resolves as the estimator does (`resolve_strategy`, which also plans QLoRA and fp16
    mixed precision on several devices as DDP, the only way this worker runs them).
    """
    asked = spec.strategy if spec.strategy not in (None, "auto") else spec.training.sharding
    strategy = resolve_strategy(
        method=spec.method,
        num_gpus=spec.num_gpus,
        sharding=str(asked),
        precision=spec.training.precision,
    )
    if strategy != "single" and strategy not in RUNNABLE:
        raise JobSpecError(f"strategy {strategy!r} is not one of {list(RUNNABLE)}")
    return strategy


def join_group(launch: Launch, strategy: str) -> Ranks:
    """Join the job's process group (the launcher's environment says where); this rank's place."""
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    if world != launch.spec.num_gpus:
        raise JobSpecError(f"launched {world} ranks for a job of {launch.spec.num_gpus} devices")
    local = int(os.environ.get("LOCAL_RANK", rank))  # the rank on this node
    wanted = launch.run.device
    if wanted != "cpu" and torch.cuda.is_available():
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif wanted == "cuda":
        raise JobSpecError("device 'cuda' was requested but no CUDA device is available")
    else:
        device = torch.device("cpu")
        backend = "gloo"  # run_training gives each CPU rank its share of the cores
    dist.init_process_group(backend, timeout=PROCESS_GROUP_TIMEOUT, device_id=_device_id(device))
    return Ranks(rank=rank, world_size=world, device=device, strategy=strategy, local_rank=local)


def _device_id(device: torch.device) -> torch.device | None:
    # Binding NCCL to its device up front avoids a guess at the first collective.
    return device if device.type == "cuda" else None


def leave_group() -> None:
    """Tear the process group down (a no-op without one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _decoder_layers(model: Any) -> list[torch.nn.Module]:
    """The repeated blocks FSDP shards one by one (transformers names them `_no_split_modules`)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = set(getattr(base, "_no_split_modules", None) or ())
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        raise UnsupportedOnDevice(
            "FSDP sharding", f"{type(base).__name__} (no decoder layer classes declared)", "use ddp"
        )
    return layers


def wrap_model(model: Any, ranks: Ranks, *, grad_scaler: bool) -> Any:
    """`model` made data-parallel by the ranks' strategy; the optimizer is built after this."""
    if not ranks.distributed:
        return model
    if ranks.strategy == "ddp":
        ids = [ranks.device.index] if ranks.device.type == "cuda" else None
        # Every rank loaded the same weights with the same seed: no start-up broadcast (which
        # would also try to send bitsandbytes' 4-bit weights), and the model's buffers (rotary
        # frequencies) never change, so no buffer broadcast before each forward either.
        return DistributedDataParallel(
            model, device_ids=ids, init_sync=False, forward_sync_buffers=False
        )
    if grad_scaler:
        raise UnsupportedOnDevice(
            "fp16_mixed (loss scaling) with FSDP", "this runner", "use bf16_mixed, or ddp"
        )
    # ZeRO-3 frees each layer's gathered weights after its forward; ZeRO-2 keeps them until the
    # backward (fewer all-gathers, more memory), as the estimator's two strategies model it.
    reshard = ranks.strategy == "fsdp_zero3"
    for layer in _decoder_layers(model):
        fully_shard(layer, reshard_after_forward=reshard)
    fully_shard(model, reshard_after_forward=reshard)
    return model


def unwrap(model: Any) -> Any:
    """The module under a DDP wrapper (FSDP2 keeps the model's own class)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def full_state_dict(model: Any, ranks: Ranks) -> dict[str, Any] | None:
    """The trained weights gathered whole on rank 0 (a collective: every rank calls it).

    None where the model's own `state_dict` is already whole (one rank, or DDP).
    """
    if not ranks.distributed or ranks.strategy == "ddp":
        return None
    # Frozen weights are the base model's, unchanged: an adapter artifact needs only the
    # trained ones, and full fine-tuning trains them all.
    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
    return get_model_state_dict(model, options=options)
