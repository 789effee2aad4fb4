"""NUL characters are refused where they enter, naming the field that holds one.

PostgreSQL text cannot hold U+0000; left alone, a NUL in any stored string reaches the database
and comes back as a 422 that can only say "a value" (app/errors.py, DataError). One dependency
of the whole application looks at the query, the path and a JSON body (parsed once, as FastAPI
already does for its body parameters) before any route runs, and names the first holder.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import Request

from app.errors import InvalidInput

NUL = "\x00"
JSON_TYPES = ("application/json", "application/problem+json")


async def refuse_nul(request: Request) -> None:
    """A 422 naming the query parameter, path parameter or JSON field that holds a NUL."""
    for name, value in request.query_params.multi_items():
        if NUL in name or NUL in value:
            raise _refused(["query", name.replace(NUL, "\\0")])
    for name, value in request.path_params.items():
        if NUL in str(value):
            raise _refused(["path", name])
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in JSON_TYPES or request.method in ("GET", "HEAD", "DELETE"):
        return
    try:
        document = await request.json()
    except ValueError:
        return  # not JSON: the route's own parsing answers that, naming the body
    where = next(_holders(document, ["body"]), None)
    if where is not None:
        raise _refused(where)


def _refused(loc: list[str]) -> InvalidInput:
    detail = f"{'.'.join(loc)} holds a NUL character (U+0000); remove it"
    return InvalidInput(detail, errors=[{"loc": loc, "msg": detail, "type": "value_error"}])


def _holders(document: Any, root: list[str]) -> Iterator[list[str]]:
    """Paths of the strings (keys included) in a JSON document that hold a NUL.

    Walked with a stack, not recursion: a body may nest as deep as the JSON parser allowed."""
    stack: list[tuple[Any, list[str]]] = [(document, root)]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            if NUL in node:
                yield path
        elif isinstance(node, dict):
            for key, value in node.items():
                if NUL in key:
                    yield [*path, key.replace(NUL, "\\0")]
                stack.append((value, [*path, key]))
        elif isinstance(node, list):
            stack.extend((value, [*path, str(i)]) for i, value in enumerate(node))
