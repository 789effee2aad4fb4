"""What a run actually took: device, time, GPU-hours, peak memory, tokens, FLOP/s, energy, dollars.

Device detection uses NVML only, never CUDA, so it is safe in the Celery parent before it forks.
Peak memory is CUDA's allocator peak on a GPU, and the child's peak resident set on the CPU
(labelled `cpu_rss`). Energy comes from NVML's energy counter, or from power samples where the
counter is missing; it is None on the CPU.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import resource
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

HOUR_S = 3600.0
JOULES_PER_KWH = 3.6e6
POWER_SAMPLE_S = 0.5  # power sampling period where NVML has no energy counter (pre-Volta)
BF16_MIN_CC_MAJOR = 8  # bf16 tensor cores arrived with Ampere (compute capability 8.0)
# ru_maxrss is in KiB on Linux and in bytes on macOS (getrusage(2) on each system).
RU_MAXRSS_UNIT = 1 if sys.platform == "darwin" else 1024
LIBRARIES = ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "tokenizers")
# The dtypes the catalog has peaks for; any other compute dtype is measured against fp32's.
PEAK_DTYPES: dict[str, Literal["bf16", "fp16", "fp32"]] = {
    "bf16": "bf16",
    "fp16": "fp16",
    "fp32": "fp32",
}

# NVML device names mapped to catalog GPU ids, first match wins (so L40S before L4, and the
# memory size inside the A100/V100 names decides the variant). Names as nvidia-smi prints them.
_GPU_NAME_RULES: tuple[tuple[str, str], ...] = (
    (r"\bH200\b", "H200"),
    (r"\bH100\b.*\bPCIe\b", "H100-80GB-PCIe"),
    (r"\bH100\b", "H100-80GB-SXM"),  # "NVIDIA H100 80GB HBM3" is the SXM part
    (r"\bA100\b.*\b80GB\b", "A100-80GB"),
    (r"\bA100\b", "A100-40GB"),  # "NVIDIA A100-SXM4-40GB", "NVIDIA A100-PCIE-40GB"
    (r"\bL40S\b", "L40S"),
    (r"\bA10G\b", "A10G"),
    (r"\bL4\b", "L4"),
    (r"\bT4\b", "T4"),
    (r"\bV100\b", "V100-16GB"),
    (r"\bRTX 4090\b", "RTX-4090"),
    (r"\bRTX 3090\b", "RTX-3090"),
    (r"\bRTX A6000\b", "RTX-A6000"),
    (r"\bMI300X\b", "MI300X"),
)
CPU_KIND = "cpu"


@dataclass(frozen=True)
class DeviceInfo:
    """The accelerator a worker trains on.

    `kind` is a catalog GPU id, "cpu", or for a GPU the catalog lacks, its NVML name slugged
    (e.g. "NVIDIA-B200"). `bf16` says whether training here uses bf16 (False on the CPU, where
    tunecost trains in fp32).
    """

    kind: str
    name: str
    count: int
    bf16: bool

    @property
    def is_cpu(self) -> bool:
        """True when no GPU was found."""
        return self.kind == CPU_KIND


def gpu_id_for_name(name: str) -> str | None:
    """The catalog GPU id for an NVML device name, or None if the catalog has no such GPU."""
    for pattern, gpu_id in _GPU_NAME_RULES:
        if re.search(pattern, name, flags=re.IGNORECASE):
            return gpu_id
    return None


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-") or "unknown-gpu"


def _visible_handles(nvml: Any) -> list[Any]:
    total = nvml.nvmlDeviceGetCount()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(total)]
    handles = []
    for entry in (e.strip() for e in visible.split(",")):
        if not entry:
            continue
        if entry.isdigit():
            if int(entry) >= total:
                break  # CUDA stops at the first invalid ordinal
            handles.append(nvml.nvmlDeviceGetHandleByIndex(int(entry)))
        else:
            handles.append(nvml.nvmlDeviceGetHandleByUUID(entry))
    return handles


def _nvml() -> Any | None:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no driver, no library, no GPU: all mean "CPU" here
        return None
    return pynvml


def detect_device() -> DeviceInfo:
    """The GPUs visible to this process (NVML, honouring CUDA_VISIBLE_DEVICES), else the CPU."""
    nvml = _nvml()
    handles = _visible_handles(nvml) if nvml is not None else []
    if nvml is None or not handles:
        return DeviceInfo(kind=CPU_KIND, name=cpu_name(), count=1, bf16=False)
    raw = nvml.nvmlDeviceGetName(handles[0])
    name = raw.decode() if isinstance(raw, bytes) else str(raw)
    major, _minor = nvml.nvmlDeviceGetCudaComputeCapability(handles[0])
    return DeviceInfo(
        kind=gpu_id_for_name(name) or _slug(name),
        name=name,
        count=len(handles),
        bf16=major >= BF16_MIN_CC_MAJOR,
    )


def visible_gpu_uuids() -> list[str]:
    """NVML UUIDs of the GPUs this process sees (CUDA_VISIBLE_DEVICES honoured); [] on a CPU."""
    nvml = _nvml()
    if nvml is None:
        return []
    out = []
    for handle in _visible_handles(nvml):
        raw = nvml.nvmlDeviceGetUUID(handle)
        out.append(raw.decode() if isinstance(raw, bytes) else str(raw))
    return out


def cpu_name() -> str:
    """The CPU model name (Linux /proc/cpuinfo), or "cpu"."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "cpu"


def library_versions() -> dict[str, str | None]:
    """Installed versions of the training libraries (None where one is missing)."""
    out: dict[str, str | None] = {}
    for lib in LIBRARIES:
        try:
            out[lib] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            out[lib] = None
    out["python"] = sys.version.split()[0]
    return out


def peak_cpu_rss_bytes() -> int:
    """Peak resident set size of this process so far, in bytes.

    Linux's VmHWM first: ru_maxrss survives execve, so a child spawned from a big worker would
    report the worker's size (the spawn start method forks, then execs a fresh interpreter).
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # the kernel prints kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * RU_MAXRSS_UNIT


class EnergyMeter:
    """Energy used by the visible GPUs between start() and stop(), from NVML; None on the CPU."""

    def __init__(self, sample_s: float = POWER_SAMPLE_S) -> None:
        self._nvml = _nvml()
        self._handles = _visible_handles(self._nvml) if self._nvml is not None else []
        self._sample_s = sample_s
        self._start_mj: list[int] | None = None
        self._joules = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Begin measuring."""
        if not self._handles:
            return
        try:
            self._start_mj = [self._energy_mj(h) for h in self._handles]
        except Exception:  # counter unsupported (pre-Volta, some vGPUs): sample power instead
            self._start_mj = None
            self._thread = threading.Thread(target=self._sample, name="energy", daemon=True)
            self._thread.start()

    def stop(self) -> float | None:
        """Stop measuring and return kWh (None where there is no GPU or no reading)."""
        if not self._handles:
            return None
        if self._start_mj is not None:
            try:
                end = [self._energy_mj(h) for h in self._handles]
            except Exception:
                return None
            joules = sum(e - s for s, e in zip(self._start_mj, end, strict=True)) / 1000.0
            return joules / JOULES_PER_KWH
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * self._sample_s + 1)
        return self._joules / JOULES_PER_KWH if self._joules else None

    def _energy_mj(self, handle: Any) -> int:
        assert self._nvml is not None
        return int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(handle))

    def _sample(self) -> None:
        assert self._nvml is not None
        last = time.monotonic()
        while not self._stop.wait(self._sample_s):
            now = time.monotonic()
            try:
                watts = sum(self._nvml.nvmlDeviceGetPowerUsage(h) for h in self._handles) / 1000
            except Exception:
                return
            self._joules += watts * (now - last)
            last = now


def accrued_cost_usd(*, elapsed_s: float, num_gpus: int, price_per_gpu_hour: float) -> float:
    """Dollars spent so far: elapsed hours x GPUs x price per GPU-hour."""
    return elapsed_s / HOUR_S * num_gpus * price_per_gpu_hour


def cost_clock(
    *,
    started_at: float,
    num_gpus: int,
    price_per_gpu_hour: float,
    now: Callable[[], float] = time.time,
) -> Callable[[], float]:
    """A function returning the accrued cost since `started_at` (epoch seconds, read from `now`)."""

    def accrued() -> float:
        return accrued_cost_usd(
            elapsed_s=now() - started_at,
            num_gpus=num_gpus,
            price_per_gpu_hour=price_per_gpu_hour,
        )

    return accrued


def achieved_flops(
    *,
    flops_per_token: float | None,
    tokens_processed: int,
    train_s: float,
    peak_flops_per_gpu: float | None,
    num_gpus: int,
) -> tuple[float | None, float | None]:
    """(achieved TFLOP/s, MFU) from the estimate's FLOPs per token; None where unknown."""
    if not flops_per_token or train_s <= 0:
        return None, None
    flops_per_s = flops_per_token * tokens_processed / train_s
    mfu = flops_per_s / (peak_flops_per_gpu * num_gpus) if peak_flops_per_gpu else None
    return flops_per_s / 1e12, mfu


def catalog_peak_flops(kind: str, compute_dtype: str) -> float | None:
    """The catalog's dense peak FLOP/s for a device kind and dtype, or None if unknown."""
    from app.catalog.loader import load_catalog

    try:
        gpu = load_catalog().gpu(kind)
    except Exception:  # a GPU the catalog does not list: MFU stays unknown
        return None
    peak = gpu.peak_flops(PEAK_DTYPES.get(compute_dtype, "fp32"))
    return peak or None


@dataclass(frozen=True)
class PeakMemory:
    """This process's memory peaks: allocated (or the CPU's resident set), reserved, device."""

    bytes: int  # torch.cuda.max_memory_allocated, or the peak resident set on the CPU
    kind: str  # "cuda_allocated" or "cpu_rss"
    reserved_bytes: int | None = None  # torch.cuda.max_memory_reserved
    device_bytes: int | None = None  # the driver's count for this process, CUDA context included


def device_process_bytes(pid: int | None = None) -> int | None:
    """The memory NVML counts for process `pid` (this one) on the visible GPUs, or None.

    The caching allocator keeps what it reserved until emptied, so read before the model is
    freed this is the process's peak as nvidia-smi shows it: reserved + the CUDA context. None
    where NVML lists no such process (a container's own PID namespace, a driver without
    per-process accounting).
    """
    nvml = _nvml()
    if nvml is None:
        return None
    pid = os.getpid() if pid is None else pid
    total = 0
    found = False
    for handle in _visible_handles(nvml):
        try:
            processes = nvml.nvmlDeviceGetComputeRunningProcesses(handle)
        except Exception:  # not supported on this device or driver
            return None
        for proc in processes:
            used = getattr(proc, "usedGpuMemory", None)
            if proc.pid == pid and isinstance(used, int):
                total, found = total + used, True
    return total if found else None


def peak_memory(device_type: str) -> PeakMemory:
    """The memory peaks of this process on `device_type`."""
    if device_type == "cuda":
        import torch

        return PeakMemory(
            bytes=int(torch.cuda.max_memory_allocated()),
            kind="cuda_allocated",
            reserved_bytes=int(torch.cuda.max_memory_reserved()),
            device_bytes=device_process_bytes(),
        )
    return PeakMemory(bytes=peak_cpu_rss_bytes(), kind="cpu_rss")
