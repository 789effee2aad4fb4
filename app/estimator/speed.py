"""A device's measured speed: what a worker found its device does, in place of the datasheet.

A worker measures its device once per machine at start (worker/speed.py): sustained matmul
throughput (large square matmuls in the dtype it trains in), sustained memory bandwidth (a large
copy) and the host's time per decoder layer of a tiny eager model. Estimates for that device kind
use these until calibration from finished jobs takes over.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DeviceSpeed:
    """What one device kind measured: sustained FLOP/s, bytes/s and the host's per-layer time."""

    matmul_tflops: float  # sustained on large matmuls in the training dtype
    memory_gbps: float  # sustained copy bandwidth, read + write, GB/s
    host_s_per_layer: float  # host seconds per decoder layer per micro-step (forward + backward)

    def __post_init__(self) -> None:
        for name in ("matmul_tflops", "memory_gbps", "host_s_per_layer"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    @property
    def matmul_flops(self) -> float:
        """Sustained matmul FLOP/s."""
        return self.matmul_tflops * 1e12

    @property
    def memory_bytes_per_s(self) -> float:
        """Sustained memory bytes/s."""
        return self.memory_gbps * 1e9
