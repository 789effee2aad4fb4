"""Report routes (read scope): estimate vs actual, spend over time, the FOCUS 1.2 export.

Every report takes the job filters of `app/jobs/filters.py` (`ReportFiltersDep`, shared with
GET /v1/jobs): `from`/`to` on when the job finished, the job columns and `tag.<key>=<value>`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from app.config import get_settings
from app.db import SessionDep
from app.jobs.filters import GROUP_CHOICES, ReportFilters, ReportFiltersDep, parse_group_by
from app.kit import csv_out
from app.kit.admission import of_app
from app.kit.streams import ClosingStreamingResponse, DatabaseStream
from app.models.base import utcnow
from app.reports import focus, service
from app.reports.benefit import BenefitReport, benefit
from app.reports.forecast import forecast as make_forecast
from app.reports.schemas import (
    Bucket,
    EstimateVsActualReport,
    ForecastReport,
    Format,
    PeriodKind,
    SpendReport,
    flat_columns,
    flat_row,
)

router = APIRouter(prefix="/v1/reports", tags=["reports"])

FormatQ = Annotated[Format, Query(description="json, or csv with the same rows")]
LimitQ = Annotated[int, Query(ge=1, le=service.MAX_LIMIT, description="most rows returned")]


def _csv(columns: list[str], records: list[dict[str, Any]], filename: str) -> Response:
    return csv_out.response(csv_out.records_text(columns, records), filename=filename)


_CSV_DOC: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {"schema": {"type": "string"}}}}
}


@router.get("/estimate-vs-actual", response_model=EstimateVsActualReport, responses=_CSV_DOC)
def estimate_vs_actual(
    session: SessionDep,
    filters: ReportFiltersDep,
    group_by: Annotated[str, Query(description=", ".join(GROUP_CHOICES))] = "method",
    format: FormatQ = "json",
    limit: LimitQ = service.DEFAULT_LIMIT,
) -> Any:
    """Per group: jobs, spend, estimated vs actual cost, GPU-hours and peak memory with errors.

    Errors are (estimate - actual) / actual: positive means the estimate was too high.
    """
    grouping = parse_group_by(group_by)
    report = service.estimate_vs_actual(session, filters=filters, grouping=grouping, limit=limit)
    if format == "csv":
        records = [flat_row(row) for row in report.rows]
        return _csv(flat_columns(), records, "estimate-vs-actual.csv")
    return report


@router.get("/spend", response_model=SpendReport, responses=_CSV_DOC)
def spend(
    session: SessionDep,
    filters: ReportFiltersDep,
    bucket: Annotated[Bucket, Query(description="day, week (from Monday) or month, UTC")] = "day",
    group_by: Annotated[
        str | None, Query(description=", ".join(c for c in GROUP_CHOICES if c != "job"))
    ] = None,
    format: FormatQ = "json",
    limit: LimitQ = service.DEFAULT_LIMIT,
) -> Any:
    """Actual spend per time bucket (and group), for the dashboard's charts."""
    grouping = parse_group_by(group_by, allow_job=False)
    report = service.spend(session, filters=filters, grouping=grouping, bucket=bucket, limit=limit)
    if format == "csv":
        records = [row.model_dump() for row in report.rows]
        return _csv(list(service.SPEND_COLUMNS), records, "spend.csv")
    return report


@router.get("/benefit", response_model=BenefitReport)
def benefit_by_method(session: SessionDep, filters: ReportFiltersDep) -> BenefitReport:
    """$ per unit of eval-loss improvement by method: per method, the succeeded jobs that
    evaluated their base model and their end, what they cost, the eval loss they removed
    (base - final, in nats per token) and the dollars per nat removed. Compare methods on one
    dataset's jobs (filter by its tags, e.g. `tag.study=<id>`)."""
    return benefit(session, filters=filters)


@router.get("/forecast", response_model=ForecastReport)
def forecast(
    session: SessionDep,
    filters: ReportFiltersDep,
    period: Annotated[
        PeriodKind,
        Query(description="the UTC month or quarter holding now, or custom `from`..`to`"),
    ] = "month",
    group_by: Annotated[
        str | None, Query(description=", ".join(c for c in GROUP_CHOICES if c != "job"))
    ] = None,
) -> ForecastReport:
    """A period's spend so far, accrued and committed, projected to the period's end.

    Spent: jobs finished in the period. Accrued: queued and running jobs, their attempts so far.
    Committed: the rest of their estimates, with the low-high band of each estimate (calibrated
    where the estimate was). Projected: spent + accrued + committed + the daily rate of the last
    week's finished spend x the days left. The job filters (and `tag.<key>`) select the jobs.
    """
    grouping = parse_group_by(group_by, allow_job=False)
    return make_forecast(session, filters=filters, grouping=grouping, kind=period, now=utcnow())


def _stream(filters: ReportFilters, format: Format) -> DatabaseStream:
    # Its own session (the request's one is closed before a streamed body is sent), cancelled
    # and released as soon as the client goes (app/kit/streams.py).
    return DatabaseStream(lambda session: focus.stream(session, filters, format))


@router.get(
    "/focus",
    responses={
        200: {
            "description": "FOCUS 1.2 charge records, streamed",
            "content": {"text/csv": {}, "application/json": {}},
        }
    },
)
async def focus_export(
    request: Request,
    filters: ReportFiltersDep,
    format: FormatQ = "csv",
) -> Response:
    """One FOCUS 1.2 Usage row per job with a metered cost; streamed, in finish order.

    Columns: `focus.COLUMNS`. Tags is a JSON object (a JSON string in CSV); the estimate is in
    the x_ columns. Null (an empty CSV cell) where a figure was not recorded.

    At most TUNECOST_EXPORT_SLOTS exports stream at once (each holds a database connection);
    past the queue the answer is 503 with Retry-After, before any byte of the export.
    """
    settings = get_settings()
    admission = of_app(
        request.app,
        name="export_admission",
        what="too many exports are streaming",
        slots=settings.export_slots,
        queue=settings.export_queue,
        wait_s=settings.export_wait_s,
    )
    await admission.acquire()  # released when the stream ends, however it ends
    stream = _stream(filters, format)
    if format == "csv":
        return csv_out.response(stream, filename="focus.csv", on_close=admission.release)
    return ClosingStreamingResponse(
        stream, media_type="application/json", on_close=admission.release
    )
