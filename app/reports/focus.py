"""FinOps FOCUS 1.2 export: one Usage charge per finished job that has a metered cost.

The query itself yields each record in column order (timestamps already ISO 8601 text, tags
already a JSON object as text), so Python only writes rows out. CSV is always written by the
API's one CSV writer (app/csv_out.py, which neutralises formula-like cells) from rows fetched in
batches through a server-side cursor (`yield_per`); on PostgreSQL the database renders JSON
itself (`json_build_object` through `COPY (query) TO STDOUT`). Either way the output leaves in
chunks and memory stays flat whatever the row count. Values are only ever what was recorded:
a column is null when the job lacks the figure, never filled with a guess. Column definitions:
FOCUS specification v1.2, https://focus.finops.org (specification/columns/*.md).

Deviation, on purpose: FOCUS wants ProviderName non-null; a job run on a machine of our own
(no provider recorded) exports null there rather than an invented provider name.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import (
    JSON,
    Float,
    FromClause,
    Select,
    String,
    Text,
    and_,
    case,
    cast,
    func,
    literal,
    select,
)
from sqlalchemy.orm import Session

from app import csv_out
from app.models import Job, JobTag
from app.reports.filters import ReportFilters

FOCUS_VERSION = "1.2"
BATCH_ROWS = 2000  # rows per server-side fetch and per chunk written to the client
CHUNK_BYTES = 256 * 1024  # COPY output is passed on in pieces of about this size
CURRENCY = "USD"  # every catalog price is in US dollars (app/catalog/prices.csv)
SERVICE_CATEGORY = "AI and Machine Learning"  # FOCUS ServiceCategory allowed value
SERVICE_NAME = "tunecost fine-tuning"
RESOURCE_TYPE = "Fine-tuning job"
CHARGE_CATEGORY = "Usage"
CHARGE_FREQUENCY = "Usage-Based"
GPU_HOURS_UNIT = "GPU-Hours"  # FOCUS unit format: <plural unit>-<time unit>, e.g. "GB-Hours"
# FOCUS PricingCategory: on-demand list price is "Standard"; spot is market-driven, "Dynamic".
PRICING_CATEGORY = {"on_demand": "Standard", "spot": "Dynamic"}
PG_ISO = 'YYYY-MM-DD"T"HH24:MI:SS"Z"'  # to_char pattern of FOCUS date-times (UTC, with Z)
SQLITE_ISO = "%Y-%m-%dT%H:%M:%SZ"

COLUMNS = (
    "BilledCost",
    "EffectiveCost",
    "ListCost",
    "ContractedCost",
    "ListUnitPrice",
    "ContractedUnitPrice",
    "BillingCurrency",
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "ChargeCategory",
    "ChargeClass",
    "ChargeFrequency",
    "ChargeDescription",
    "ServiceCategory",
    "ServiceName",
    "ProviderName",
    "PricingCategory",
    "ResourceId",
    "ResourceName",
    "ResourceType",
    "ConsumedQuantity",
    "ConsumedUnit",
    "PricingQuantity",
    "PricingUnit",
    "Tags",
    "x_EstimatedCost",
    "x_EstimatedGpuHours",
    "x_EstimateErrorPct",
    "x_Method",
    "x_Model",
    "x_Gpu",
    "x_NumGpus",
    "x_JobStatus",
    "x_Team",
)
_TAGS = COLUMNS.index("Tags")


def _iso(dialect: str, column: Any) -> Any:
    if dialect == "postgresql":
        return func.to_char(func.timezone("UTC", column), PG_ISO)
    return func.strftime(SQLITE_ISO, column)


def _tag_object(dialect: str) -> Any:
    """Aggregate of a job's tag rows into a JSON object, as text."""
    if dialect == "postgresql":
        # json_object(keys[], values[]) writes the text directly; jsonb_object_agg would build
        # and sort a jsonb value first (about twice the CPU per row).
        return cast(
            func.json_object(func.array_agg(JobTag.key), func.array_agg(JobTag.value)), Text
        )
    return func.json_group_object(JobTag.key, JobTag.value)


def _tags(filters: ReportFilters, dialect: str) -> tuple[Any, FromClause]:
    """The Tags expression and the FROM clause it needs.

    Exporting everything, one pass aggregating all tag rows joined by job id is cheapest; for a
    filtered export, a lookup per selected job reads only the tags needed.
    """
    jobs = Job.__table__
    if filters.start is None and filters.end is None and not filters.columns and not filters.tags:
        per_job = (
            select(JobTag.job_id, _tag_object(dialect).label("tags"))
            .group_by(JobTag.job_id)
            .subquery()
        )
        return func.coalesce(per_job.c.tags, "{}"), jobs.outerjoin(
            per_job, per_job.c.job_id == Job.id
        )
    found = select(_tag_object(dialect)).where(JobTag.job_id == Job.id).correlate(Job)
    return func.coalesce(found.scalar_subquery(), "{}"), jobs


def _const(value: str) -> Any:
    return literal(value, String)


def _columns(dialect: str, tags: Any) -> list[tuple[str, Any]]:
    """(column name, SQL expression) of a FOCUS record, in COLUMNS order."""
    billed = Job.act_cost_usd
    price = Job.price_per_gpu_hour
    gpu_hours_unit = case((Job.act_gpu_hours.is_not(None), _const(GPU_HOURS_UNIT)))
    # Billed GPU-hours can exceed the used ones (whole instances rented): the priced quantity
    # is the one that, times the unit price, gives the bill.
    priced = case((price > 0, billed / price), else_=Job.act_gpu_hours)
    error = case(
        (
            and_(Job.est_cost_usd.is_not(None), billed > 0),
            (Job.est_cost_usd - billed) / billed * 100.0,
        )
    )
    description = (
        Job.method
        + " fine-tune of "
        + Job.model_ref
        + " on "
        + cast(Job.num_gpus, String)
        + "x "
        + Job.gpu
        + " ("
        + func.replace(Job.pricing, "_", "-")
        + "), job "
        + Job.status
    )
    pricing_category = case(*((Job.pricing == k, _const(v)) for k, v in PRICING_CATEGORY.items()))
    columns = (
        cast(billed, Float),  # BilledCost
        billed,  # EffectiveCost: no amortized commitments
        billed,  # ListCost: billed at the public price, no negotiated discount
        billed,  # ContractedCost: defaults to ListCost without negotiated rates
        price,  # ListUnitPrice
        price,  # ContractedUnitPrice
        _const(CURRENCY),
        _iso(dialect, func.coalesce(Job.started_at, Job.finished_at)),
        _iso(dialect, Job.finished_at),
        _const(CHARGE_CATEGORY),
        cast(None, String),  # ChargeClass: null, not a correction
        _const(CHARGE_FREQUENCY),
        description,
        _const(SERVICE_CATEGORY),
        _const(SERVICE_NAME),
        Job.provider,
        pricing_category,
        Job.id,
        Job.method + " " + Job.model_ref,
        _const(RESOURCE_TYPE),
        Job.act_gpu_hours,  # ConsumedQuantity
        gpu_hours_unit,
        priced,
        case((priced.is_not(None), _const(GPU_HOURS_UNIT))),
        tags,
        Job.est_cost_usd,
        Job.est_gpu_hours,
        error,
        Job.method,
        Job.model_ref,
        Job.gpu,
        Job.num_gpus,
        Job.status,
        Job.team,
    )
    return list(zip(COLUMNS, columns, strict=True))


def _charges(stmt: Select, source: FromClause, filters: ReportFilters) -> Select:
    return (
        stmt.select_from(source)
        .where(filters.where(), Job.act_cost_usd.is_not(None))
        .order_by(Job.finished_at, Job.id)
    )


def query(filters: ReportFilters, dialect: str) -> Select:
    """One FOCUS record per job selected by `filters` that carries a metered cost."""
    tags, source = _tags(filters, dialect)
    columns = (col.label(name) for name, col in _columns(dialect, tags))
    return _charges(select(*columns), source, filters)


def iter_batches(session: Session, filters: ReportFilters) -> Iterator[Sequence[Any]]:
    """FOCUS records (tuples in COLUMNS order) in batches, through a server-side cursor."""
    dialect = session.get_bind().dialect.name
    result = session.execute(query(filters, dialect), execution_options={"yield_per": BATCH_ROWS})
    yield from result.partitions()


def as_dict(record: Sequence[Any]) -> dict[str, Any]:
    """A record as a dict with Tags parsed (for callers that want objects, not text)."""
    out = dict(zip(COLUMNS, record, strict=True))
    out["Tags"] = json.loads(out["Tags"])
    return out


def render_csv(batches: Iterator[Sequence[Any]]) -> Iterator[str]:
    """CSV text, the header first, then one chunk per batch; null is an empty cell."""
    return csv_out.chunks(COLUMNS, batches)


def _json_record(record: Sequence[Any]) -> str:
    # Tags is already a JSON object as text: splice it in instead of parsing and re-dumping.
    fields = dict(zip(COLUMNS, record, strict=True))
    tags = fields.pop("Tags")
    return json.dumps(fields, separators=(",", ":"))[:-1] + ',"Tags":' + tags + "}"


def render_json(batches: Iterator[Sequence[Any]]) -> Iterator[str]:
    """One JSON document, `{"focus_version": ..., "rows": [...]}`, written batch by batch."""
    yield json.dumps({"focus_version": FOCUS_VERSION})[:-1] + ', "rows": ['
    first = True
    for batch in batches:
        if not batch:
            continue
        text = ",\n".join(_json_record(record) for record in batch)
        yield ("\n" if first else ",\n") + text
        first = False
    yield "\n]}\n"


def _copy_out(session: Session, stmt: Select, options: str) -> Iterator[bytes]:
    """Rows of `COPY (stmt) TO STDOUT WITH (options)`, one data message (one row) at a time."""
    conn = session.connection()
    compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    raw = conn.connection.dbapi_connection
    assert raw is not None
    copy_sql = f"COPY ({compiled}) TO STDOUT WITH ({options})"
    # COPY takes no server-side parameters; psycopg binds them client-side, escaped.
    with raw.cursor() as cur, cur.copy(copy_sql, compiled.params) as copy:  # type: ignore[attr-defined]
        for data in copy:
            yield bytes(data)


def _chunked(pieces: Iterator[bytes]) -> Iterator[bytes]:
    pending: list[bytes] = []
    size = 0
    for piece in pieces:
        pending.append(piece)
        size += len(piece)
        if size >= CHUNK_BYTES:
            yield b"".join(pending)
            pending, size = [], 0
    if pending:
        yield b"".join(pending)


def _pg_json(session: Session, filters: ReportFilters) -> Iterator[bytes]:
    pairs: list[Any] = []
    tags, source = _tags(filters, "postgresql")
    for name, col in _columns("postgresql", tags):
        pairs += [literal(name, String), cast(col, JSON) if name == "Tags" else col]
    objects = _charges(select(cast(func.json_build_object(*pairs), Text)), source, filters)
    yield (json.dumps({"focus_version": FOCUS_VERSION})[:-1] + ', "rows": [\n').encode()
    separator = b""
    for chunk in _chunked(_copy_out(session, objects, "FORMAT text")):
        # COPY's text format doubles backslashes and escapes control characters (which JSON
        # text never holds raw), one row per line: undo the doubling, put commas between rows.
        yield separator + chunk[:-1].replace(b"\\\\", b"\\").replace(b"\n", b",\n")
        separator = b",\n"
    yield b"\n]}\n"


def stream(session: Session, filters: ReportFilters, fmt: str) -> Iterator[str | bytes]:
    """The whole export as CSV or JSON text, in chunks."""
    if fmt == "json" and session.get_bind().dialect.name == "postgresql":
        yield from _pg_json(session, filters)
        return
    render = render_csv if fmt == "csv" else render_json
    yield from render(iter_batches(session, filters))
