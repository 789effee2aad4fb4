"""Report rollups: the additive figures of finished jobs per tenant, day or month, and group.

One row holds the counts and sums (app/reports/aggregates.py) of the finished jobs of one tenant
whose UTC finish falls in one bucket (`grain` day or month, starting `bucket_start`), of one
method and final status, that share one group value: `dim` is `*` (every job, value ''), a job
column (`gpu`, `model`, `provider`, `team`, `cost_source`; jobs without a value have no row)
or `tag:<key>` (one row per tag value). A job counts in the `*` row and in one row per column
and per tag it has, at both grains. Kept in the transaction that writes the job
(app/reports/rollups.py).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Date, Float, Index, PrimaryKeyConstraint, String, Table

from app.models.base import Base

# The tenant as app/auth/tenancy.py sees it: the job's team, or (no team) the key that made it.
KEY_COLUMNS = ("tenant", "owner_key", "grain", "bucket_start", "method", "status", "dim", "value")
# Figures that count jobs, and figures that sum a quantity (app/reports/aggregates.py STATS).
COUNT_COLUMNS = (
    "jobs",
    "spend_n",
    "cost_usd_n",
    "cost_usd_n_rel",
    "gpu_hours_n",
    "gpu_hours_n_rel",
    "peak_bytes_n",
    "peak_bytes_n_rel",
    "peak_vs_allocated",
    "peak_vs_per_gpu",
    "gpu_hours_all_n",
    "est_cost_all_n",
)
SUM_COLUMNS = (
    "spend_usd",
    "billed_usd",
    "effective_usd",
    "cost_usd_est",
    "cost_usd_act",
    "cost_usd_rel",
    "cost_usd_abs_rel",
    "gpu_hours_est",
    "gpu_hours_act",
    "gpu_hours_rel",
    "gpu_hours_abs_rel",
    "peak_bytes_est",
    "peak_bytes_act",
    "peak_bytes_rel",
    "peak_bytes_abs_rel",
    "gpu_hours_all",
    "est_cost_all",
)

report_rollups = Table(
    "report_rollups",
    Base.metadata,
    Column("tenant", String(200), nullable=False),  # the job's team; '' without one
    Column("owner_key", String(40), nullable=False),  # the creating key when no team, else ''
    Column("grain", String(8), nullable=False),  # day | month
    Column("bucket_start", Date, nullable=False),  # first UTC day of the bucket
    Column("method", String(16), nullable=False),
    Column("status", String(32), nullable=False),
    Column("dim", String(110), nullable=False),  # *, a job column, or tag:<key>
    Column("value", String(300), nullable=False),  # '' for *
    *(Column(name, BigInteger, nullable=False) for name in COUNT_COLUMNS),
    *(Column(name, Float, nullable=False) for name in SUM_COLUMNS),
    # Reports read one tenant's rows of one dim over a range of buckets of one grain.
    PrimaryKeyConstraint(
        "tenant",
        "owner_key",
        "dim",
        "grain",
        "bucket_start",
        "method",
        "status",
        "value",
        name="pk_report_rollups",
    ),
    # An admin's reports span every tenant: one dim of one grain over a range of buckets.
    Index("ix_report_rollups_dim_grain_bucket", "dim", "grain", "bucket_start"),
)
