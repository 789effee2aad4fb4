"""Where jobs meet estimates: load the one named, or make one from the job's body.

Kept apart from the jobs service so the shape of a stored estimate request (app/estimates
`EstimateIn`, stored with `model_dump(mode="json", exclude_none=True)`) is read in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
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
from app.kit.paths import confine_model_path, relative_to_root
from app.models import Dataset, Estimate


def resolve(
    session: Session, *, job_in: JobIn, principal: Principal, prepared: Prepared | None = None
) -> Estimate:
    """The estimate the job runs by (flushed, not committed): `prepared` when the route
    computed one (for a body without estimate_id, or again for what differs from the estimate
    named: `replan`), else the estimate named by `estimate_id`, else a new one for this body."""
    if job_in.estimate_id is not None and prepared is None:
        return named(session, job_in=job_in, principal=principal)

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


@dataclass(frozen=True)
class Replan:
    """A job whose dataset or model differs from the estimate it names, estimated again for
    what it will really run."""

    from_estimate_id: str
    differences: tuple[str, ...]
    prepared: Prepared

    def as_json(self) -> dict[str, Any]:
        """What the job's snapshot says about it."""
        return {"from_estimate_id": self.from_estimate_id, "differences": list(self.differences)}


def named(session: Session, *, job_in: JobIn, principal: Principal) -> Estimate:
    """The estimate `estimate_id` names, if the caller may see it."""
    row = session.get(Estimate, job_in.estimate_id)
    if row is None or not can_see(
        principal, team=row.team, created_by_key_id=row.created_by_key_id
    ):
        raise InvalidInput(f"no estimate with id {job_in.estimate_id!r}", field="estimate_id")
    return row


def _same_model(a: dict[str, str] | None, b: dict[str, str]) -> bool:
    if a is None or a.keys() != b.keys():
        return False
    if "path" in a:  # the same folder, however it was written
        field = "model.path"
        return confine_model_path(a["path"], field=field) == confine_model_path(
            b["path"], field=field
        )
    return a == b


def differences(
    session: Session, *, job_in: JobIn, principal: Principal
) -> tuple[EstimateIn, tuple[str, ...]] | None:
    """What the job's body changes from the estimate it names (its dataset, its model), with
    the estimate request for what the job will really run; None when it changes nothing."""
    if job_in.estimate_id is None:
        return None
    estimate = named(session, job_in=job_in, principal=principal)
    request = _request(estimate)
    result = result_of(estimate)
    found: list[str] = []
    body = request.model_dump(mode="json", exclude_none=True, exclude_unset=True)
    body["methods"] = [str(job_in.method)]
    planned = request.dataset.dataset_id
    if job_in.dataset_id is not None and job_in.dataset_id != planned:
        row = session.get(Dataset, job_in.dataset_id)
        if row is None or not can_see(
            principal, team=row.team, created_by_key_id=row.created_by_key_id
        ):
            raise InvalidInput(f"no dataset with id {job_in.dataset_id!r}", field="dataset_id")
        made_for = f"dataset {planned}" if planned else "a dataset shape"
        found.append(
            f"dataset: the estimate was made for {made_for} ({result.dataset.num_sequences:,} "
            f"sequences, {result.dataset.tokens_per_epoch:,.0f} tokens per epoch); the job trains "
            f"on dataset {row.id} ({row.num_examples:,} examples, {row.total_tokens:,} tokens)"
        )
        body["dataset"] = {"dataset_id": row.id}
    if job_in.model is not None:
        wanted = job_in.model.model_dump(exclude_none=True)
        if not _same_model(runnable_model(estimate), wanted):
            found.append(
                f"model: the estimate was made for {estimate.model_ref}; the job trains "
                f"{job_in.model.describe()}"
            )
            body["model"] = wanted.get("hub_id") or {"path": wanted["path"]}
    if not found:
        return None
    try:
        return EstimateIn.model_validate(body), tuple(found)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidInput(f"{where}: {first['msg']}", field=where) from None


def replan(
    *,
    job_in: JobIn,
    principal: Principal,
    request: EstimateIn,
    found: tuple[str, ...],
) -> Replan:
    """Estimate again what the job will really run (CPU work: hold no connection)."""
    assert job_in.estimate_id is not None
    try:
        prepared = prepare_detached(estimate_in=request, principal=principal)
    except NotFound as exc:  # an unknown catalog model named by the job
        raise InvalidInput(exc.detail, field="model") from None
    return Replan(job_in.estimate_id, found, prepared)


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
