"""Jobs keep the three memory figures; workers report the speed they measured of their device.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 13:30:00

`est_peak_bytes` stays what must fit on a GPU (allocated + allocator slack + CUDA context); the
estimate's allocated and reserved bytes are stored beside it, and the worker's reserved peak and
the device's own count of the process's memory beside the allocated peak it always stored, so
estimate and actual are compared like with like. Jobs written before keep them empty.

A worker measures its device at start (sustained matmul TFLOP/s, memory GB/s, the host's seconds
per decoder layer) and its heartbeat row carries them; empty until it has.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = (
    "est_allocated_bytes",
    "est_reserved_bytes",
    "act_reserved_bytes",
    "act_device_peak_bytes",
)


_SPEED = ("matmul_tflops", "memory_gbps", "host_s_per_layer")


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        for name in _COLUMNS:
            batch.add_column(sa.Column(name, sa.BigInteger(), nullable=True))
    with op.batch_alter_table("workers") as batch:
        for name in _SPEED:
            batch.add_column(sa.Column(name, sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        for name in reversed(_SPEED):
            batch.drop_column(name)
    with op.batch_alter_table("jobs") as batch:
        for name in reversed(_COLUMNS):
            batch.drop_column(name)
