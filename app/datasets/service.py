"""Datasets: validate an uploaded JSONL file, count its tokens, store it, and look it up.

Validation reads the whole upload before anything is written: one bad line and the upload is
refused with the first bad line numbers, leaving no file and no row. The file is stored first,
then the row is flushed; if the row (or, later, the request's commit) fails the file is removed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from app.auth.service import Principal
from app.auth.tenancy import can_see, visible
from app.config import get_settings
from app.datasets import loss_tokens
from app.datasets.formats import (
    CorruptStream,
    DatasetReader,
    DatasetTooLarge,
    DatasetTooManyLines,
    Example,
    measure,
)
from app.datasets.schemas import BadLineOut, DatasetOut, TokenStatsOut
from app.datasets.tokens import (
    APPROXIMATION_NOTE,
    TOKENIZE_BATCH,
    TokenCounter,
    TokenTally,
    approximate_counter,
    tokenizer_counter,
)
from app.datasets.upload import ReceivedUpload
from app.errors import InvalidInput, NotFound, PayloadTooLarge
from app.estimator.spec import DatasetShape
from app.kit import redact
from app.kit.pagination import keyset_page
from app.kit.paths import confine_model_path, relative_to_root
from app.kit.storage import put_file, remove
from app.models import Dataset
from app.models.base import new_id

SHOWN_BAD_LINES = 5  # bad lines named in the error's one-line detail (all kept ones are listed)
MAX_NAME_CHARS = 300


def dataset_key(dataset_id: str, *, compressed: bool) -> str:
    """Where a dataset's file lives under the storage root."""
    return f"datasets/{dataset_id}/data.jsonl" + (".gz" if compressed else "")


def counter_for(model_path: str | None) -> TokenCounter:
    """The model's own tokenizer when `model_path` names a local folder, else the approximation."""
    if not model_path:
        return approximate_counter()
    folder = confine_model_path(model_path, field="model_path")
    label = relative_to_root(folder)
    if len(label) > MAX_NAME_CHARS:
        raise InvalidInput(f"model_path is longer than {MAX_NAME_CHARS} characters")
    return tokenizer_counter(folder, label=label)


def analyse_file(
    path: Path, *, counter: TokenCounter, max_bytes: int, max_lines: int
) -> dict[str, Any]:
    """Read every line, reject the file on any bad line, and return its token statistics.

    The file's decompressed bytes and lines are counted first (no parsing), so a file past a cap
    is refused in the time it takes to decompress it; then each line is parsed, measured and
    folded into the statistics, one batch at a time."""
    reader = DatasetReader(path, max_bytes=max_bytes, max_lines=max_lines)
    tally = TokenTally()
    batch: list[Example] = []
    try:
        measure(path, max_bytes=max_bytes, max_lines=max_lines)
        for _, example in reader:
            batch.append(example)
            if len(batch) >= TOKENIZE_BATCH:
                tally.add(counter.measure(batch))
                batch.clear()
        tally.add(counter.measure(batch))
    except DatasetTooLarge:
        raise PayloadTooLarge(
            f"the dataset decompresses to more than {max_bytes} bytes "
            "(TUNECOST_MAX_DATASET_BYTES); split it into smaller datasets"
        ) from None
    except DatasetTooManyLines:
        raise PayloadTooLarge(
            f"the dataset has more than {max_lines} lines (TUNECOST_MAX_DATASET_LINES); "
            "split it into smaller datasets"
        ) from None
    except CorruptStream as exc:
        raise InvalidInput(f"the gzip stream is damaged: {exc}", field="file") from None
    if reader.bad_count:
        shown = "; ".join(
            f"line {b.line}: {b.reason} ({b.detail})" for b in reader.bad_lines[:SHOWN_BAD_LINES]
        )
        raise InvalidInput(
            f"{reader.bad_count} bad line(s), nothing was stored. {shown}",
            field="file",
            bad_line_count=reader.bad_count,
            bad_lines=[
                BadLineOut(line=b.line, reason=str(b.reason), detail=b.detail).model_dump()
                for b in reader.bad_lines
            ],
        )
    if not tally.examples:
        raise InvalidInput("the file holds no examples (it is empty or blank)", field="file")
    stats = tally.stats()
    return {
        "format": str(reader.format),
        "formats": {str(fmt): n for fmt, n in reader.formats.items()},
        "compressed": reader.compressed,
        "uncompressed_bytes": reader.bytes_read,
        "stats": {
            **stats.__dict__,
            "tokenizer": counter.name,
            "tokenizer_note": APPROXIMATION_NOTE if counter.is_approximate else None,
            **tally.histogram(),
        },
    }


_PENDING = "tunecost_files_pending_commit"


def _delete_on_rollback(session: Session, url: str) -> None:
    """Remove the stored file if the session's transaction is rolled back instead of committed."""
    pending: list[str] | None = session.info.get(_PENDING)
    if pending is None:
        pending = session.info[_PENDING] = []

        @event.listens_for(session, "after_rollback")
        def _rolled_back(_: Session) -> None:
            for stored in pending:
                remove(stored)
            pending.clear()

        @event.listens_for(session, "after_commit")
        def _committed(_: Session) -> None:
            pending.clear()

    pending.append(url)


def create(
    session: Session,
    *,
    upload: ReceivedUpload,
    name: str | None,
    model_path: str | None,
    principal: Principal,
) -> Dataset:
    """Validate and count `upload`, store the file, add the row; nothing is kept on error."""
    name = (name or upload.filename).strip() or upload.filename
    if len(name) > MAX_NAME_CHARS:
        raise InvalidInput(f"name is longer than {MAX_NAME_CHARS} characters", field="name")
    counter = counter_for(model_path)
    settings = get_settings()
    found = analyse_file(
        upload.path,
        counter=counter,
        max_bytes=settings.dataset_bytes_cap,
        max_lines=settings.max_dataset_lines,
    )

    dataset_id = new_id("ds")
    url = put_file(upload.path, dataset_key(dataset_id, compressed=found["compressed"]))
    stats = found["stats"]
    row = Dataset(
        id=dataset_id,
        name=name,
        storage_path=url,
        size_bytes=upload.size_bytes,
        sha256=upload.sha256,
        format=found["format"],
        num_examples=stats["examples"],
        total_tokens=stats["total_tokens"],
        max_tokens=stats["max_tokens"],
        tokenizer=counter.name,
        stats={k: found[k] for k in ("formats", "compressed", "uncompressed_bytes")} | stats,
        created_by_key_id=principal.key_id,
        team=principal.team,
    )
    session.add(row)
    try:
        session.flush()
    except BaseException:
        remove(url)
        raise
    _delete_on_rollback(session, url)
    return row


def get(session: Session, *, dataset_id: str, principal: Principal) -> Dataset:
    """One dataset of the caller's tenant by id; 404 if there is none (or it is another's)."""
    row = session.get(Dataset, dataset_id)
    if row is None or not can_see(
        principal, team=row.team, created_by_key_id=row.created_by_key_id
    ):
        raise NotFound(f"no dataset with id {dataset_id!r}")
    return row


def list_(
    session: Session, *, principal: Principal, limit: int, cursor: str | None
) -> tuple[Sequence[Dataset], str | None]:
    """The tenant's datasets newest first, one page, and the cursor of the next page."""
    mine = visible(principal, team=Dataset.team, created_by_key_id=Dataset.created_by_key_id)
    return keyset_page(
        session,
        select(Dataset).where(mine),
        created_at=Dataset.created_at,
        id_column=Dataset.id,
        limit=limit,
        cursor=cursor,
    )


def to_out(row: Dataset) -> DatasetOut:
    """The API view of a dataset row."""
    stats = dict(row.stats)
    return DatasetOut(
        id=row.id,
        name=row.name,
        format=row.format,
        formats=stats.get("formats", {}),
        compressed=bool(stats.get("compressed", False)),
        size_bytes=row.size_bytes,
        uncompressed_bytes=int(stats.get("uncompressed_bytes", row.size_bytes)),
        sha256=row.sha256,
        num_examples=row.num_examples,
        total_tokens=row.total_tokens,
        max_tokens=row.max_tokens,
        tokenizer=row.tokenizer,
        stats=TokenStatsOut.model_validate(stats),
        storage_path=redact.storage_key(row.storage_path),
        team=row.team,
        created_at=row.created_at,
    )


def truncation_check(row: Dataset, *, seq_len: int) -> loss_tokens.TruncationCheck | None:
    """What truncating `row` to `seq_len` does to its examples (None if upload predates it)."""
    return loss_tokens.check(row.stats, seq_len=seq_len)


def shape(row: Dataset) -> DatasetShape:
    """What the estimator needs of a stored dataset."""
    mean = float(row.stats.get("mean_tokens") or row.total_tokens / max(row.num_examples, 1))
    return DatasetShape(
        num_examples=row.num_examples,
        avg_tokens=mean,
        max_tokens=max(row.max_tokens, 1),
    )
