"""A model path whose folder name passes the filesystem's limit is a 422, not a 500."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.errors import InvalidInput
from app.kit.paths import confine_model_path


def test_a_name_over_name_max_is_refused_as_invalid(tmp_path: Path) -> None:
    # 1000 characters: under MAX_MODEL_PATH_CHARS, over every filesystem's 255-byte NAME_MAX.
    with pytest.raises(InvalidInput, match="longer than 255 bytes"):
        confine_model_path("0" * 1000, field="model.path", roots=[tmp_path])
