"""Datasets: validate an uploaded JSONL file, count its tokens, store it, and look it up.

Validation reads the whole upload before anything is written: one bad line and the upload is
refused with the first bad line numbers, leaving no file and no row. The file is stored first,
then the row is flushed; if the row (or, later, the request's commit) fails the file is removed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from app.auth import quotas
from app.auth.service import Principal
from app.auth.tenancy import can_see, visible
from app.catalog.model_catalog import UnknownModelError, get_model_config
from app.config import get_settings
from app.datasets import loss_tokens
from app.datasets.formats import Example, parse_columns
from app.datasets.reader import (
    CorruptStream,
    DatasetReader,
    DatasetTooLarge,
    DatasetTooManyLines,
    measure,
)
from app.datasets.schemas import BadLineOut, DatasetOut, ProblemOut, TokenStatsOut
from app.datasets.sources import COMPRESSED_SUFFIXES, SUFFIXES, Compression, Container
from app.datasets.tokens import (
    TOKENIZE_BATCH,
    TokenCounter,
    TokenTally,
    approximate_counter,
    cached_tokenizer_counter,
    family_approximation,
    tokenizer_counter,
)
from app.datasets.upload import ReceivedUpload
from app.errors import Conflict, InvalidInput, NotFound, PayloadTooLarge
from app.estimator.spec import DatasetShape
from app.kit import ids, redact
from app.kit.pagination import keyset_page
from app.kit.paths import confine_model_path, relative_to_root
from app.kit.storage import put_file, remove
from app.models import UNFINISHED_STATUSES, Dataset, Job, Study, StudyStatus
from app.models.base import new_id

MAX_NAME_CHARS = 300
# The form fields an upload takes besides `file`: any other is refused, never ignored.
UPLOAD_FIELDS = ("name", "model_path", "model", "columns")
# What the upload found out about the file, kept in the row's stats beside the token counts.
STORED_FACTS = (
    "formats",
    "container",
    "compression",
    "compressed",
    "uncompressed_bytes",
    "columns",
    "chat_template",
)


def dataset_key(dataset_id: str, *, container: str, compression: str) -> str:
    """Where a dataset's file lives under the storage root; its suffix says what it is."""
    suffix = SUFFIXES[Container(container)] + COMPRESSED_SUFFIXES[Compression(compression)]
    return f"datasets/{dataset_id}/data{suffix}"


def counter_for(model_path: str | None, model: str | None = None) -> TokenCounter:
    """The model's own tokenizer when `model_path` names a local folder (or `model`, a catalog
    id, has its tokenizer in this machine's hub cache); else its family's measured
    approximation; with neither, the generic one."""
    if model_path and model:
        raise InvalidInput("give model_path or model, not both", field="model")
    if model:
        try:
            config = get_model_config(model)
        except UnknownModelError as exc:
            raise InvalidInput(str(exc), field="model") from None
        cached = cached_tokenizer_counter(model)
        if cached is not None:
            return cached
        approximation, stand_in = family_approximation(config)
        return approximate_counter(approximation, model=model, stand_in=stand_in)
    if not model_path:
        return approximate_counter()
    folder = confine_model_path(model_path, field="model_path")
    label = relative_to_root(folder)
    if len(label) > MAX_NAME_CHARS:
        raise InvalidInput(f"model_path is longer than {MAX_NAME_CHARS} characters")
    return tokenizer_counter(folder, label=label)


def analyse_file(
    path: Path,
    *,
    counter: TokenCounter,
    max_bytes: int,
    max_lines: int,
    filename: str | None = None,
    columns: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Read every row, reject the file on any bad row, and return its token statistics.

    The file's decompressed bytes and lines are counted first (no parsing), so a file past a cap
    is refused in the time it takes to decompress it; then each row is parsed, measured and
    folded into the statistics, one batch at a time. A refusal names each kind of problem once:
    its count, its first rows and one detail."""
    reader = DatasetReader(
        path,
        max_bytes=max_bytes,
        max_lines=max_lines,
        filename=filename,
        columns=columns,
        chat=counter.chat,
    )
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
        raise InvalidInput(f"the file cannot be read: {exc}", field="file") from None
    if reader.bad_count:
        raise InvalidInput(
            f"{reader.bad_count} bad {reader.unit}(s) of {reader.bad_count + reader.examples}, "
            f"nothing was stored. {reader.summary()}",
            field="file",
            bad_line_count=reader.bad_count,
            problems=[
                ProblemOut(
                    kind=str(p.kind), count=p.count, rows=p.rows, detail=p.detail, hint=p.hint
                ).model_dump()
                for p in reader.problems.values()
            ],
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
        "container": str(reader.container),
        "compression": str(reader.compression),
        "compressed": reader.compressed,
        "uncompressed_bytes": reader.bytes_read,
        "columns": columns or None,
        "chat_template": _chat_rendering(reader),
        "stats": {
            **stats.__dict__,
            "tokenizer": counter.name,
            "tokenizer_note": counter.note,
            "token_error": counter.error,
            **tally.histogram(),
        },
    }


def _chat_rendering(reader: DatasetReader) -> dict[str, int] | None:
    """How the conversations were rendered: by the model's template, or the plain fallback."""
    if not reader.templated and not reader.plain_chats:
        return None
    return {"model_template": reader.templated, "plain": reader.plain_chats}


_FATES = "tunecost_stored_files_fates"
Outcome = Literal["commit", "rollback"]


def _remove_after(session: Session, url: str, *, outcome: Outcome) -> None:
    """Remove the stored file `url` once the session's transaction ends in `outcome`; keep it
    if it ends the other way (a new upload's file goes on a rollback, a deleted one's on the
    commit)."""
    fates: dict[Outcome, list[str]] | None = session.info.get(_FATES)
    if fates is None:
        fates = session.info[_FATES] = {"commit": [], "rollback": []}

        def settle(ended: Outcome) -> None:
            for stored in fates[ended]:
                remove(stored)
            for urls in fates.values():
                urls.clear()

        event.listen(session, "after_commit", lambda _: settle("commit"))
        event.listen(session, "after_rollback", lambda _: settle("rollback"))
    fates[outcome].append(url)


def check_fields(fields: dict[str, str]) -> None:
    """Refuse form fields the upload does not take (422 naming them), rather than ignore them."""
    unknown = sorted(set(fields) - set(UPLOAD_FIELDS))
    if unknown:
        raise InvalidInput(
            f"unknown form field(s) {', '.join(unknown)}; an upload takes file and "
            f"{', '.join(UPLOAD_FIELDS)}",
            field=unknown[0],
        )


def create(session: Session, *, upload: ReceivedUpload, principal: Principal) -> Dataset:
    """Validate and count `upload`, store the file, add the row; nothing is kept on error."""
    fields = upload.fields
    check_fields(fields)
    name = (fields.get("name") or upload.filename).strip() or upload.filename
    if len(name) > MAX_NAME_CHARS:
        raise InvalidInput(f"name is longer than {MAX_NAME_CHARS} characters", field="name")
    try:
        columns = parse_columns(fields.get("columns", "")) or None
    except ValueError as exc:
        raise InvalidInput(f"columns: {exc}", field="columns") from None
    tenant = quotas.Tenant.of(principal)
    quotas.check_dataset(session, tenant, size_bytes=upload.size_bytes, serialise=False)
    counter = counter_for(fields.get("model_path"), fields.get("model"))
    settings = get_settings()
    found = analyse_file(
        upload.path,
        counter=counter,
        max_bytes=settings.dataset_bytes_cap,
        max_lines=settings.max_dataset_lines,
        filename=upload.filename,
        columns=columns,
    )

    # Again, race-free, now that the work is done: the lock is held until the commit.
    quotas.check_dataset(session, tenant, size_bytes=upload.size_bytes)
    dataset_id = new_id("ds")
    key = dataset_key(dataset_id, container=found["container"], compression=found["compression"])
    url = put_file(upload.path, key)
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
        stats={k: found[k] for k in STORED_FACTS} | stats,
        created_by_key_id=principal.key_id,
        team=principal.team,
    )
    session.add(row)
    try:
        session.flush()
    except BaseException:
        remove(url)
        raise
    _remove_after(session, url, outcome="rollback")
    return row


def get(
    session: Session, *, dataset_id: str, principal: Principal, by_prefix: bool = True
) -> Dataset:
    """One dataset of the caller's tenant by id or unique id prefix (`app/kit/ids.py`); 404 if
    there is none (or it is another's). `by_prefix=False` for ids a request body refers to."""
    row = session.get(Dataset, dataset_id)
    if row is not None and can_see(
        principal, team=row.team, created_by_key_id=row.created_by_key_id
    ):
        return row
    if not by_prefix:
        raise NotFound(f"no dataset with id {dataset_id!r}")
    mine = visible(principal, team=Dataset.team, created_by_key_id=Dataset.created_by_key_id)
    full = ids.unique_match(
        session, id_column=Dataset.id, visible=mine, value=dataset_id, kind="ds", noun="dataset"
    )
    found = session.get(Dataset, full)
    assert found is not None  # just matched, in this transaction
    return found


def delete(session: Session, *, dataset_id: str, principal: Principal) -> Dataset:
    """Delete one dataset of the caller's tenant (by id or unique id prefix) and, once
    committed, its file.

    Refused (409) while a job that is not finished, or a running study, trains on it. Finished
    jobs keep their figures and lose only the link (`dataset_id` becomes null).
    """
    row = get(session, dataset_id=dataset_id, principal=principal)
    # Lock the row first: a submit naming it either committed before (and is seen below) or
    # waits for this delete and then fails on the missing dataset.
    session.execute(select(Dataset.id).where(Dataset.id == row.id).with_for_update())
    job = session.scalar(
        select(Job.id).where(Job.dataset_id == row.id, Job.status.in_(UNFINISHED_STATUSES)).limit(1)
    )
    if job is not None:
        raise Conflict(
            f"dataset {row.id} is in use by job {job}, which has not finished; "
            "wait for it or cancel it, then delete the dataset"
        )
    study = session.scalar(
        select(Study.id)
        .where(Study.dataset_id == row.id, Study.status == StudyStatus.RUNNING)
        .limit(1)
    )
    if study is not None:
        raise Conflict(
            f"dataset {row.id} is in use by study {study}, which is running; "
            "wait for it or cancel it, then delete the dataset"
        )
    url = row.storage_path
    session.delete(row)
    session.flush()
    _remove_after(session, url, outcome="commit")
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
        container=stats.get("container", "jsonl"),  # uploads before other containers: JSONL
        compression=stats.get("compression", "gzip" if stats.get("compressed") else "none"),
        columns=stats.get("columns"),
        chat_template=stats.get("chat_template"),
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
    shortest = row.stats.get("min_tokens")  # absent from uploads that predate it
    return DatasetShape(
        num_examples=row.num_examples,
        avg_tokens=mean,
        max_tokens=max(row.max_tokens, 1),
        min_tokens=int(shortest) if shortest and 1 <= shortest <= mean else None,
    )
