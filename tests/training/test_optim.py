"""Optimizers build and step on real parameters, bitsandbytes' on the CPU too."""

from __future__ import annotations

import pytest
import torch

from app.jobs.spec import LrSchedule
from worker.training.errors import JobSpecError
from worker.training.optim import build_optimizer, warmup_schedule


def _fit_once(name: str) -> tuple[float, float]:
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 1)
    x, y = torch.randn(32, 8), torch.randn(32, 1)
    opt = build_optimizer(name, model.parameters(), lr=0.05, weight_decay=0.0, device_type="cpu")
    losses = []
    for _ in range(20):
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses[0], losses[-1]


@pytest.mark.parametrize("name", ["adamw", "sgd", "adafactor"])
def test_cpu_optimizers_reduce_the_loss(name: str) -> None:
    first, last = _fit_once(name)
    assert last < first


@pytest.mark.parametrize("name", ["adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit"])
def test_bitsandbytes_optimizers_run_on_the_cpu(name: str) -> None:
    # bitsandbytes >= 0.49 steps its optimizers on the CPU; with no unified memory there, a
    # paged optimizer runs unpaged
    first, last = _fit_once(name)
    assert last < first
    opt = build_optimizer(
        name, [torch.nn.Parameter(torch.zeros(8))], lr=1e-3, weight_decay=0, device_type="cpu"
    )
    assert not type(opt).__name__.startswith("Paged")


def test_unknown_optimizer_and_nothing_to_train() -> None:
    with pytest.raises(JobSpecError, match="lion"):
        build_optimizer("lion", [], lr=1e-3, weight_decay=0, device_type="cpu")
    frozen = torch.nn.Parameter(torch.zeros(2), requires_grad=False)
    with pytest.raises(JobSpecError, match="no trainable"):
        build_optimizer("adamw", [frozen], lr=1e-3, weight_decay=0, device_type="cpu")


def test_warmup_then_constant() -> None:
    opt = build_optimizer(
        "sgd", [torch.nn.Parameter(torch.zeros(1))], lr=1.0, weight_decay=0, device_type="cpu"
    )
    sched = warmup_schedule(opt, warmup_steps=4)
    seen = []
    for _ in range(6):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def _lrs(schedule: LrSchedule, warmup: int, total: int) -> list[float]:
    opt = build_optimizer(
        "sgd", [torch.nn.Parameter(torch.zeros(1))], lr=1.0, weight_decay=0, device_type="cpu"
    )
    sched = warmup_schedule(opt, warmup_steps=warmup, schedule=schedule, total_steps=total)
    seen = []
    for _ in range(total):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return seen


def test_decaying_schedules_fall_towards_zero_at_the_runs_end() -> None:
    # As transformers' schedules count: the factor would reach 0 at step total_steps, after the
    # run's last step.
    assert _lrs("linear", 2, 6) == pytest.approx([0.5, 1.0, 1.0, 0.75, 0.5, 0.25])
    cosine = _lrs("cosine", 0, 5)
    assert cosine == pytest.approx([1.0, 0.9045085, 0.6545085, 0.3454915, 0.0954915])
    with pytest.raises(ValueError, match="total_steps"):
        opt = build_optimizer(
            "sgd", [torch.nn.Parameter(torch.zeros(1))], lr=1.0, weight_decay=0, device_type="cpu"
        )
        warmup_schedule(opt, warmup_steps=0, schedule="linear")
