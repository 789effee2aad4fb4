"""Layer contracts, checked on the source: app never imports worker; the estimator is pure; the
developer tools stay out of the service and the worker.

The import graph is read from the AST of every module under app/, worker/ and devtools/ (imports
inside functions included: a late import still couples the layers). A module's imports reach its
package's __init__ too, as Python runs it first.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("app", "worker", "devtools")
# What the pure estimator may not reach, directly or through what it imports.
ESTIMATOR_FORBIDDEN = ("fastapi", "starlette", "sqlalchemy", "app.db", "app.models", "worker")
# The one service module that may import the developer tools: the CLI registers their commands.
DEVTOOLS_USERS = ("app.cli.main",)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _sources() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def _imports(module: str) -> Iterator[str]:
    path = _sources()[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def _own(name: str) -> str | None:
    """The project module `name` refers to (itself or its nearest enclosing one), if any."""
    while name:
        if name in _sources():
            return name
        name = name.rpartition(".")[0]
    return None


@cache
def _edges(module: str) -> frozenset[str]:
    """Project modules `module` imports, with the packages Python initialises on the way."""
    out: set[str] = set()
    for name in _imports(module):
        target = _own(name)
        if target is None or target == module:
            continue
        parts = target.split(".")
        out.update(".".join(parts[: i + 1]) for i in range(len(parts)))
    out.discard(module)
    return frozenset(out & set(_sources()))


@cache
def _explicit(module: str) -> frozenset[str]:
    """Project modules `module` names in its imports (the graph a cycle is looked for in)."""
    targets = (_own(name) for name in _imports(module))
    return frozenset(t for t in targets if t is not None and t != module)


def _cycles() -> list[list[str]]:
    """Strongly connected groups of two or more modules (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(_sources()):
        if root in index:
            continue
        work = [(root, iter(sorted(_explicit(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(_explicit(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    group.append(top)
                    if top == node:
                        break
                if len(group) > 1:
                    found.append(sorted(group))
    return found


def _reach(module: str) -> set[str]:
    """Every name imported by `module` or by a project module it reaches (external ones too)."""
    seen, todo, names = {module}, [module], set[str]()
    while todo:
        current = todo.pop()
        names.update(_imports(current))
        for nxt in _edges(current):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return names | seen


def _hits(names: set[str], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names if any(n == f or n.startswith(f + ".") for f in forbidden))


def test_app_never_imports_worker() -> None:
    offenders = {
        m: hits
        for m in _sources()
        if m.startswith("app") and (hits := _hits(set(_imports(m)), ("worker",)))
    }
    assert offenders == {}


def test_the_service_and_worker_never_import_the_devtools() -> None:
    offenders = {
        m: hits
        for m in _sources()
        if m.split(".")[0] in ("app", "worker")
        and m not in DEVTOOLS_USERS
        and (hits := _hits(set(_imports(m)), ("devtools",)))
    }
    assert offenders == {}


def test_the_devtools_never_import_the_worker() -> None:
    offenders = {
        m: hits
        for m in _sources()
        if m.startswith("devtools") and (hits := _hits(set(_imports(m)), ("worker",)))
    }
    assert offenders == {}


def test_the_contracts_see_the_devtools_and_their_one_user() -> None:
    # Guards the two tests above against passing on an empty graph (a moved or renamed package).
    assert {"devtools.cli", "devtools.demo", "devtools.tinymodel"} <= set(_sources())
    assert all("devtools.cli" in _explicit(user) for user in DEVTOOLS_USERS)


@pytest.mark.parametrize("module", sorted(m for m in _sources() if m.startswith("app.estimator")))
def test_the_estimator_reaches_no_web_or_database_code(module: str) -> None:
    assert _hits(_reach(module), ESTIMATOR_FORBIDDEN) == []


def test_no_import_cycles() -> None:
    # A package's __init__ re-exporting its submodules is not a cycle: those submodules do not
    # import the package back (they import siblings by their full names).
    assert _cycles() == []
