"""Where jobs meet estimates: load the one named, or make one from the job's body.

Kept apart from the jobs service so the shape of a stored estimate request (app/estimates
`EstimateIn`, stored with `model_dump(mode="json", exclude_none=True)`) is read in one place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from app.auth.service import Principal
from app.auth.tenancy import can_see
from app.catalog.schemas import ModelPathIn
from app.errors import InvalidInput, NotFound
from app.estimates.schemas import EstimateIn
from app.estimates.service import Prepared, prepare_detached
from app.estimator.model_notes import worker_refusal
from app.estimator.results import EstimateResult
from app.jobs.schemas import JobIn
from app.kit.paths import relative_to_root
from app.models import Estimate


def resolve(
    session: Session, *, job_in: JobIn, principal: Principal, prepared: Prepared | None = None
) -> Estimate:
    """The estimate named by `estimate_id`, or a new one for this body (flushed, not
    committed): `prepared` (from `prepare`) when the route computed it already."""
    if job_in.estimate_id is not None:
        row = session.get(Estimate, job_in.estimate_id)
        if row is None or not can_see(
            principal, team=row.team, created_by_key_id=row.created_by_key_id
        ):
            raise InvalidInput(f"no estimate with id {job_in.estimate_id!r}", field="estimate_id")
        return row

    if prepared is None:
        prepared = prepare(job_in=job_in, principal=principal)
    out = prepared.store(session, principal=principal)
    row = session.get(Estimate, out.id)
    assert row is not None  # just flushed by the estimates service
    return row


def prepare(*, job_in: JobIn, principal: Principal) -> Prepared:
    """Compute (not store) the estimate a body without estimate_id implies.

    A short read-only transaction of its own; no connection is held while the estimator runs.
    The job's transaction stores it with the job, so a refused job leaves no estimate behind.
    """
    try:
        return prepare_detached(estimate_in=_estimate_request(job_in), principal=principal)
    except NotFound as exc:  # an unknown catalog model: a bad field of this body, not a 404 URL
        raise InvalidInput(exc.detail, field="model") from None


def _estimate_request(job_in: JobIn) -> EstimateIn:
    """The estimate request this job body implies: one method, its model, dataset and settings."""
    assert job_in.model is not None  # JobIn's validator requires it without estimate_id
    model: str | dict[str, str | None] = job_in.model.hub_id or {"path": job_in.model.path}
    body: dict[str, Any] = {
        "model": model,
        "dataset": {"dataset_id": job_in.dataset_id},
        "methods": [str(job_in.method)],
    }
    for name in ("training", "lora", "qlora", "hardware"):
        value = getattr(job_in, name)
        if value is not None:
            body[name] = value.model_dump(mode="json")
    try:
        return EstimateIn.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidInput(f"{where}: {first['msg']}", field=where) from None


def _request(estimate: Estimate) -> EstimateIn:
    """The stored request (`EstimateIn` as dumped, none left out) read back as its model."""
    return EstimateIn.model_validate(estimate.request)


def runnable_model(estimate: Estimate) -> dict[str, str] | None:
    """The estimate's model as a job loads it: a local path, or a catalog id as a hub id."""
    model = _request(estimate).model
    if isinstance(model, ModelPathIn):
        return {"path": model.path}
    if isinstance(model, str):
        return {"hub_id": model}
    return None  # an inline config: there are no weights to train


def result_of(estimate: Estimate) -> EstimateResult:
    """The stored result read back as the estimator's model."""
    return EstimateResult.model_validate(estimate.result)


def untrainable(result: EstimateResult) -> str | None:
    """Why the worker cannot train the estimate's model (encoder-decoder), or None."""
    model = result.model
    return worker_refusal(model_type=model.model_type, is_encoder_decoder=model.is_encoder_decoder)


def dataset_id(estimate: Estimate) -> str | None:
    """The stored dataset the estimate was made for, if any."""
    return _request(estimate).dataset.dataset_id


def settings_of(estimate: Estimate) -> dict[str, dict[str, Any]]:
    """The training, LoRA and QLoRA settings the estimate was made with (as stored)."""
    request = _request(estimate)
    return {
        "training": request.training.model_dump(mode="json", exclude_unset=True),
        "lora": request.lora.model_dump(mode="json", exclude_unset=True),
        "qlora": request.qlora.model_dump(mode="json", exclude_unset=True),
    }


def runs_as_estimated(estimate: Estimate, *, model: dict[str, str], dataset: str) -> bool:
    """Whether a job training `model` (a confined path or a hub id) on `dataset` runs what
    `estimate` was made for: the same model and the stored dataset the estimate counted. Only
    such jobs calibrate estimates (app/calibration/samples.py)."""
    path = model.get("path")
    ref = f"path:{relative_to_root(Path(path))}" if path is not None else model["hub_id"]
    return ref == estimate.model_ref and dataset == dataset_id(estimate)
