"""Request and response bodies of the price-import routes."""

from __future__ import annotations

from pydantic import BaseModel, Field

from app.kit.instants import UtcInstant


class PriceImportOut(BaseModel):
    """One stored import of a provider's price list."""

    id: int
    provider: str
    source: str = Field(description="where the document came from (URL or file name)")
    fetched_at: UtcInstant = Field(description="when the document was fetched")
    rows: int = Field(description="per-GPU price rows it brought")
    catalog_version: int = Field(description="the catalog version the import created")
    imported_by: str
    created_at: UtcInstant


class PriceImportList(BaseModel):
    """Every import, newest first (the newest per provider is in effect)."""

    imports: list[PriceImportOut]
