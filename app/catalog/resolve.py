"""Which model an estimate is for: a catalog id, an inline config.json, or a model folder.

Shared by the estimates service, the catalog's model detail, the CLI and job submission; it builds
nothing but the model's analysis (meta device, no weights) and refuses what it cannot build with
a 4xx naming the field.
"""

from __future__ import annotations

import difflib
import json
import threading
from functools import lru_cache
from typing import Any

from app.catalog.guards import check_config
from app.catalog.model_catalog import catalog_model_ids, get_model_config
from app.catalog.schemas import ModelConfigIn, ModelPathIn
from app.errors import InvalidInput, NotFound
from app.estimator.build_budget import ModelTooLarge
from app.estimator.lora import lora_trainable_params
from app.estimator.model_analysis import ModelAnalysis, ModelConfigError, analyze_model
from app.estimator.spec import LoraSpec
from app.kit.paths import confine_model_path, relative_to_root

MAX_CONFIG_FILE_BYTES = 1024 * 1024  # real config.json files are a few KB
MAX_MESSAGE_CHARS = 400  # of a library's error message quoted back to the client
CLOSE_MATCHES = 5
WARM_MODEL = "Qwen/Qwen2.5-0.5B"  # as app.main warms with: its analysis is then cached
_load_lock = threading.Lock()
_loaded = False


def _unknown_model(model_id: str) -> NotFound:
    known = catalog_model_ids()
    by_lower = {k.lower(): k for k in known}
    close = difflib.get_close_matches(model_id.lower(), list(by_lower), n=CLOSE_MATCHES, cutoff=0.5)
    # The part after the owner alone ("Llama-2-7b-hf") is how people often type it.
    tail = model_id.rsplit("/", 1)[-1].lower()
    tails = {k.rsplit("/", 1)[-1].lower(): k for k in known}
    close += [tails[t] for t in difflib.get_close_matches(tail, list(tails), n=3, cutoff=0.6)]
    matches = list(dict.fromkeys(by_lower.get(c, c) for c in close))[:CLOSE_MATCHES]
    hint = f"; close matches: {', '.join(matches)}" if matches else ""
    return NotFound(
        f"model {model_id!r} is not in the catalog{hint}. See GET /v1/catalog/models, or send "
        "{'config': {...}} with the model's config.json",
        extra={"close_matches": matches},
    )


@lru_cache(maxsize=128)
def _catalog_analysis(model_id: str) -> ModelAnalysis:
    try:
        config = get_model_config(model_id)
    except LookupError:
        raise _unknown_model(model_id) from None
    return analyze_model(config)


def short_message(message: str) -> str:
    """A library's error message cut to MAX_MESSAGE_CHARS for quoting back to a client."""
    # transformers lists every known model_type when it meets an unknown one: hundreds of names.
    return message if len(message) <= MAX_MESSAGE_CHARS else message[:MAX_MESSAGE_CHARS] + "..."


def _analyse_config(config: dict[str, Any], *, field: str) -> ModelAnalysis:
    """The analysis of a client's config, built under the budget of app/estimator/build_budget."""
    check_config(config, field=field)
    try:
        return analyze_model(config)
    except ModelTooLarge as exc:
        raise InvalidInput(
            f"the config is refused (model_type={exc.model_type!r}): {exc.detail}",
            field=field,
            model_type=exc.model_type,
        ) from None
    except ModelConfigError as exc:
        raise InvalidInput(
            f"transformers cannot build this config (model_type={exc.model_type!r}): "
            f"{short_message(exc.message)}",
            field=field,
            model_type=exc.model_type,
        ) from None


def ensure_estimator_loaded() -> None:
    """Import torch/transformers/peft and build one model, once per process, under a lock.

    Two threads importing transformers for the first time can see it half-initialised
    ("cannot import name 'AutoConfig'"); the first use is therefore serialised. Afterwards this
    is one boolean check.
    """
    global _loaded
    if _loaded:
        return
    with _load_lock:
        if _loaded:
            return
        lora_trainable_params(analyze_model(get_model_config(WARM_MODEL)), LoraSpec())
        _loaded = True


def resolve_model(model: str | ModelConfigIn | ModelPathIn) -> tuple[ModelAnalysis, str]:
    """The analysis of the requested model and a short reference to it for listings."""
    ensure_estimator_loaded()
    if isinstance(model, str):
        return _catalog_analysis(model), model
    if isinstance(model, ModelConfigIn):
        analysis = _analyse_config(model.config, field="model.config")
        return analysis, f"config:{analysis.model_type}:{analysis.config_hash[:12]}"
    folder = confine_model_path(model.path, field="model.path")
    path = folder / "config.json"
    if not path.is_file():
        raise InvalidInput(f"{model.path!r} holds no config.json", field="model.path")
    if path.stat().st_size > MAX_CONFIG_FILE_BYTES:
        raise InvalidInput(f"config.json is over {MAX_CONFIG_FILE_BYTES} bytes", field="model.path")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"config.json is not JSON: {exc}", field="model.path") from None
    if not isinstance(config, dict):
        raise InvalidInput("config.json does not hold a JSON object", field="model.path")
    return _analyse_config(config, field="model.path"), f"path:{relative_to_root(folder)}"
