"""Dataset routes: upload and delete (submit scope), get and list (read scope)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, status
from starlette.concurrency import run_in_threadpool

from app.auth.deps import ReadPrincipal, SubmitPrincipal
from app.config import get_settings
from app.datasets import service
from app.datasets.schemas import DatasetOut
from app.datasets.upload import receive_upload
from app.db import SessionDep
from app.kit.limits import accepts_upload
from app.kit.pagination import CursorQuery, LimitQuery, Page

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "JSON Lines, a JSON array or CSV (each may be gzip- "
                            "or zstd-compressed), Parquet, Arrow IPC, or a tar of a `datasets` "
                            "save_to_disk folder; records in text, prompt/completion, Alpaca, "
                            "chat (messages) or ShareGPT (conversations) shape",
                        },
                        "name": {"type": "string", "maxLength": 300},
                        "model_path": {
                            "type": "string",
                            "description": "a local model folder under TUNECOST_MODEL_ROOTS "
                            "whose tokenizer counts the tokens and whose chat template renders "
                            "conversations",
                        },
                        "model": {
                            "type": "string",
                            "description": "a catalog model id: its tokenizer from the local "
                            "hub cache, else its family's measured characters per token",
                        },
                        "columns": {
                            "type": "string",
                            "description": "the file's columns as record fields, "
                            "e.g. prompt=question,completion=answer",
                        },
                    },
                }
            }
        },
    }
}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=DatasetOut,
    openapi_extra=_UPLOAD_BODY,
    responses={413: {"description": "the upload passes TUNECOST_MAX_UPLOAD_BYTES"}},
)
@accepts_upload
async def upload_dataset(
    request: Request, session: SessionDep, principal: SubmitPrincipal
) -> DatasetOut:
    """Upload a dataset; any bad row refuses the whole file, naming each kind of problem once."""
    upload = await receive_upload(
        content_type=request.headers.get("content-type", ""),
        stream=request.stream(),
        max_bytes=get_settings().max_upload_bytes,
    )
    try:
        row = await run_in_threadpool(service.create, session, upload=upload, principal=principal)
    finally:
        upload.discard()
    return service.to_out(row)


@router.get("/{dataset_id}", response_model=DatasetOut)
def get_dataset(
    dataset_id: Annotated[str, Path(max_length=40)], session: SessionDep, principal: ReadPrincipal
) -> DatasetOut:
    """One dataset of the key's tenant, with its token statistics."""
    return service.to_out(service.get(session, dataset_id=dataset_id, principal=principal))


@router.delete("/{dataset_id}", response_model=DatasetOut)
def delete_dataset(
    dataset_id: Annotated[str, Path(max_length=40, description="the id, or a unique start of it")],
    session: SessionDep,
    principal: SubmitPrincipal,
) -> DatasetOut:
    """Delete a dataset and its stored file, making room under the tenant's dataset quotas.

    Refused (409) while an unfinished job or a running study trains on it; finished jobs keep
    their figures and lose only the link. The answer is the dataset as it was.
    """
    return service.to_out(service.delete(session, dataset_id=dataset_id, principal=principal))


@router.get("", response_model=Page[DatasetOut])
def list_datasets(
    session: SessionDep,
    principal: ReadPrincipal,
    limit: LimitQuery = 20,
    cursor: CursorQuery = None,
) -> Page[DatasetOut]:
    """The tenant's datasets, newest first; pass `next_cursor` back as `cursor` for more."""
    rows, next_cursor = service.list_(session, principal=principal, limit=limit, cursor=cursor)
    return Page[DatasetOut](items=[service.to_out(r) for r in rows], next_cursor=next_cursor)
