"""Plans a team can act on: memory levers before more GPUs, runnable on the fleet, no idle
GPUs paid for without saying so."""

from __future__ import annotations

from typing import Any

from app.catalog import load_catalog
from app.catalog.model_catalog import get_model_config
from app.estimator.engine import estimate
from app.estimator.fleet import Fleet
from app.estimator.levers import lever_choices
from app.estimator.model_analysis import analyze_model
from app.estimator.results import EstimateResult, MethodResult
from app.estimator.spec import (
    DatasetShape,
    HardwareSpec,
    LoraSpec,
    Method,
    QLoraSpec,
    TrainingSpec,
)

CATALOG = load_catalog()
LLAMA31_70B = analyze_model(get_model_config("meta-llama/Llama-3.1-70B"))
LLAMA65 = analyze_model(get_model_config("huggyllama/llama-65b"))
LLAMA31_8B = analyze_model(get_model_config("meta-llama/Llama-3.1-8B"))
# The run: 50K examples of 300 tokens on average, the longest 2,048
CHAT = DatasetShape(num_examples=50_000, avg_tokens=300, max_tokens=2048)
# The QLoRA paper's Guanaco runs: LoRA r=64 on every linear layer, 512-token sequences
# (384 source + 128 target), micro-batch 1 with gradient accumulation, bf16 (Dettmers et al.
# 2023, appendix B.2 hyperparameters).
GUANACO_LORA = LoraSpec(r=64, alpha=16, dropout=0.05, target_modules="all-linear")
GUANACO_TRAINING = TrainingSpec(seq_len=512, micro_batch_size=1, gradient_accumulation_steps=16)
OASST1 = DatasetShape(num_examples=9_846, avg_tokens=300, max_tokens=512)
GIB = 1024**3


def run(**changes: Any) -> EstimateResult:
    args: dict[str, Any] = {
        "analysis": LLAMA31_70B,
        "dataset": CHAT,
        "methods": ["full", "lora", "qlora"],
        "training": TrainingSpec(),
        "lora": LoraSpec(),
        "qlora": QLoraSpec(),
        "hardware": HardwareSpec(gpu="H100-80GB-SXM"),
        "catalog": CATALOG,
    }
    args.update(changes)
    return estimate(**args)


def levers(result: MethodResult) -> set[str]:
    assert result.training is not None
    return {lever.lever for lever in result.training.levers}


def test_70b_on_h100_runs_on_one_node_with_the_levers_it_names() -> None:
    result = run()
    chosen = result.recommendation.method
    assert chosen is not None
    best = result.results[chosen]
    assert best.fits and best.runnable and best.num_gpus <= 8 and best.nodes == 1
    assert best.gpu == "H100-80GB-SXM"
    assert "gradient_checkpointing" in levers(best)  # 2,048-token activations need it
    assert best.training is not None and best.training.gradient_checkpointing
    for lever in best.training.levers:
        assert lever.chosen_by == "planner" and "GiB per GPU must fit" in lever.why
    # without the levers LoRA would not fit so few GPUs: pinned off, it needs more
    pinned = run(
        methods=["lora"],
        training=TrainingSpec(
            gradient_checkpointing=False, optimizer="adamw", adapter_dtype="fp32"
        ),
    ).results[Method.LORA]
    assert pinned.training is not None and not pinned.training.levers
    assert pinned.num_gpus > best.num_gpus or not pinned.fits or not pinned.runnable
    # every method's result is a plan a worker can run
    assert all(r.runnable and r.nodes == 1 for r in result.results.values())


def guanaco(gpu: str, training: TrainingSpec = GUANACO_TRAINING) -> MethodResult:
    """The QLoRA paper's 65B run, planned on one `gpu`."""
    return run(
        analysis=LLAMA65,
        dataset=OASST1,
        methods=["qlora"],
        training=training,
        lora=GUANACO_LORA,
        hardware=HardwareSpec(gpu=gpu, num_gpus=1),
    ).results[Method.QLORA]


def test_65b_qlora_fits_one_48gb_gpu_with_the_qlora_papers_levers() -> None:
    # An RTX A6000 (48 GiB): the planner turns on what the paper ran with, gradient
    # checkpointing, bf16 adapters and a paged optimizer, and it fits even at the high bound
    a6000 = guanaco("RTX-A6000")
    assert a6000.fits and a6000.num_gpus == 1 and not a6000.tight
    assert {"gradient_checkpointing", "adapter_bf16", "paged_optimizer"} <= levers(a6000)
    assert a6000.training is not None
    assert a6000.training.gradient_checkpointing and a6000.training.adapter_dtype == "bf16"
    assert a6000.training.optimizer == "paged_adamw_8bit" and a6000.memory.pageable_bytes > 0
    must_fit = a6000.memory.per_gpu_bytes - a6000.memory.pageable_bytes
    assert must_fit <= a6000.memory.high_bytes - a6000.memory.pageable_bytes <= 48 * GIB
    # the global batch stays the paper's 1 x 16
    assert (a6000.training.micro_batch_size, a6000.training.gradient_accumulation_steps) == (1, 16)
    # An L40S (45 GiB usable): it fits at the expected peak with checkpointing and bf16 adapters
    l40s = guanaco("L40S")
    assert l40s.fits and l40s.num_gpus == 1
    assert {"gradient_checkpointing", "adapter_bf16"} <= levers(l40s)
    # Without any lever it fits neither: the levers are what make one 48 GB GPU enough
    plain = GUANACO_TRAINING.model_copy(
        update={"gradient_checkpointing": False, "optimizer": "adamw", "adapter_dtype": "fp32"}
    )
    for gpu in ("RTX-A6000", "L40S"):
        unlevered = guanaco(gpu, plain)
        assert not unlevered.fits and unlevered.cost_usd is None
        assert unlevered.memory.per_gpu_bytes > unlevered.gpu_memory_bytes


def test_a_lever_memory_does_not_need_stays_off() -> None:
    small = run(analysis=LLAMA31_8B, methods=["lora"], hardware=HardwareSpec(gpu="H200"))
    lora = small.results[Method.LORA]
    assert lora.fits and lora.training is not None
    assert lora.training.levers == [] and lora.training.optimizer == "adamw"
    assert not lora.training.gradient_checkpointing and lora.training.adapter_dtype == "fp32"


def test_a_lever_the_request_sets_is_kept_and_said() -> None:
    asked = run(
        analysis=LLAMA31_8B,
        methods=["lora"],
        training=TrainingSpec(gradient_checkpointing=True, optimizer="adamw_8bit"),
        hardware=HardwareSpec(gpu="H200"),
    ).results[Method.LORA]
    assert asked.training is not None
    assert asked.training.gradient_checkpointing and asked.training.optimizer == "adamw_8bit"
    assert {(lever.lever, lever.chosen_by) for lever in asked.training.levers} == {
        ("gradient_checkpointing", "request"),
        ("optimizer_8bit", "request"),
    }


def test_a_large_micro_batch_is_split_keeping_the_global_batch() -> None:
    training = TrainingSpec(micro_batch_size=16, gradient_accumulation_steps=2, seq_len=2048)
    result = run(
        analysis=LLAMA31_8B,
        methods=["lora"],
        training=training.model_copy(update={"gradient_checkpointing": False}),
        hardware=HardwareSpec(gpu="A100-80GB", num_gpus=1),
    ).results[Method.LORA]
    assert result.fits and result.training is not None
    split = result.training
    assert split.micro_batch_size < 16 and "micro_batch" in levers(result)
    assert split.micro_batch_size * split.gradient_accumulation_steps == 32
    assert not split.gradient_checkpointing  # pinned off: the split is what makes it fit
    # the optimizer steps are the same global batches of 32 sequences
    examples = CHAT.num_examples
    assert examples is not None and result.steps == -(-examples // 32)


def test_lever_choices_leave_pinned_levers_alone() -> None:
    pinned = TrainingSpec(gradient_checkpointing=False, optimizer="adamw", adapter_dtype="fp32")
    assert [c.levers for c in lever_choices(pinned, method=Method.LORA)] == [()]
    open_ = lever_choices(TrainingSpec(micro_batch_size=4), method=Method.QLORA)
    assert open_[0].levers == () and set(open_[-1].levers) == {
        "optimizer_8bit",
        "paged_optimizer",
        "adapter_bf16",
        "micro_batch",
        "gradient_checkpointing",
    }
    # full fine-tuning has no adapters; a CPU has no unified memory to page to
    full_cpu = lever_choices(TrainingSpec(), method=Method.FULL, pageable=False)
    assert set(full_cpu[-1].levers) == {"optimizer_8bit", "gradient_checkpointing"}


def test_a_plan_beyond_one_node_is_shown_never_recommended() -> None:
    # Pinned to no levers, LoRA on 70B fits H100s only beyond one node (32 over 4 nodes)
    pinned = TrainingSpec(gradient_checkpointing=False, optimizer="adamw", adapter_dtype="fp32")
    result = run(methods=["lora"], training=pinned)
    lora = result.results[Method.LORA]
    assert lora.fits and not lora.runnable and lora.num_gpus > 8 and lora.nodes > 1
    assert any("a job runs on one node" in n for n in lora.notes)
    # where only H100s are to be had, the plans that fit are listed, each marked
    only_h100 = run(methods=["lora"], training=pinned, available_gpus=["H100-80GB-SXM"])
    big = [p for p in only_h100.plans[Method.LORA] if p.fits]
    assert big and all(p.num_gpus > 8 and not p.runnable for p in big)
    assert all("one node" in (p.reason or "") and p.cost_usd is not None for p in big)
    # it is not recommended; the reason names what a worker can run instead
    assert result.recommendation.method is None
    alternative = next(p for p in result.plans[Method.LORA] if p.runnable and p.fits)
    assert alternative.num_gpus <= 8
    text = " ".join(result.recommendation.reasons)
    assert "is not something a worker can run" in text
    assert f"{alternative.num_gpus}x {alternative.gpu}" in text
    # a smaller fleet: 4 GPUs per node
    four = run(methods=["lora"], fleet=Fleet(gpus_per_node=4))
    assert all(p.num_gpus <= 4 for p in four.plans[Method.LORA] if p.runnable)
    best = four.results[Method.LORA]
    assert best.runnable and best.num_gpus <= 4 and four.recommendation.method is Method.LORA
    # a GPU kind no worker serves is not runnable either
    served = run(methods=["lora"], fleet=Fleet(gpu_kinds=frozenset({"A100-80GB"})))
    assert not served.results[Method.LORA].runnable
    assert "no worker serves H100-80GB-SXM" in " ".join(served.results[Method.LORA].notes)
    assert all(p.gpu == "A100-80GB" for p in served.plans[Method.LORA] if p.runnable)


def test_a_whole_instance_is_used_or_its_idle_gpus_named() -> None:
    # aws rents H100s only as p5.48xlarge (8 GPUs)
    on_aws = run(
        analysis=LLAMA31_8B,
        hardware=HardwareSpec(gpu="H100-80GB-SXM", provider="aws"),
    )
    for result in on_aws.results.values():
        assert result.num_gpus == result.billed_gpus == 8 and result.idle_gpus == 0
    for plans in on_aws.plans.values():
        for plan in plans:
            if plan.cost_usd is not None and plan.provider == "aws":
                assert plan.num_gpus == plan.billed_gpus
    # pinned to one GPU, the idle seven are named with what they cost
    one = run(
        analysis=LLAMA31_8B,
        methods=["lora"],
        hardware=HardwareSpec(gpu="H100-80GB-SXM", provider="aws", num_gpus=1),
    )
    lora = one.results[Method.LORA]
    assert lora.billed_gpus == 8 and lora.idle_gpus == 7
    assert lora.cost_usd is not None and lora.idle_cost_usd is not None
    assert abs(lora.idle_cost_usd - lora.cost_usd * 7 / 8) < 1e-9
    note = next(n for n in lora.notes if "idle" in n)
    assert "7 of the 8 GPUs" in note and f"${lora.idle_cost_usd:,.2f}" in note
    assert any("7 of the 8 GPUs" in r for r in one.recommendation.reasons)
