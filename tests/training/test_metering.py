"""Device detection (NVML faked: no GPU here), energy, peak RSS, money and FLOP/s arithmetic."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from worker.training import metering

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("name", "gpu_id"),
    [
        ("NVIDIA H100 80GB HBM3", "H100-80GB-SXM"),
        ("NVIDIA H100 PCIe", "H100-80GB-PCIe"),
        ("NVIDIA H200", "H200"),
        ("NVIDIA A100-SXM4-40GB", "A100-40GB"),
        ("NVIDIA A100-PCIE-40GB", "A100-40GB"),
        ("NVIDIA A100-SXM4-80GB", "A100-80GB"),
        ("NVIDIA A100 80GB PCIe", "A100-80GB"),
        ("NVIDIA L40S", "L40S"),
        ("NVIDIA L4", "L4"),
        ("NVIDIA A10G", "A10G"),
        ("Tesla T4", "T4"),
        ("Tesla V100-SXM2-16GB", "V100-16GB"),
        ("NVIDIA GeForce RTX 4090", "RTX-4090"),
        ("NVIDIA RTX A6000", "RTX-A6000"),
        ("NVIDIA B200", None),
    ],
)
def test_gpu_id_for_nvml_name(name: str, gpu_id: str | None) -> None:
    assert metering.gpu_id_for_name(name) == gpu_id


def test_every_mapped_id_is_in_the_catalog() -> None:
    from app.catalog.loader import load_catalog

    catalog = load_catalog()
    for _, gpu_id in metering._GPU_NAME_RULES:
        assert catalog.gpu(gpu_id).id == gpu_id


class FakeNvml:
    """Stands in for pynvml: two GPUs of one name, an energy counter, power readings."""

    def __init__(self, name: str, cc: tuple[int, int], *, energy: bool = True) -> None:
        self.name, self.cc, self.energy = name, cc, energy
        self.energy_mj = [1_000_000, 2_000_000]

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> int:
        return int(uuid.rsplit("-", 1)[1])

    def nvmlDeviceGetName(self, handle: int) -> bytes:
        return self.name.encode()

    def nvmlDeviceGetCudaComputeCapability(self, handle: int) -> tuple[int, int]:
        return self.cc

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: int) -> int:
        if not self.energy:
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")
        return self.energy_mj[handle]

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        return 300_000  # mW


def test_detect_device_with_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metering, "_nvml", lambda: FakeNvml("NVIDIA A100-SXM4-80GB", (8, 0)))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert metering.detect_device() == metering.DeviceInfo(
        "A100-80GB", "NVIDIA A100-SXM4-80GB", 2, True
    )
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert metering.detect_device().count == 1
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-abc-0,GPU-abc-1")
    assert metering.detect_device().count == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert metering.detect_device().kind == "cpu"


def test_detect_device_old_and_unknown_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(metering, "_nvml", lambda: FakeNvml("Tesla T4", (7, 5)))
    assert metering.detect_device() == metering.DeviceInfo("T4", "Tesla T4", 2, False)
    monkeypatch.setattr(metering, "_nvml", lambda: FakeNvml("NVIDIA B200", (10, 0)))
    assert metering.detect_device().kind == "NVIDIA-B200"


def test_detect_device_without_nvml_is_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metering, "_nvml", lambda: None)
    device = metering.detect_device()
    assert device.is_cpu and device.count == 1 and not device.bf16 and device.name


def test_energy_from_the_counter(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml("NVIDIA H100 80GB HBM3", (9, 0))
    monkeypatch.setattr(metering, "_nvml", lambda: fake)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    meter = metering.EnergyMeter()
    meter.start()
    fake.energy_mj = [e + 3_600_000 for e in fake.energy_mj]  # each GPU used 3.6 kJ
    assert meter.stop() == pytest.approx(2 * 3_600 / 3.6e6)


def test_energy_from_power_samples_where_no_counter(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setattr(
        metering, "_nvml", lambda: FakeNvml("Tesla V100-SXM2-16GB", (7, 0), energy=False)
    )
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    meter = metering.EnergyMeter(sample_s=0.05)
    meter.start()
    time.sleep(0.5)
    kwh = meter.stop()
    assert kwh is not None
    # 2 GPUs x 300 W for about half a second (sampling loses at most a period at the end).
    assert 0.2 * 600 / 3.6e6 < kwh < 1.0 * 600 / 3.6e6


def test_energy_is_none_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metering, "_nvml", lambda: None)
    meter = metering.EnergyMeter()
    meter.start()
    assert meter.stop() is None


def test_peak_rss_grows_with_a_real_allocation() -> None:
    # A fresh interpreter, so the baseline is small and the allocation must show.
    code = (
        "from worker.training.metering import peak_cpu_rss_bytes, peak_memory\n"
        "before = peak_cpu_rss_bytes()\n"
        "block = bytearray(128 * 2**20)\n"
        "block[::4096] = b'x' * len(block[::4096])\n"
        "p = peak_memory('cpu')\n"
        "print(before, peak_cpu_rss_bytes(), p.bytes, p.kind, p.reserved_bytes, p.device_bytes)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.split()
    before, after, peak = int(out[0]), int(out[1]), int(out[2])
    # The child's own peak: the interpreter alone stays below the block, with it it cannot.
    # (Started from this big pytest process, so ru_maxrss alone would report our size.)
    assert before < 128 * 2**20 <= after
    assert peak >= after and out[3] == "cpu_rss" and out[4] == "None" and out[5] == "None"


def test_money_and_flops() -> None:
    assert metering.accrued_cost_usd(elapsed_s=1800, num_gpus=4, price_per_gpu_hour=2.5) == 5.0

    tflops, mfu = metering.achieved_flops(
        flops_per_token=6e9,
        tokens_processed=1_000_000,
        train_s=60,
        peak_flops_per_gpu=1e15,
        num_gpus=2,
    )
    assert tflops == pytest.approx(100.0) and mfu == pytest.approx(0.05)
    assert metering.achieved_flops(
        flops_per_token=None, tokens_processed=1, train_s=1, peak_flops_per_gpu=1e15, num_gpus=1
    ) == (None, None)
    assert metering.catalog_peak_flops("H100-80GB-SXM", "bf16") == pytest.approx(989.4e12)
    assert metering.catalog_peak_flops("no-such-gpu", "bf16") is None


def test_library_versions_name_the_stack() -> None:
    versions: dict[str, Any] = metering.library_versions()
    assert {"torch", "transformers", "peft", "bitsandbytes"} <= versions.keys()
    assert all(versions[k] for k in ("torch", "transformers", "peft"))


def test_the_cost_clock_accrues_by_the_clock_it_is_given() -> None:
    clock = [1000.0]
    accrued = metering.cost_clock(
        started_at=1000.0, num_gpus=2, price_per_gpu_hour=3.0, now=lambda: clock[0]
    )
    assert accrued() == 0.0
    clock[0] += 1800  # half an hour on two devices at $3 per device-hour
    assert accrued() == pytest.approx(3.0)
