"""Scheduled FOCUS delivery: each billing period's FOCUS rows as Parquet and gzipped CSV files.

What the cloud providers' cost exports do (AWS Data Exports, Azure cost exports): `celery beat`
runs the `tunecost.deliver_focus` task every TUNECOST_FOCUS_DELIVERY_EVERY_H hours, which writes
under TUNECOST_FOCUS_DELIVERY_URL (default `<storage root>/exports/focus`, any fsspec URL):

```
parquet/billing_period=2025-03/focus-2025-03.parquet   typed: timestamps in UTC, float64 costs
csv/billing_period=2025-03/focus-2025-03.csv.gz        the bytes of GET /v1/reports/focus (CSV)
manifests/billing_period=2025-03/manifest.json         rows, checksums, schema, revision
```

The rows are the export's own (app/reports/focus.py over app/reports/focus_columns.py: one
definition), of every tenant (SubAccountId is the team): the delivery is the installation's
billing data, for its operators. A period is the UTC month a job finished in, as its
BillingPeriodStart says. Each run looks at every period with rows (and every one delivered
before): a period whose jobs did not change since its manifest (same count, same newest
`updated_at`, same FOCUS settings and schema) is skipped without reading its rows; otherwise its
rows are written again, and if they differ from the delivered ones (their SHA-256) the files are
replaced (data files first, each moved into place whole, the manifest last, its revision up by
one). A reader that follows the manifest always finds the files it describes.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.core import url_to_fs
from sqlalchemy import func, literal_column, select
from sqlalchemy.orm import Session

from app.config import Settings, get_settings
from app.db import session_scope
from app.jobs.filters import ReportFilters
from app.kit.instants import as_utc, iso_z
from app.models import Job
from app.models.base import new_id
from app.reports import focus
from app.reports.focus_columns import COLUMNS, billing_period

# The layout and column set of the delivered files; a change here re-delivers every period.
SCHEMA_VERSION = "tunecost-focus-delivery/1"
TIMESTAMP_COLUMNS = frozenset(
    {"BillingPeriodStart", "BillingPeriodEnd", "ChargePeriodStart", "ChargePeriodEnd"}
)
DECIMAL_COLUMNS = frozenset(
    {
        "BilledCost",
        "EffectiveCost",
        "ListCost",
        "ContractedCost",
        "ListUnitPrice",
        "ContractedUnitPrice",
        "ConsumedQuantity",
        "PricingQuantity",
        "CommitmentDiscountQuantity",
        "x_InternalUnitPrice",
        "x_EstimatedCost",
        "x_EstimatedGpuHours",
        "x_EstimateErrorPct",
    }
)
INTEGER_COLUMNS = frozenset({"x_NumGpus"})
TIMESTAMP = pa.timestamp("us", tz="UTC")
GZIP_MTIME = 0  # no time in the gzip header: the same rows give the same file
DELIVERY_LOCK_ID = 0x7475_6E65_666F_6375  # "tunefocu": the advisory lock key of a delivery run


def arrow_type(column: str) -> pa.DataType:
    """The Parquet type of a FOCUS column: FOCUS Date/Time as UTC timestamps, Decimal as double."""
    if column in TIMESTAMP_COLUMNS:
        return TIMESTAMP
    if column in DECIMAL_COLUMNS:
        return pa.float64()
    if column in INTEGER_COLUMNS:
        return pa.int64()
    return pa.string()


SCHEMA = pa.schema([pa.field(name, arrow_type(name)) for name in COLUMNS])


@dataclass(frozen=True)
class Period:
    """A billing period with FOCUS rows, and what says whether they may have changed."""

    start: datetime
    end: datetime
    rows: int
    last_updated: datetime | None

    @property
    def label(self) -> str:
        """`2025-03`: the partition value."""
        return self.start.strftime("%Y-%m")

    @property
    def partition(self) -> str:
        """The Hive-style partition folder, `billing_period=2025-03`."""
        return f"billing_period={self.label}"


def _month_after(start: datetime) -> datetime:
    year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
    return start.replace(year=year, month=month)


def periods(session: Session) -> list[Period]:
    """Every billing period holding FOCUS rows, oldest first, with its row count."""
    dialect = session.get_bind().dialect.name
    start, _ = billing_period(dialect, Job.finished_at)
    stmt = (
        select(
            start.label("period"),
            func.count().label("n"),
            func.max(Job.updated_at).label("touched"),
        )
        .where(Job.finished_at.is_not(None), Job.act_cost_usd.is_not(None))
        # By output name: PostgreSQL would not match two copies of a bound-parameter expression.
        .group_by(literal_column("period"))
        .order_by(literal_column("period"))
    )
    out = []
    for row in session.execute(stmt):
        begin = datetime.fromisoformat(str(row.period).replace("Z", "+00:00"))
        touched = as_utc(row.touched) if row.touched is not None else None
        out.append(Period(begin, _month_after(begin), int(row.n), touched))
    return out


def fingerprint(period: Period, settings: Settings) -> str:
    """What the period's rows depend on besides their own values: count, newest change, settings."""
    basis = [
        SCHEMA_VERSION,
        period.rows,
        iso_z(period.last_updated) if period.last_updated else None,
        settings.focus_billing_account_id,
        settings.focus_billing_account_name,
        settings.focus_self_hosted_name,
        list(COLUMNS),
    ]
    return hashlib.sha256(json.dumps(basis).encode()).hexdigest()


def _cell(column: str, value: Any) -> Any:
    if value is None:
        return None
    if column in TIMESTAMP_COLUMNS:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if column in DECIMAL_COLUMNS:
        return float(value)
    if column in INTEGER_COLUMNS:
        return int(value)
    return value


def _table(batch: Sequence[Sequence[Any]]) -> pa.Table:
    columns = {
        name: pa.array([_cell(name, row[i]) for row in batch], type=SCHEMA.field(name).type)
        for i, name in enumerate(COLUMNS)
    }
    return pa.Table.from_pydict(columns, schema=SCHEMA)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Written:
    """The files of one period, written locally, and the checksum of their rows."""

    parquet: Path
    csv_gz: Path
    rows: int
    rows_sha256: str


def write_period(session: Session, period: Period, folder: Path) -> Written:
    """The period's rows as a Parquet file and a gzipped CSV in `folder`, in one pass."""
    filters = ReportFilters(start=period.start, end=period.end)
    parquet = folder / f"focus-{period.label}.parquet"
    csv_gz = folder / f"focus-{period.label}.csv.gz"
    rows = 0
    digest = hashlib.sha256()
    with pq.ParquetWriter(parquet, SCHEMA) as table_out, csv_gz.open("wb") as raw:
        gz = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=GZIP_MTIME)

        def tee(batches: Iterator[Sequence[Any]]) -> Iterator[Sequence[Any]]:
            nonlocal rows
            for batch in batches:
                if batch:
                    table_out.write_table(_table(batch))
                    rows += len(batch)
                yield batch

        with gz:
            for chunk in focus.render_csv(tee(focus.iter_batches(session, filters))):
                data = chunk.encode()
                digest.update(data)
                gz.write(data)
    return Written(parquet, csv_gz, rows, digest.hexdigest())


def _read_json(fs: Any, path: str) -> dict[str, Any] | None:
    try:
        with fs.open(path, "rb") as fh:
            found: dict[str, Any] = json.load(fh)
            return found
    except FileNotFoundError:
        return None


def _put(fs: Any, local: Path, dest: str) -> None:
    """Upload `local` to `dest` whole: to a temporary name first, then moved into place."""
    fs.makedirs(dest.rsplit("/", 1)[0], exist_ok=True)
    temporary = f"{dest}.part-{new_id('up')}"
    fs.put_file(str(local), temporary)
    fs.mv(temporary, dest)


def _file_entry(local: Path, relative: str, fmt: str, rows: int) -> dict[str, Any]:
    return {
        "path": relative,
        "format": fmt,
        "rows": rows,
        "bytes": local.stat().st_size,
        "sha256": _sha256(local),
    }


def deliver_period(
    session: Session, period: Period, *, fs: Any, root: str, settings: Settings, now: datetime
) -> str:
    """Deliver one period if it changed; a word on what happened."""
    manifest_path = f"{root}/manifests/{period.partition}/manifest.json"
    previous = _read_json(fs, manifest_path)
    mark = fingerprint(period, settings)
    if previous is not None and previous.get("source_fingerprint") == mark:
        return "unchanged"
    with tempfile.TemporaryDirectory(prefix="tunecost-focus-") as tmp:
        written = write_period(session, period, Path(tmp))
        same = (
            previous is not None
            and previous.get("schema_version") == SCHEMA_VERSION
            and previous.get("rows_sha256") == written.rows_sha256
        )
        if same and previous is not None:
            # The jobs were touched but their FOCUS rows are the same: keep the delivery.
            manifest = {**previous, "source_fingerprint": mark, "checked_at": iso_z(now)}
            _write_manifest(fs, manifest_path, manifest, Path(tmp))
            return "unchanged"
        files = []
        for local, fmt, kind in (
            (written.parquet, "parquet", "parquet"),
            (written.csv_gz, "csv.gz", "csv"),
        ):
            relative = f"{kind}/{period.partition}/{local.name}"
            _put(fs, local, f"{root}/{relative}")
            files.append(_file_entry(local, relative, fmt, written.rows))
        revision = int(previous.get("revision", 0)) + 1 if previous else 1
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "focus_version": focus.FOCUS_VERSION,
            "billing_period": {
                "start": iso_z(period.start),
                "end": iso_z(period.end),
                "partition": period.partition,
            },
            "delivery_id": new_id("fdl"),
            "revision": revision,
            "supersedes": previous.get("delivery_id") if previous else None,
            "delivered_at": iso_z(now),
            "checked_at": iso_z(now),
            "row_count": written.rows,
            "rows_sha256": written.rows_sha256,
            "source_fingerprint": mark,
            "columns": [{"name": f.name, "type": str(f.type)} for f in SCHEMA],
            "files": files,
        }
        _write_manifest(fs, manifest_path, manifest, Path(tmp))
    return f"delivered revision {revision} ({written.rows} rows)"


def _write_manifest(fs: Any, path: str, manifest: dict[str, Any], folder: Path) -> None:
    local = folder / "manifest.json"
    local.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    _put(fs, local, path)


def _delivered_labels(fs: Any, root: str) -> set[str]:
    """The periods that have a manifest already (`2025-03`, ...)."""
    found = fs.glob(f"{root}/manifests/billing_period=*/manifest.json")
    return {str(p).rsplit("billing_period=", 1)[1].split("/", 1)[0] for p in found}


def _only_run(session: Session) -> bool:
    """Whether this run may deliver: on PostgreSQL, a transaction-level advisory lock that one
    run holds at a time (several beats, a run outlasting its interval); SQLite serves one host."""
    if session.get_bind().dialect.name != "postgresql":
        return True
    return bool(session.scalar(select(func.pg_try_advisory_xact_lock(DELIVERY_LOCK_ID))))


def deliver_all(*, now: datetime | None = None) -> dict[str, str]:
    """Deliver every period whose rows changed (or were never delivered); period → outcome."""
    settings = get_settings()
    now = now or datetime.now(UTC)
    fs, root = url_to_fs(settings.focus_delivery_root)
    root = root.rstrip("/")
    outcome: dict[str, str] = {}
    with session_scope() as session:
        if not _only_run(session):
            return {"*": "skipped: another delivery is running"}
        found = periods(session)
        known = {p.label for p in found}
        for label in sorted(_delivered_labels(fs, root) - known):
            # Delivered once, no rows now (its jobs were deleted): deliver it empty.
            start = datetime.strptime(label, "%Y-%m").replace(tzinfo=UTC)
            found.append(Period(start, _month_after(start), 0, None))
        for period in found:
            outcome[period.label] = deliver_period(
                session, period, fs=fs, root=root, settings=settings, now=now
            )
    return outcome
