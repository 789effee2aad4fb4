"""The verdict: which method to use, and why, in plain sentences with the numbers behind them.

Parameter-efficient fine-tuning is the default: LoRA matches full fine-tuning on instruction
tuning at a fraction of the memory, and one base model can serve many small adapters. Full
fine-tuning is recommended only when the inputs justify it (a large domain shift, or LoRA
already tried and found insufficient) and the hardware and budget allow it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from app.estimator.evidence import Evidence
from app.estimator.pricing import VariantStorage
from app.estimator.results import MethodResult, Plan, Recommendation
from app.estimator.spec import Method

DomainShift = Literal["low", "medium", "high"]

# QLoRA trades a 4-bit base (slower steps, quantization error) for memory; prefer it over LoRA
# only when LoRA cannot run, or QLoRA saves at least this share of the LoRA bill.
QLORA_MIN_SAVING = 0.25

CITE_LORA_PARITY = (
    "LoRA matches full fine-tuning on instruction tuning and similar small shifts "
    "(Hu et al. 2021, LoRA; Dettmers et al. 2023, QLoRA: 4-bit QLoRA matches 16-bit)"
)
CITE_LORA_LEARNS_LESS = (
    "LoRA learns less than full fine-tuning on large domain shifts such as code or math "
    "continued pretraining (Biderman et al. 2024, 'LoRA Learns Less and Forgets Less')"
)
CITE_QLORA = "QLoRA matches 16-bit LoRA quality with a 4-bit base (Dettmers et al. 2023, QLoRA)"
NAMES = {Method.FULL: "full fine-tuning", Method.LORA: "LoRA", Method.QLORA: "QLoRA"}
GIB, MIB = 1024**3, 1024**2
# Two costs within this share of each other are "about the same" in a comparison sentence.
SAME_COST = 0.005


def _first_upper(text: str) -> str:
    return text[:1].upper() + text[1:]


def _usd(value: float | None) -> str:
    return "an unknown price" if value is None else f"${value:,.2f}"


def _size(n_bytes: float) -> str:
    return f"{n_bytes / GIB:,.1f} GiB" if n_bytes >= GIB else f"{n_bytes / MIB:,.1f} MiB"


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / GIB:.1f} GiB"


def _hardware(r: MethodResult) -> str:
    return f"{r.num_gpus}x {r.gpu} ({_gib(r.memory.per_gpu_bytes)} per GPU)"


def _where(r: MethodResult) -> str:
    return f"{r.num_gpus}x {r.gpu}, {r.hours:.1f} h"


def _blocker(r: MethodResult, budget: float | None, plans: list[Plan]) -> str | None:
    """Why a method cannot be used as estimated, or None if it can."""
    name = NAMES[r.method]
    fit = next((p for p in plans if p.fits and p.runnable and p.cost_usd is not None), None)
    if not r.fits:
        need = r.memory.per_gpu_bytes - r.memory.pageable_bytes
        alt = (
            f"; the cheapest option that fits is {p_desc(fit)}"
            if fit is not None
            else "; nothing in the catalog fits it"
        )
        return (
            f"{name} does not fit {r.num_gpus}x {r.gpu}: it needs {_gib(need)} per GPU, "
            f"more than the GPU's {_gib(r.gpu_memory_bytes)}{alt}"
        )
    if not r.runnable:
        alt = (
            f"; the cheapest option a worker can run is {p_desc(fit)}"
            if fit is not None
            else "; no option in the catalog fits what a worker can run"
        )
        where = "nodes" if r.nodes > 1 else "node"
        return (
            f"{name} on {r.num_gpus}x {r.gpu} ({r.nodes} {where}) is not something a worker "
            f"can run{alt}"
        )
    if budget is not None and r.cost_usd is not None and r.cost_usd > budget:
        return f"{name} costs {_usd(r.cost_usd)}, over the {_usd(budget)} budget"
    return None


def p_desc(plan: Plan) -> str:
    """A plan in a few words: '2x A100-80GB at lambda for $41.20'."""
    where = f" at {plan.provider}" if plan.provider else ""
    return f"{plan.num_gpus}x {plan.gpu}{where} for {_usd(plan.cost_usd)}"


def compare_costs(a: float, b: float) -> str:
    """`a` against `b` in the direction the numbers go: '4.1x', '12% less than', 'about'."""
    if abs(a - b) <= SAME_COST * max(a, b):
        return "about the same as"
    if b <= 0:
        return "more than"
    if a > b:
        return f"{a / b:.1f}x" if a >= 1.1 * b else f"{(a - b) / b:.0%} more than"
    return f"{(b - a) / b:.0%} less than"


def _ratio_sentence(a: MethodResult, b: MethodResult) -> str | None:
    if a.cost_usd is None or b.cost_usd is None or b.cost_usd <= 0:
        return None
    return (
        f"{_first_upper(NAMES[a.method])} needs {_hardware(a)} and costs {_usd(a.cost_usd)} "
        f"over {a.hours:.1f} h: {compare_costs(a.cost_usd, b.cost_usd)} {NAMES[b.method]}'s "
        f"{_usd(b.cost_usd)} ({_where(b)})."
    )


def storage_sentence(storage: VariantStorage, base_bytes: int) -> str:
    """The storage argument for K task variants, with sizes and dollars."""
    k = storage.variants
    return (
        f"{k} task variants: {k} full checkpoints = {_size(storage.full_bytes)} of storage "
        f"({_usd(storage.full_usd)} over {storage.months:g} months at {storage.provider}) vs "
        f"{k} adapters = {_size(storage.adapter_bytes)} ({_usd(storage.adapter_usd)}), served "
        f"on one shared base model ({_size(base_bytes)}, kept whichever method is chosen)."
    )


def recommend(
    *,
    results: Mapping[Method, MethodResult],
    plans: Mapping[Method, list[Plan]],
    storage: VariantStorage | None = None,
    budget_usd: float | None = None,
    domain_shift: DomainShift | None = None,
    lora_tried_and_insufficient: bool = False,
    base_bytes: int | None = None,
    evidence: Evidence | None = None,
) -> Recommendation:
    """The recommended method among those estimated, with the reasons as sentences.

    `evidence` (a finished study of this model and dataset, or the team's finished jobs on it)
    decides whether full fine-tuning is
    justified in place of the `domain_shift` and `lora_tried_and_insufficient` the caller states.
    """
    blockers = {m: _blocker(r, budget_usd, plans.get(m, [])) for m, r in results.items()}
    usable = [m for m in results if blockers[m] is None]
    full_justified = domain_shift == "high" or lora_tried_and_insufficient
    reasons: list[str] = []
    why_full = (
        "LoRA was already tried and found insufficient"
        if lora_tried_and_insufficient
        else "the domain shift is high"
    )
    if evidence is not None:
        full_justified = evidence.lora_insufficient
        why_full = f"LoRA was tried and is not enough: {evidence.summary()}"
    peft = next((m for m in (Method.LORA, Method.QLORA) if m in usable), None)

    choice: Method | None
    if full_justified and Method.FULL in usable:
        choice = Method.FULL
        reasons.append(f"Full fine-tuning is justified: {why_full}; {CITE_LORA_LEARNS_LESS}.")
    elif peft is not None:
        choice = _pick_peft(results, usable, reasons)
        if full_justified and Method.FULL in results:
            why_not = str(blockers[Method.FULL]).removeprefix(NAMES[Method.FULL] + " ")
            reasons.append(f"Full fine-tuning would be justified ({why_full}), but it {why_not}.")
        elif full_justified:
            reasons.append(
                f"Full fine-tuning may be justified ({why_full}; {CITE_LORA_LEARNS_LESS}): "
                "estimate it too."
            )
        elif evidence is not None:
            reasons.append(
                f"Full fine-tuning is not needed on the evidence: {evidence.summary()}; "
                f"{evidence.rule}."
            )
        elif Method.FULL in results:
            shift = f"domain shift is {domain_shift}" if domain_shift else "no domain shift given"
            reasons.append(
                f"Full fine-tuning is not needed ({shift}, LoRA not yet tried): {CITE_LORA_PARITY}."
            )
        else:
            reasons.append(f"{CITE_LORA_PARITY}.")
        if domain_shift == "medium":
            reasons.append(
                "With a medium domain shift, prefer a higher rank or all-linear targets: "
                "the gap to full fine-tuning narrows as LoRA trains more weights "
                "(Biderman et al. 2024)."
            )
    elif Method.FULL in usable:
        choice = Method.FULL
        if evidence is not None:
            reasons.append(f"Evidence: {evidence.summary()}.")
        reasons.append(
            "Full fine-tuning is the only estimated method that can run; "
            "estimate LoRA too before paying for it."
        )
    else:
        choice = None
        reasons.append("No estimated method can run on the hardware and budget given.")

    if evidence is not None and (domain_shift == "high" or lora_tried_and_insufficient):
        reasons.append(
            "The evidence decides whether full fine-tuning is justified, in place of "
            "the domain_shift or lora_tried_and_insufficient given with the request."
        )
    for m, blocker in blockers.items():
        if blocker is not None and m != choice and not (m is Method.FULL and full_justified):
            reasons.append(_first_upper(blocker) + ".")
    if choice is not None:
        others = [m for m in results if m != choice and blockers[m] is None]
        reasons.extend(
            s for s in (_ratio_sentence(results[m], results[choice]) for m in others) if s
        )
    if choice is not None and results[choice].idle_gpus:
        chosen = results[choice]
        idle_note = next((n for n in chosen.notes if "idle" in n), None)
        if idle_note is not None:
            reasons.append(_first_upper(idle_note) + ".")
    if choice is not None and results[choice].tight:
        chosen = results[choice]
        high = chosen.memory.high_bytes - chosen.memory.pageable_bytes
        reasons.append(
            f"Tight fit: {chosen.gpu}'s {_gib(chosen.gpu_memory_bytes)} hold the expected peak "
            f"but not the high estimate ({_gib(high)}); it may run out of memory. A larger GPU "
            "or more GPUs leave room."
        )
    if storage is not None and storage.variants > 1 and base_bytes is not None:
        reasons.append(storage_sentence(storage, base_bytes))
    return Recommendation(method=choice, reasons=reasons)


def _pick_peft(
    results: Mapping[Method, MethodResult], usable: list[Method], reasons: list[str]
) -> Method:
    lora, qlora = results.get(Method.LORA), results.get(Method.QLORA)
    if Method.LORA in usable and Method.QLORA in usable and lora and qlora:
        if (
            lora.cost_usd is not None
            and qlora.cost_usd is not None
            and qlora.cost_usd <= (1 - QLORA_MIN_SAVING) * lora.cost_usd
        ):
            reasons.append(
                f"QLoRA costs {_usd(qlora.cost_usd)} on {_hardware(qlora)}, "
                f"{compare_costs(qlora.cost_usd, lora.cost_usd)} LoRA's "
                f"{_usd(lora.cost_usd)}: the 4-bit base lets a cheaper GPU do it; {CITE_QLORA}."
            )
            return Method.QLORA
        reasons.append(
            f"LoRA fits {_hardware(lora)} and costs {_usd(lora.cost_usd)} ({lora.hours:.1f} h); "
            + _why_not_qlora(lora, qlora)
        )
        return Method.LORA
    if Method.LORA in usable and lora:
        reasons.append(
            f"LoRA fits {_hardware(lora)} and costs {_usd(lora.cost_usd)} ({lora.hours:.1f} h)."
        )
        return Method.LORA
    assert qlora is not None
    reasons.append(
        f"QLoRA is what the memory allows: it fits {_hardware(qlora)} and costs "
        f"{_usd(qlora.cost_usd)} ({qlora.hours:.1f} h); {CITE_QLORA}."
    )
    return Method.QLORA


def _why_not_qlora(lora: MethodResult, qlora: MethodResult) -> str:
    """Why LoRA over a QLoRA that also runs, saying only what the numbers say."""
    if lora.cost_usd is None or qlora.cost_usd is None:
        return "QLoRA's price is not known to compare."
    memory = ""
    if qlora.memory.per_gpu_bytes < lora.memory.per_gpu_bytes:
        memory = f"needs less memory ({_gib(qlora.memory.per_gpu_bytes)} per GPU) but "
    if qlora.cost_usd >= lora.cost_usd:
        return (
            f"QLoRA {memory}costs {_usd(qlora.cost_usd)}, "
            f"{compare_costs(qlora.cost_usd, lora.cost_usd)} LoRA, in {qlora.hours:.1f} h."
        )
    return (
        f"QLoRA {memory}would save only {_usd(lora.cost_usd - qlora.cost_usd)} "
        f"({compare_costs(qlora.cost_usd, lora.cost_usd)} LoRA), under the "
        f"{QLORA_MIN_SAVING:.0%} that justifies its slower 4-bit steps ({qlora.hours:.1f} h)."
    )
