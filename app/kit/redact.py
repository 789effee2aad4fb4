"""No absolute server paths in what clients see: stored files by key, models by relative path.

Rows keep the absolute locations the workers need; everything rendered for a client passes
through here. Known roots become short markers (`<storage>/datasets/...`, `<models>/tiny`);
any other absolute path left in free text (a library's error message, a temporary folder) is cut
to its last component.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fsspec.core import url_to_fs

from app.config import get_settings

# An absolute POSIX path inside free text: a slash-rooted run of path characters with at least
# two components (so "1/2" or a lone "/" in prose is left alone).
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/<>-])/(?:[\w.@+~-]+/)+[\w.@+~-]*")


def _roots() -> list[tuple[str, str]]:
    """(prefix, marker) pairs, longest prefix first."""
    settings = get_settings()
    fs, storage = url_to_fs(settings.storage_root)
    storage = storage.rstrip("/")
    pairs = [(str(fs.unstrip_protocol(storage)), "<storage>"), (storage, "<storage>")]
    for root in settings.resolved_model_roots():
        pairs.append((str(root), "<models>"))
    return sorted({p for p in pairs if p[0]}, key=lambda p: -len(p[0]))


def storage_key(url: str) -> str:
    """A stored file's location relative to the storage root (its key), else its last part."""
    for prefix, _ in _roots():
        if url.startswith(prefix + "/"):
            return url[len(prefix) + 1 :]
    return url.rstrip("/").rsplit("/", 1)[-1]


def text(value: str | None) -> str | None:
    """`value` with server paths replaced by root markers or cut to their last component."""
    if not value:
        return value
    for prefix, marker in _roots():
        value = value.replace(prefix, marker)
    return ABSOLUTE_PATH.sub(lambda m: "…/" + m.group(0).rstrip("/").rsplit("/", 1)[-1], value)


def model_path(value: str) -> str:
    """A model folder as the client named it: relative to its model root."""
    path = Path(value)
    for root in get_settings().resolved_model_roots():
        if path == root or path.is_relative_to(root):
            return str(path.relative_to(root)) or "."
    return path.name


def spec(value: dict[str, Any]) -> dict[str, Any]:
    """A job spec for display: the model path relative to its root, no other server paths."""
    out = dict(value)
    model = out.get("model")
    if isinstance(model, dict) and isinstance(model.get("path"), str):
        out["model"] = {**model, "path": model_path(model["path"])}
    return out
