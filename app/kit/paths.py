"""Local model paths given by clients, confined to the configured model roots.

A client may name a model folder (for its config or its tokenizer). The path is resolved with
symlinks followed *before* it is compared with the roots, so `../../etc` and a link pointing out
of a root are both refused. Confinement is checked before existence, so the answer never tells
a client whether something exists outside the roots.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from app.config import get_settings
from app.errors import Forbidden, InvalidInput

# Longer than any real folder path; stops pathological inputs before they reach the filesystem.
MAX_MODEL_PATH_CHARS = 1024
# Longest file or folder name Linux file systems take (NAME_MAX); a longer component makes every
# filesystem call raise ENAMETOOLONG.
MAX_NAME_BYTES = 255


def confine_model_path(
    path: str | Path,
    *,
    field: str = "model_path",
    roots: Sequence[Path] | None = None,
    must_be_dir: bool = True,
) -> Path:
    """The resolved `path` if it lies under a model root; 403 outside the roots, 422 if missing.

    A relative path is taken relative to the first root that holds it (else the first root).
    """
    text = str(path)
    if not text.strip() or "\x00" in text or len(text) > MAX_MODEL_PATH_CHARS:
        raise InvalidInput(
            f"{field} must be a non-empty path of at most {MAX_MODEL_PATH_CHARS} characters",
            field=field,
        )
    if any(
        len(part.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES for part in Path(text).parts
    ):
        raise InvalidInput(
            f"{field} has a file or folder name longer than {MAX_NAME_BYTES} bytes",
            field=field,
        )
    allowed = [Path(r).expanduser().resolve() for r in roots] if roots is not None else None
    if allowed is None:
        allowed = get_settings().resolved_model_roots()
    if not allowed:
        raise Forbidden("no model roots are configured (TUNECOST_MODEL_ROOTS); local paths are off")

    try:
        candidate = Path(text).expanduser()
        if not candidate.is_absolute():
            joined = [root / candidate for root in allowed]
            # exists() raises (not False) on a component over NAME_MAX: ENAMETOOLONG.
            candidate = next((p for p in joined if p.exists()), joined[0])
        resolved = candidate.resolve(strict=False)
    except (OSError, RuntimeError) as exc:  # symlink loops, over-long names
        raise InvalidInput(f"{field} cannot be resolved: {exc}", field=field) from None

    if not any(resolved == root or resolved.is_relative_to(root) for root in allowed):
        raise Forbidden(
            f"{field} {text!r} lies outside the allowed model roots (symlinks are followed); "
            "put the model under a folder listed in TUNECOST_MODEL_ROOTS"
        )
    if must_be_dir and not resolved.is_dir():
        raise InvalidInput(f"{field} {text!r} is not a model folder", field=field)
    if not must_be_dir and not resolved.exists():
        raise InvalidInput(f"{field} {text!r} does not exist", field=field)
    return resolved


def relative_to_root(path: Path, *, roots: Sequence[Path] | None = None) -> str:
    """`path` relative to the model root that holds it (for display without server paths)."""
    allowed = list(roots) if roots is not None else get_settings().resolved_model_roots()
    for root in allowed:
        if path == root or path.is_relative_to(root):
            return str(path.relative_to(root)) or "."
    return path.name
