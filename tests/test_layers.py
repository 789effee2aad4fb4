"""Layer contracts, checked on the source: the package order of CONTRIBUTING.md (a package imports
only packages below it), no import circle in app/, worker/ or the console's JS modules, app never
imports worker, the estimator is pure, the developer tools stay out of the service and the worker.

The import graph is read from the AST of every module under app/, worker/ and devtools/ (imports
inside functions included: a late import still couples the layers). A module's imports reach its
package's __init__ too, as Python runs it first. Each check also runs on a small fixture tree
with the fault it looks for, so a check that can no longer see a fault fails.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import cache, cached_property
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("app", "worker", "devtools")
# The package order, lowest first (CONTRIBUTING.md, "Package order"). A module may import its
# own layer and the layers below it, never one above. A package not listed here fails the test:
# place it where it belongs.
PACKAGE_ORDER: tuple[tuple[str, ...], ...] = (
    ("app.estimator",),
    ("app", "app.config", "app.errors", "app.kit", "app.db"),
    ("app.models",),
    ("app.auth",),
    ("app.catalog",),
    ("app.datasets",),
    ("app.calibration",),
    ("app.evals",),
    ("app.benefit",),
    ("app.estimates",),
    ("app.webhooks",),
    ("app.budgets",),
    ("app.jobs",),
    ("app.studies",),
    ("app.reports",),
    ("app.health",),
    ("app.cli", "app.ui"),
    ("app.main", "app.openapi_doc"),
    ("worker.training",),
    ("worker",),
)
# What the pure estimator may not reach, directly or through what it imports.
ESTIMATOR_FORBIDDEN = ("fastapi", "starlette", "sqlalchemy", "app.db", "app.models", "worker")
# The one service module that may import the developer tools: the CLI registers their commands.
DEVTOOLS_USERS = ("app.cli.main",)
STATIC_JS = ROOT / "app" / "ui" / "static" / "js"
# Static and dynamic ES module imports of a relative module: `from "./x.js"`, `import("./x.js")`.
JS_IMPORT = re.compile(r"""(?:\bfrom\s*|\bimport\s*\(?\s*)["'](\.{1,2}/[^"']+)["']""")


class PythonTree:
    """The project modules of `packages` under `root` and the imports between them."""

    def __init__(self, root: Path, packages: Iterable[str]) -> None:
        self.root = root
        self.packages = tuple(packages)

    def _module_name(self, path: Path) -> str:
        parts = path.relative_to(self.root).with_suffix("").parts
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    @cached_property
    def sources(self) -> dict[str, Path]:
        """Module name -> file, for every module of the packages."""
        return {
            self._module_name(p): p
            for pkg in self.packages
            for p in sorted((self.root / pkg).rglob("*.py"))
        }

    def imports(self, module: str) -> Iterator[str]:
        """Every name `module` imports (absolute), project modules and external ones."""
        path = self.sources[module]
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

    def own(self, name: str) -> str | None:
        """The project module `name` refers to (itself or its nearest enclosing one), if any."""
        while name:
            if name in self.sources:
                return name
            name = name.rpartition(".")[0]
        return None

    @cache  # noqa: B019  (one tree per test run; the cache lives as long as the tree)
    def edges(self, module: str) -> frozenset[str]:
        """Project modules `module` imports, with the packages Python initialises on the way."""
        out: set[str] = set()
        for name in self.imports(module):
            target = self.own(name)
            if target is None or target == module:
                continue
            parts = target.split(".")
            out.update(".".join(parts[: i + 1]) for i in range(len(parts)))
        out.discard(module)
        return frozenset(out & set(self.sources))

    @cache  # noqa: B019
    def explicit(self, module: str) -> frozenset[str]:
        """Project modules `module` names in its imports (the graph a circle is looked for in)."""
        targets = (self.own(name) for name in self.imports(module))
        return frozenset(t for t in targets if t is not None and t != module)

    def reach(self, module: str) -> set[str]:
        """Every name imported by `module` or by a project module it reaches (external too)."""
        seen, todo, names = {module}, [module], set[str]()
        while todo:
            current = todo.pop()
            names.update(self.imports(current))
            for nxt in self.edges(current):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return names | seen


def cycles(nodes: Iterable[str], neighbours: Callable[[str], Iterable[str]]) -> list[list[str]]:
    """Strongly connected groups of two or more nodes (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(nodes):
        if root in index:
            continue
        work = [(root, iter(sorted(neighbours(root))))]
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
                    work.append((child, iter(sorted(neighbours(child)))))
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


def layer_of(module: str, order: tuple[tuple[str, ...], ...]) -> int | None:
    """The index of the layer whose longest entry is `module` or a package enclosing it."""
    best: tuple[int, int] | None = None  # (entry length, layer)
    for at, layer in enumerate(order):
        for entry in layer:
            if (module == entry or module.startswith(entry + ".")) and (
                best is None or len(entry) > best[0]
            ):
                best = (len(entry), at)
    return None if best is None else best[1]


def back_arrows(tree: PythonTree, order: tuple[tuple[str, ...], ...]) -> list[str]:
    """`a -> b` for each import of a module from a layer above its own, and unplaced modules."""
    found: list[str] = []
    for module in sorted(tree.sources):
        if module.split(".")[0] not in {e.split(".")[0] for layer in order for e in layer}:
            continue  # a package the order does not cover (devtools has its own rules)
        own = layer_of(module, order)
        if own is None:
            found.append(f"{module} is in no layer of the package order")
            continue
        for target in sorted(tree.explicit(module)):
            there = layer_of(target, order)
            if there is not None and there > own:
                found.append(f"{module} -> {target}")
    return found


def js_imports(folder: Path) -> dict[str, set[str]]:
    """Each ES module under `folder` (relative name) -> the modules it imports there."""
    out: dict[str, set[str]] = {}
    for path in sorted(folder.rglob("*.js")):
        if "vendor" in path.relative_to(folder).parts:
            continue
        name = path.relative_to(folder).as_posix()
        targets = set()
        for spec in JS_IMPORT.findall(path.read_text()):
            target = (path.parent / spec).resolve()
            targets.add(target.relative_to(folder.resolve()).as_posix())
        out[name] = targets
    return out


def _graph_cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    return cycles(graph, lambda node: graph.get(node, ()))


PROJECT = PythonTree(ROOT, PACKAGES)


def _hits(names: set[str], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names if any(n == f or n.startswith(f + ".") for f in forbidden))


def test_every_package_imports_only_packages_below_it() -> None:
    assert back_arrows(PROJECT, PACKAGE_ORDER) == []


def test_the_package_order_check_finds_a_back_arrow_and_an_unplaced_package(
    tmp_path: Path,
) -> None:
    files = {
        "app/__init__.py": "",
        "app/estimator/__init__.py": "",
        "app/estimator/engine.py": "from app.catalog.loader import Catalog\n",
        "app/catalog/__init__.py": "",
        "app/catalog/loader.py": "from app.estimator import engine\n",
        "app/stray.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    order = (("app.estimator",), ("app",), ("app.catalog",))
    tree = PythonTree(tmp_path, ("app",))
    # app.stray falls in the `app` layer (the root's modules); the estimator's import of the
    # catalog above it is the one back-arrow.
    assert back_arrows(tree, order) == ["app.estimator.engine -> app.catalog.loader"]
    assert back_arrows(tree, (("app.estimator",), ("app.catalog",))) == [
        "app is in no layer of the package order",
        "app.estimator.engine -> app.catalog.loader",
        "app.stray is in no layer of the package order",
    ]


def test_every_module_of_the_service_and_worker_has_a_layer() -> None:
    # Guards the order check against passing on an empty or misread graph.
    modules = [m for m in PROJECT.sources if m.split(".")[0] in ("app", "worker")]
    assert len(modules) > 150
    assert all(layer_of(m, PACKAGE_ORDER) is not None for m in modules)
    assert layer_of("app.catalog.prices.importers.aws", PACKAGE_ORDER) == layer_of(
        "app.catalog", PACKAGE_ORDER
    )
    assert "app.estimator.engine" in PROJECT.explicit("app.estimates.service")


def test_app_never_imports_worker() -> None:
    offenders = {
        m: hits
        for m in PROJECT.sources
        if m.startswith("app") and (hits := _hits(set(PROJECT.imports(m)), ("worker",)))
    }
    assert offenders == {}


def test_the_service_and_worker_never_import_the_devtools() -> None:
    offenders = {
        m: hits
        for m in PROJECT.sources
        if m.split(".")[0] in ("app", "worker")
        and m not in DEVTOOLS_USERS
        and (hits := _hits(set(PROJECT.imports(m)), ("devtools",)))
    }
    assert offenders == {}


def test_the_devtools_never_import_the_worker() -> None:
    offenders = {
        m: hits
        for m in PROJECT.sources
        if m.startswith("devtools") and (hits := _hits(set(PROJECT.imports(m)), ("worker",)))
    }
    assert offenders == {}


def test_the_contracts_see_the_devtools_and_their_one_user() -> None:
    # Guards the two tests above against passing on an empty graph (a moved or renamed package).
    assert {"devtools.cli", "devtools.demo", "devtools.tinymodel"} <= set(PROJECT.sources)
    assert all("devtools.cli" in PROJECT.explicit(user) for user in DEVTOOLS_USERS)


@pytest.mark.parametrize(
    "module", sorted(m for m in PROJECT.sources if m.startswith("app.estimator"))
)
def test_the_estimator_reaches_no_web_or_database_code(module: str) -> None:
    assert _hits(PROJECT.reach(module), ESTIMATOR_FORBIDDEN) == []


def test_no_import_circle_in_app_worker_or_devtools() -> None:
    # A package's __init__ re-exporting its submodules is not a circle: those submodules do not
    # import the package back (they import siblings by their full names).
    assert cycles(PROJECT.sources, PROJECT.explicit) == []


def test_no_import_circle_between_the_console_modules() -> None:
    graph = js_imports(STATIC_JS)
    assert {"main.js", "api.js", "jobs.js"} <= set(graph)
    assert "api.js" in graph["main.js"]
    assert _graph_cycles(graph) == []


def test_the_circle_checks_find_a_circle(tmp_path: Path) -> None:
    py = {
        "app/__init__.py": "",
        "app/a.py": "from app import b\n",
        "app/b.py": "def f() -> None:\n    from app.c import g\n",
        "app/c.py": "import app.a\n",
        "app/d.py": "from app.a import x\n",
    }
    js = {
        "main.js": 'import { a } from "./api.js";\nimport { j } from "./jobs.js";\n',
        "jobs.js": 'import { m } from "./main.js";\n',
        "api.js": 'const later = () => import("./sub/x.js");\n',
        "sub/x.js": 'export { a } from "../api.js";\n',
    }
    for name, text in py.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    for name, text in js.items():
        (tmp_path / "js" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "js" / name).write_text(text)
    tree = PythonTree(tmp_path, ("app",))
    assert cycles(tree.sources, tree.explicit) == [["app.a", "app.b", "app.c"]]
    assert _graph_cycles(js_imports(tmp_path / "js")) == [
        ["api.js", "sub/x.js"],
        ["jobs.js", "main.js"],
    ]
