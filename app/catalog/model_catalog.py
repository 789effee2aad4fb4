"""The model catalog: one Hugging Face `config.json` per popular open model, keyed by hub id.

Files live in `app/catalog/models/` named `<owner>__<name>.json` (the hub id with `/` -> `__`).
They hold the public config numbers of each model; `auto_map` (remote-code hooks) is never kept,
since every catalog architecture is native to transformers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

MODELS_DIR = Path(__file__).with_name("models")
_ID_SEPARATOR = "__"  # stands for "/" in file names


class UnknownModelError(LookupError):
    """A catalog id that is not in the catalog."""

    def __init__(self, model_id: str, known: list[str]) -> None:
        super().__init__(f"model {model_id!r} is not in the catalog; known: {', '.join(known)}")
        self.model_id = model_id


def _file_to_id(path: Path) -> str:
    return path.stem.replace(_ID_SEPARATOR, "/", 1)


@cache
def _load_all() -> dict[str, str]:
    """Hub id -> canonical JSON text (cached; the files never change while running)."""
    out: dict[str, str] = {}
    for path in sorted(MODELS_DIR.glob("*.json")):
        config = json.loads(path.read_text())
        out[_file_to_id(path)] = json.dumps(config, sort_keys=True)
    return out


def load_model_configs() -> dict[str, dict[str, Any]]:
    """Every catalog model's config, keyed by hub id (a fresh copy each call)."""
    return {model_id: json.loads(text) for model_id, text in _load_all().items()}


def catalog_model_ids() -> list[str]:
    """The hub ids in the catalog, sorted."""
    return list(_load_all())


def get_model_config(model_id: str) -> dict[str, Any]:
    """The config of one catalog model; `UnknownModelError` if it is not there."""
    text = _load_all().get(model_id)
    if text is None:
        raise UnknownModelError(model_id, list(_load_all()))
    return dict(json.loads(text))


def resolve_model_config(source: str | Mapping[str, Any]) -> dict[str, Any]:
    """A config dict from a catalog id, `{"config": {...}}` or `{"path": "<model folder>"}`."""
    if isinstance(source, str):
        return get_model_config(source)
    if "config" in source:
        config = source["config"]
        if not isinstance(config, Mapping):
            raise ValueError("'config' must be a JSON object (the model's config.json)")
        return dict(config)
    if "path" in source:
        folder = Path(str(source["path"]))
        path = folder / "config.json" if folder.is_dir() else folder
        if not path.is_file():
            raise ValueError(f"no config.json at {folder}")
        loaded = json.loads(path.read_text())
        if not isinstance(loaded, dict):
            raise ValueError(f"{path} does not hold a JSON object")
        return loaded
    raise ValueError("give a catalog id, {'config': {...}} or {'path': '<model folder>'}")
