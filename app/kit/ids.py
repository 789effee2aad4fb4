"""Ids by their whole value or by a unique prefix, as the CLI and the console show them.

Every id is `<kind>_<32 hex digits>` (`app.models.base.new_id`). Anywhere a route takes an id it
also takes a prefix of it, with or without the kind (`job_3f2a91c0` or `3f2a91c0`), when exactly
one row the caller may see starts with it. Rows of another tenant never take part: a prefix is
neither ambiguous nor found because of them. The whole id is looked up first, by primary key;
only a miss scans the caller's rows (prefixes are typed by people, not sent by programs).
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import QueryableAttribute, Session

from app.errors import AmbiguousId, NotFound

# Like git's shortest abbreviation: fewer hex digits match too many rows to be worth a scan.
MIN_PREFIX_HEX = 4
SHOWN_MATCHES = 5  # ids named in an ambiguity error: enough to pick a longer prefix from


def with_kind(value: str, *, kind: str) -> str:
    """`value` with its kind in front (`3f2a` -> `job_3f2a`); unchanged when it has it."""
    return value if value.startswith(f"{kind}_") else f"{kind}_{value}"


def unique_match(
    session: Session,
    *,
    id_column: QueryableAttribute[str],
    visible: ColumnElement[bool],
    value: str,
    kind: str,
    noun: str,
) -> str:
    """The one visible id that starts with `value`; NotFound if none, AmbiguousId if several."""
    prefix = with_kind(value, kind=kind)
    if len(prefix) - len(kind) - 1 < MIN_PREFIX_HEX:
        raise NotFound(
            f"no {noun} with id {value!r} (a shortened id needs at least {MIN_PREFIX_HEX} "
            f"characters after '{kind}_')"
        )
    rows = session.scalars(
        select(id_column)
        .where(visible, id_column.startswith(prefix, autoescape=True))
        .order_by(id_column)
        .limit(SHOWN_MATCHES + 1)
    ).all()
    if not rows:
        raise NotFound(f"no {noun} with id {value!r}")
    if len(rows) > 1:
        more = " and more" if len(rows) > SHOWN_MATCHES else ""
        shown = ", ".join(rows[:SHOWN_MATCHES])
        raise AmbiguousId(
            f"{value!r} is the start of several {noun} ids ({shown}{more}); give more of the id",
            matches=list(rows[:SHOWN_MATCHES]),
        )
    return rows[0]
