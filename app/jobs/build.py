"""Build a submitted job's `JobSpec` and check it against the model it will train, at submit.

Everything a worker would otherwise find wrong only in its training child (a field out of range,
LoRA target modules the model does not have, a model folder without a config) is a 422 here,
naming the field.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from app.catalog.model_catalog import catalog_model_ids
from app.catalog.resolve import resolve_model
from app.catalog.schemas import ModelPathIn
from app.errors import InvalidInput
from app.estimator.errors import EstimateInputError
from app.estimator.lora import lora_targets
from app.estimator.model_analysis import ModelAnalysis
from app.estimator.spec import Method
from app.jobs.spec import JobSpec


def build_spec(values: dict[str, Any], *, other_model: bool) -> JobSpec:
    """The job spec of these values; a 422 naming the first bad field.

    `other_model`: the job trains another model than the one its estimate analysed, so its
    LoRA targets are checked against that model here (the estimator checked them against its
    own). The analysis is cached per config, and only this case pays for it while the
    request holds a database connection.
    """
    try:
        spec = JobSpec.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "spec"
        raise InvalidInput(f"{where}: {first['msg']}", field=where) from None
    if other_model:
        check_lora_targets(spec)
    return spec


def _analysis(spec: JobSpec) -> ModelAnalysis | None:
    """The analysis of the model the worker will load; None for a hub id outside the catalog
    (its config is only known once the worker downloads it)."""
    if spec.model.path is not None:
        return resolve_model(ModelPathIn(path=spec.model.path))[0]
    hub_id = spec.model.hub_id or ""
    return resolve_model(hub_id)[0] if hub_id in catalog_model_ids() else None


def check_lora_targets(spec: JobSpec) -> None:
    """Refuse LoRA/QLoRA target modules the job's model lacks (peft would fail in the worker).

    The estimate checked its targets against its own model; a job may train another one (its
    `model` given beside an `estimate_id`), so they are checked against the model it loads.
    """
    if spec.method is Method.FULL:
        return
    analysis = _analysis(spec)
    if analysis is None:
        return
    try:
        lora_targets(analysis, spec.lora)
    except EstimateInputError as exc:  # targets the model does not have
        raise InvalidInput(str(exc), field=exc.field) from None
