"""A worker measures its device once per machine: sustained matmul throughput, memory bandwidth
and the host's time per decoder layer of an eager step (app/estimator/speed.py `DeviceSpeed`).

The measurement runs in a fresh interpreter (`python -m worker.speed`), never in the Celery
parent, which must not start CUDA or CPU thread pools before it forks its pool. It takes a few
seconds and is cached in a file per machine and device (its kind, name, torch version and the
threads a job uses), so a restarted worker reports it at once. The heartbeat carries it; the
estimates for that device kind use it until calibration from finished jobs takes over.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from hashlib import sha256
from pathlib import Path
from typing import Any

from app.estimator.speed import DeviceSpeed

# Square matmuls large enough to run near a device's sustained rate in well under a second each:
# 8192^3 x 2 = 1.1 TFLOP on a GPU, 1024^3 x 2 = 2.1 GFLOP on a CPU core or two.
MATMUL_N = {"cuda": 8192, "cpu": 1024}
MATMUL_REPEATS = {"cuda": 20, "cpu": 8}
# A copy far larger than any cache: 1 GiB on a GPU, 256 MiB on a CPU.
COPY_BYTES = {"cuda": 2**30, "cpu": 2**28}
COPY_REPEATS = {"cuda": 20, "cpu": 5}
# The host floor: a tiny Llama (transformers, eager, width 64) at 1 and 3 decoder layers, one
# forward and backward of 16 tokens each; the difference over the 2 extra layers is the host's
# time per layer, the tensors being too small for the device to matter.
TINY_CONFIG: dict[str, Any] = {
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 256,
    "max_position_embeddings": 64,
}
FLOOR_LAYERS = (1, 3)
FLOOR_TOKENS = 16
FLOOR_WARMUP = 5
FLOOR_REPEATS = 30
PROBE_TIMEOUT_S = 300.0  # the child measures in seconds; a machine this slow reports nothing
CACHE_VERSION = 1


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _matmul_tflops(device: str) -> float:
    import torch

    n = MATMUL_N[device]
    dtype = torch.bfloat16 if device == "cuda" else torch.float32  # what a job trains in
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    torch.matmul(a, b)  # first call picks kernels
    _sync(device)
    start = time.perf_counter()
    for _ in range(MATMUL_REPEATS[device]):
        torch.matmul(a, b)
    _sync(device)
    seconds = time.perf_counter() - start
    return 2.0 * n**3 * MATMUL_REPEATS[device] / seconds / 1e12


def _copy_gbps(device: str) -> float:
    import torch

    src = torch.empty(COPY_BYTES[device] // 4, device=device, dtype=torch.float32).fill_(1.0)
    dst = torch.empty_like(src)
    dst.copy_(src)
    _sync(device)
    start = time.perf_counter()
    for _ in range(COPY_REPEATS[device]):
        dst.copy_(src)
    _sync(device)
    seconds = time.perf_counter() - start
    return 2.0 * COPY_BYTES[device] * COPY_REPEATS[device] / seconds / 1e9  # read + write


def _step_seconds(device: str, layers: int) -> float:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    kwargs = {k: v for k, v in TINY_CONFIG.items() if k != "model_type"}
    config = AutoConfig.for_model("llama", num_hidden_layers=layers, use_cache=False, **kwargs)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").to(device)
    ids = torch.randint(0, TINY_CONFIG["vocab_size"], (1, FLOOR_TOKENS), device=device)
    for i in range(FLOOR_WARMUP + FLOOR_REPEATS):
        if i == FLOOR_WARMUP:
            _sync(device)
            start = time.perf_counter()
        model(input_ids=ids, labels=ids).loss.backward()
        model.zero_grad(set_to_none=True)
    _sync(device)
    return (time.perf_counter() - start) / FLOOR_REPEATS


def measure(device: str) -> DeviceSpeed:
    """Measure this process's device ("cuda" or "cpu") now, in this process."""
    few, many = (_step_seconds(device, n) for n in FLOOR_LAYERS)
    per_layer = max(many - few, 1e-6) / (FLOOR_LAYERS[1] - FLOOR_LAYERS[0])
    return DeviceSpeed(
        matmul_tflops=_matmul_tflops(device),
        memory_gbps=_copy_gbps(device),
        host_s_per_layer=per_layer,
    )


def cache_path(*, kind: str, name: str, threads: int, cache_dir: Path | None = None) -> Path:
    """The file this machine's measurement of a device is kept in."""
    import torch  # the version only: no device is touched

    key = json.dumps([CACHE_VERSION, kind, name, threads, torch.__version__])
    folder = cache_dir or Path(tempfile.gettempdir()) / "tunecost-device-speed"
    return folder / f"{kind}-{sha256(key.encode()).hexdigest()[:16]}.json"


def read_cached(path: Path) -> DeviceSpeed | None:
    """A measurement cached at `path`, or None when there is none (or it is unreadable)."""
    try:
        return DeviceSpeed(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def device_speed(
    *, kind: str, name: str, device: str, threads: int, cache_dir: Path | None = None
) -> DeviceSpeed | None:
    """This machine's measured speed of its device: cached, else measured in a fresh
    interpreter (with `threads` CPU threads, as a job gets) and cached; None if that failed."""
    path = cache_path(kind=kind, name=name, threads=threads, cache_dir=cache_dir)
    cached = read_cached(path)
    if cached is not None:
        return cached
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    try:
        out = subprocess.run(
            [sys.executable, "-m", "worker.speed", device],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            check=True,
            env=env,
        )
        speed = DeviceSpeed(**json.loads(out.stdout.strip().splitlines()[-1]))
    except (OSError, subprocess.SubprocessError, ValueError, TypeError, IndexError):
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(speed.__dict__))
    tmp.replace(path)  # atomic: two workers of one machine never read half a file
    return speed


def main(argv: list[str]) -> int:
    """`python -m worker.speed cuda|cpu`: print the measurement as one JSON line."""
    import torch

    device = argv[1] if len(argv) > 1 else "cpu"
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    print(json.dumps(measure(device).__dict__))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
