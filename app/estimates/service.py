"""Estimates: resolve the model and the dataset, price against the effective catalog, store.

`compute` is pure (no database) so that the CLI runs the very same path without a server;
`create` adds what only the service knows: uploaded datasets, price overrides, calibration.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth.service import Principal
from app.auth.tenancy import can_see, visible
from app.benefit import evidence
from app.catalog import Catalog, UnknownGpuError, UnknownProviderError
from app.catalog import service as catalog_service
from app.catalog.prices import ratecard, ratecard_service
from app.catalog.prices.staleness import stale_notes
from app.catalog.resolve import resolve_model, short_message
from app.config import get_settings
from app.datasets import service as datasets_service
from app.datasets.loss_tokens import APPROXIMATE, TruncationCheck
from app.datasets.tokens import GENERIC
from app.db import session_scope
from app.errors import InvalidInput, NotFound
from app.estimates import reuse
from app.estimates.schemas import EstimateIn, EstimateOut
from app.estimator.calibration_types import CalibrationTable
from app.estimator.errors import EstimateInputError
from app.estimator.evidence import Evidence
from app.estimator.fleet import Fleet
from app.estimator.model_analysis import ModelAnalysis
from app.estimator.results import EstimateResult, RangeOut
from app.estimator.spec import DatasetShape
from app.estimator.speed import DeviceSpeed
from app.kit import ids
from app.kit.pagination import keyset_page
from app.models import Dataset, Estimate, WorkerNode
from app.models.base import new_id, utcnow


def resolve_dataset(
    session: Session | None, *, estimate_in: EstimateIn, principal: Principal | None = None
) -> tuple[DatasetShape, str | None]:
    """The dataset shape to estimate for, and the uploaded dataset's id when one was named."""
    ref = estimate_in.dataset
    if ref.dataset_id is None:
        return ref.shape(), None
    if session is None or principal is None:
        raise InvalidInput("dataset_id needs the server's database", field="dataset.dataset_id")
    try:
        row = datasets_service.get(
            session, dataset_id=ref.dataset_id, principal=principal, by_prefix=False
        )
    except NotFound as exc:
        raise InvalidInput(exc.detail, field="dataset.dataset_id") from None
    return datasets_service.shape(row), row.id


def current_fleet(gpu_ids: Iterable[str]) -> Fleet:
    """What the workers can run, from the settings (TUNECOST_GPUS_PER_NODE, ..._MAX_NODES_PER_JOB,
    ..._FLEET_GPUS, matched to `gpu_ids`, the catalog's); an id the catalog does not know serves
    nothing."""
    settings = get_settings()
    kinds = None
    if settings.fleet_gpus is not None:
        known = {g.lower(): g for g in gpu_ids}
        kinds = frozenset(known[g.lower()] for g in settings.fleet_gpus if g.lower() in known)
    return Fleet(
        gpus_per_node=settings.gpus_per_node,
        nodes_per_job=settings.max_nodes_per_job,
        gpu_kinds=kinds,
    )


def current_calibration(session: Session, *, principal: Principal) -> CalibrationTable:
    """Fitted efficiency and memory factors per (GPU, method) from the tenant's finished jobs.

    Cached by the calibration service until another job of the tenant succeeds; where a
    (GPU, method) has too few jobs behind it, the engine keeps its priors and says `basis: prior`.
    """
    from app.calibration import service as calibration

    return calibration.current(session, principal=principal)


def measured_speeds(session: Session) -> dict[str, DeviceSpeed]:
    """The device speed live workers measured, per GPU kind (the most recently heard worker's).

    Estimates for a kind use it in place of the catalog's datasheet figures until calibration
    from finished jobs takes over (app/estimator/planner.py).
    """
    rows = session.execute(
        select(
            WorkerNode.gpu,
            WorkerNode.matmul_tflops,
            WorkerNode.memory_gbps,
            WorkerNode.host_s_per_layer,
        )
        .where(reuse.measured_live(reuse.heard_since()))
        .order_by(WorkerNode.last_seen_at)
    )
    out: dict[str, DeviceSpeed] = {}
    for gpu, tflops, gbps, host in rows:
        if tflops and gbps and host and tflops > 0 and gbps > 0 and host > 0:
            out[gpu] = DeviceSpeed(matmul_tflops=tflops, memory_gbps=gbps, host_s_per_layer=host)
    return out


def compute(
    *,
    estimate_in: EstimateIn,
    analysis: ModelAnalysis,
    dataset: DatasetShape,
    catalog: Catalog,
    calibration: CalibrationTable | None,
    speeds: Mapping[str, DeviceSpeed] | None = None,
    evidence: Evidence | None = None,
) -> EstimateResult:
    """Run the estimator; each input problem it detects becomes a 422 naming the field.

    Only the estimator's input errors are a client's fault: any other exception is a bug and
    goes on to the 500 handler.
    """
    from app.estimator import engine

    try:
        return engine.estimate(
            analysis=analysis,
            dataset=dataset,
            methods=list(estimate_in.methods),
            training=estimate_in.training,
            lora=estimate_in.lora,
            qlora=estimate_in.qlora,
            hardware=estimate_in.hardware,
            catalog=catalog,
            calibration=calibration,
            speeds=speeds,
            variants=estimate_in.variants,
            storage_months=estimate_in.storage_months,
            budget_usd=estimate_in.budget_usd,
            domain_shift=estimate_in.domain_shift,
            lora_tried_and_insufficient=estimate_in.lora_tried_and_insufficient,
            available_gpus=estimate_in.available_gpus,
            fleet=current_fleet(catalog.gpus),
            evidence=evidence,
        )
    except UnknownGpuError as exc:
        field = "hardware.gpu" if exc.gpu == estimate_in.hardware.gpu else "available_gpus"
        raise InvalidInput(str(exc), field=field, valid=exc.valid) from None
    except UnknownProviderError as exc:
        raise InvalidInput(str(exc), field="hardware.provider", valid=exc.valid) from None
    except EstimateInputError as exc:
        raise InvalidInput(short_message(str(exc)), field=exc.field, **exc.extra) from None


@dataclass(frozen=True)
class Inputs:
    """What an estimate reads from the database: dataset shape, catalog and calibration."""

    dataset: DatasetShape
    dataset_id: str | None
    catalog: Catalog
    calibration: CalibrationTable
    speeds: dict[str, DeviceSpeed] = field(default_factory=dict)
    evidence: Evidence | None = None  # the tenant's newest study of this model and dataset


def gather(
    session: Session, *, estimate_in: EstimateIn, principal: Principal, model_ref: str
) -> Inputs:
    """The database reads of an estimate, done in one short stretch before the CPU work."""
    dataset, dataset_id = resolve_dataset(session, estimate_in=estimate_in, principal=principal)
    return Inputs(
        dataset=dataset,
        dataset_id=dataset_id,
        catalog=catalog_service.effective_catalog(session),
        calibration=current_calibration(session, principal=principal),
        speeds=measured_speeds(session),
        evidence=evidence.latest(
            session,
            principal=principal,
            dataset_id=dataset_id,
            model_ref=model_ref,
            target_eval_loss=estimate_in.target_eval_loss,
        ),
    )


def create(session: Session, *, estimate_in: EstimateIn, principal: Principal) -> EstimateOut:
    """Estimate with the effective catalog and calibration, store it, and return it."""
    analysis, model_ref = resolve_model(estimate_in.model)
    inputs = gather(session, estimate_in=estimate_in, principal=principal, model_ref=model_ref)
    return store(
        session,
        estimate_in=estimate_in,
        result=estimate(estimate_in=estimate_in, analysis=analysis, inputs=inputs),
        model_ref=model_ref,
        dataset_id=inputs.dataset_id,
        principal=principal,
    )


@dataclass(frozen=True)
class Prepared:
    """An estimate computed and not yet stored."""

    estimate_in: EstimateIn
    result: EstimateResult
    model_ref: str
    dataset_id: str | None

    def store(self, session: Session, *, principal: Principal) -> EstimateOut:
        """Add its row to `session` (flushed)."""
        return store(
            session,
            estimate_in=self.estimate_in,
            result=self.result,
            model_ref=self.model_ref,
            dataset_id=self.dataset_id,
            principal=principal,
        )


def prepare_detached(*, estimate_in: EstimateIn, principal: Principal) -> Prepared:
    """Compute an estimate holding no connection during the CPU work.

    The model analysis and the estimator (seconds of CPU for a large config) run around one
    short read-only transaction (dataset, catalog, calibration); nothing is stored.
    """
    analysis, model_ref = resolve_model(estimate_in.model)
    with session_scope() as session:
        inputs = gather(session, estimate_in=estimate_in, principal=principal, model_ref=model_ref)
    result = estimate(estimate_in=estimate_in, analysis=analysis, inputs=inputs)
    return Prepared(estimate_in, result, model_ref, inputs.dataset_id)


def create_detached(*, estimate_in: EstimateIn, principal: Principal) -> EstimateOut:
    """`prepare_detached`, then the row stored in a short transaction of its own."""
    prepared = prepare_detached(estimate_in=estimate_in, principal=principal)
    with session_scope() as session:
        return prepared.store(session, principal=principal)


def create_or_reuse(*, estimate_in: EstimateIn, principal: Principal) -> tuple[str, bytes]:
    """POST /v1/estimates: the estimate's id and JSON (`EstimateOut`), stored once per content.

    The tenant's estimate of the same content (app/estimates/reuse.py: same request, model,
    dataset, catalog, calibration and UTC day) is answered as it was stored, without running
    the estimator or writing a row; otherwise as `create_detached`, its row carrying the key.
    A request this process answered already costs one query (`reuse.STAMPS`).
    """
    settings = get_settings()
    today, max_age = utcnow().date(), settings.price_max_age_days
    fleet = repr((settings.gpus_per_node, settings.max_nodes_per_job, settings.fleet_gpus))
    with session_scope() as session:
        where = reuse.request_key(
            session,
            estimate_in=estimate_in,
            principal=principal,
            price_max_age_days=max_age,
            fleet=fleet,
        )
        known = None if where is None else reuse.answers.get(where)
        if known is not None and known.day == today and known.stamps == reuse.stamps(session):
            return known.estimate_id, known.body
    analysis, model_ref = resolve_model(estimate_in.model)
    request = estimate_in.model_dump(mode="json", exclude_none=True)
    with session_scope() as session:
        stamps = reuse.stamps(session)  # before the reads they vouch for
        inputs = gather(session, estimate_in=estimate_in, principal=principal, model_ref=model_ref)
        evidence_key = inputs.evidence.key() if inputs.evidence is not None else ""
        key = reuse.content_key(
            request=request,
            model_ref=model_ref,
            config_hash=analysis.config_hash,
            # the study evidence cited on this dataset is part of what the answer rests on
            dataset=f"{inputs.dataset_id} {inputs.dataset.model_dump_json()} {evidence_key}",
            catalog_version=inputs.catalog.version,
            calibration=inputs.calibration,
            speeds=inputs.speeds,
            day=today,
            price_max_age_days=max_age,
            fleet=fleet,
        )
        found = reuse.find(session, key=key, principal=principal)
        body = b""
        if found is not None:
            body = reuse.responses.get(found) or _remember(
                to_out(get(session, estimate_id=found, principal=principal))
            )
    if found is None:
        result = estimate(estimate_in=estimate_in, analysis=analysis, inputs=inputs)
        with session_scope() as session:
            out = store(
                session,
                estimate_in=estimate_in,
                result=result,
                model_ref=model_ref,
                dataset_id=inputs.dataset_id,
                principal=principal,
                content_hash=key,
            )
        found, body = out.id, _remember(out)
    if where is not None:
        reuse.answers.put(where, reuse.Answer(found, body, stamps, today))
    return found, body


def _remember(out: EstimateOut) -> bytes:
    body = out.model_dump_json().encode()
    reuse.responses.put(out.id, body)
    return body


def estimate(*, estimate_in: EstimateIn, analysis: ModelAnalysis, inputs: Inputs) -> EstimateResult:
    """The CPU-bound part: the estimator run on the gathered inputs (no database)."""
    return compute(
        estimate_in=estimate_in,
        analysis=analysis,
        dataset=inputs.dataset,
        catalog=inputs.catalog,
        calibration=inputs.calibration,
        speeds=inputs.speeds,
        evidence=inputs.evidence,
    )


def store(
    session: Session,
    *,
    estimate_in: EstimateIn,
    result: EstimateResult,
    model_ref: str,
    dataset_id: str | None,
    principal: Principal,
    content_hash: str | None = None,
) -> EstimateOut:
    """Add the estimate's row (flushed) and return its API view.

    `content_hash`: its reuse key (app/estimates/reuse.py); none for the estimate a job submit
    makes for itself (a refused submit deletes it, so it must never be handed to anyone else).
    """
    # The organisation's negotiated rates beside the list prices (app/catalog/prices/ratecard.py).
    today = utcnow().date()
    result = ratecard.apply(result, lines=ratecard_service.lines(session), on=today)
    result = _widened_for_token_counts(session, dataset_id=dataset_id, result=result)
    request = estimate_in.model_dump(mode="json", exclude_none=True)
    stored = result.model_dump(mode="json")
    check = _dataset_check(session, dataset_id=dataset_id, estimate_in=estimate_in, result=result)
    if check is not None:
        stored["dataset_check"] = {
            "seq_len": check.seq_len,
            "examples": check.examples,
            "dropped_no_loss_tokens": check.dropped,
            "seq_len_keeping_all": check.seq_len_keeping_all,
            "seq_len_keeping_95pct": check.seq_len_keeping_most,
            "approximate": check.approximate,
            "tokenizer": check.tokenizer,
            "loss_tokens": check.loss_tokens,
        }
        if check.dropped:
            stored["notes"] = [*stored["notes"], check.note()]
    stale = stale_notes(result, today=today, max_age_days=get_settings().price_max_age_days)
    stored["notes"] = [*stored["notes"], *stale]
    row = Estimate(
        id=new_id("est"),
        model_ref=model_ref[:300],
        catalog_version=result.catalog_version,
        request=request,
        result=stored,
        created_by_key_id=principal.key_id,
        team=principal.team,
        content_hash=content_hash,
    )
    session.add(row)
    session.flush()
    return to_out(row)


def _widened_for_token_counts(
    session: Session, *, dataset_id: str | None, result: EstimateResult
) -> EstimateResult:
    """Time and cost intervals widened by how far an approximate token count may be off.

    Hours scale with the tokens processed, so a count within +-e of the truth moves both bounds
    by that factor: [low x (1 - e), high x (1 + e)]."""
    row = session.get(Dataset, dataset_id) if dataset_id else None
    if row is None or row.tokenizer != APPROXIMATE:
        return result
    error = float(row.stats.get("token_error") or GENERIC.error)  # older uploads: the rule

    def wide(r: RangeOut | None) -> RangeOut | None:
        return None if r is None else RangeOut(low=r.low * (1 - error), high=r.high * (1 + error))

    results = {
        method: r.model_copy(
            update={
                "hours_range": wide(r.hours_range),
                "gpu_hours_range": wide(r.gpu_hours_range),
                "cost_usd_range": wide(r.cost_usd_range),
            }
        )
        for method, r in result.results.items()
    }
    plans = {
        method: [
            p.model_copy(
                update={
                    "hours_range": wide(p.hours_range),
                    "cost_usd_range": wide(p.cost_usd_range),
                }
            )
            for p in options
        ]
        for method, options in result.plans.items()
    }
    note = (
        f"the dataset's tokens were counted by an approximation ({row.stats.get('tokenizer_note')})"
        f": the time and cost ranges are widened by {error:.0%} each way"
    )
    return result.model_copy(
        update={"results": results, "plans": plans, "notes": [*result.notes, note]}
    )


def _dataset_check(
    session: Session, *, dataset_id: str | None, estimate_in: EstimateIn, result: EstimateResult
) -> TruncationCheck | None:
    """An uploaded dataset truncated to the estimate's seq_len: how many examples drop out."""
    if dataset_id is None or estimate_in.training.packing:
        return None  # packing cuts one token stream into blocks: no example is dropped whole
    row = session.get(Dataset, dataset_id)  # loaded by resolve_dataset: no second query
    if row is None:
        return None
    # None when the dataset was uploaded before these statistics were recorded
    return datasets_service.truncation_check(row, seq_len=result.dataset.seq_len)


def to_out(row: Estimate) -> EstimateOut:
    """The API view of a stored estimate."""
    return EstimateOut.model_validate(
        {
            **row.result,
            "id": row.id,
            "created_at": row.created_at,
            "model_ref": row.model_ref,
            "dataset_id": row.request.get("dataset", {}).get("dataset_id"),
            "request": row.request,
        }
    )


def get(session: Session, *, estimate_id: str, principal: Principal) -> Estimate:
    """One estimate of the caller's tenant by id or unique id prefix (`app/kit/ids.py`); 404 if
    there is none (or it is another's)."""
    row = session.get(Estimate, estimate_id)
    if row is not None and can_see(
        principal, team=row.team, created_by_key_id=row.created_by_key_id
    ):
        return row
    mine = visible(principal, team=Estimate.team, created_by_key_id=Estimate.created_by_key_id)
    full = ids.unique_match(
        session, id_column=Estimate.id, visible=mine, value=estimate_id, kind="est", noun="estimate"
    )
    found = session.get(Estimate, full)
    assert found is not None  # just matched, in this transaction
    return found


def list_(
    session: Session, *, principal: Principal, limit: int, cursor: str | None
) -> tuple[Sequence[Estimate], str | None]:
    """The tenant's estimates newest first, one page, and the cursor of the next page."""
    mine = visible(principal, team=Estimate.team, created_by_key_id=Estimate.created_by_key_id)
    return keyset_page(
        session,
        select(Estimate).where(mine),
        created_at=Estimate.created_at,
        id_column=Estimate.id,
        limit=limit,
        cursor=cursor,
    )
