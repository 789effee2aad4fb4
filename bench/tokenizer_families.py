"""Characters per token of real tokenizers, per model family: the source of the approximation
an upload uses when the model's own tokenizer is not on the machine
(`app/datasets/tokens.py`, FAMILY_CHARS_PER_TOKEN).

Nothing is downloaded from a model hub. The tokenizers are the vocabulary-only GGUF files
llama.cpp tests its tokenizers with (`vendor/llama.cpp/models/ggml-vocab-<family>.gguf` in the
llama-cpp-python source distribution, from PyPI), loaded by transformers' GGUF converter
(`pip install gguf`). Each is first checked against llama.cpp's own expected ids for its test
strings (the `.gguf.inp` / `.gguf.out` files beside it), then run over three kinds of text from
this repository: English prose (README.md and CONTRIBUTING.md outside code blocks), Python
source (app/), and fine-tuning records (the tiny datasets of devtools/, rendered as the upload
renders them).

    pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d /tmp/lcp
    tar xzf /tmp/lcp/llama_cpp_python-0.3.36.tar.gz -C /tmp/lcp
    PYTHONPATH=. python bench/tokenizer_families.py \\
        /tmp/lcp/llama_cpp_python-0.3.36/vendor/llama.cpp/models

Prints, per family, the characters per token of each kind of text and of all of it, and the
largest relative error of the all-text figure on one kind; exits non-zero when a family could
not be measured or a kind of text is empty.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from app.datasets.formats import RecordFormat, render_record
from devtools.tinymodel import make_tiny_dataset

ROOT = Path(__file__).resolve().parent.parent
# The families of the catalog's models that llama.cpp ships a vocabulary of and transformers
# can convert: Llama 3 (llama-bpe), Llama 2 (llama-spm), Qwen2, GPT-2, Phi-3.
FAMILIES = ("llama-bpe", "llama-spm", "qwen2", "gpt-2", "phi-3")
CHUNK_CHARS = 2000  # texts are tokenized in pieces of this size, as dataset rows are
TEST_SEPARATOR = "\n__ggml_vocab_test__\n"


def prose() -> list[str]:
    """README and CONTRIBUTING without their code blocks."""
    out = []
    for name in ("README.md", "CONTRIBUTING.md"):
        text = re.sub(r"```.*?```", "", (ROOT / name).read_text(), flags=re.S)
        out.append(text)
    return _chunks("\n".join(out))


def code() -> list[str]:
    """The service's Python source."""
    return _chunks("\n".join(p.read_text() for p in sorted((ROOT / "app").rglob("*.py"))))


def records() -> list[str]:
    """The tiny datasets of every record format, rendered as an upload renders them."""
    texts = []
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in RecordFormat:
            path = make_tiny_dataset(Path(tmp) / f"{fmt}.jsonl", n=200, fmt=fmt, seed=1)
            for line in path.read_text().splitlines():
                texts.append(render_record(json.loads(line)).text)
    return texts


def _chunks(text: str) -> list[str]:
    return [text[i : i + CHUNK_CHARS] for i in range(0, len(text), CHUNK_CHARS)]


def conversion_check(tokenizer: Any, folder: Path, family: str) -> tuple[int, int]:
    """(matching, total) of llama.cpp's test strings whose ids the converted tokenizer gives."""
    inp = folder / f"ggml-vocab-{family}.gguf.inp"
    out = folder / f"ggml-vocab-{family}.gguf.out"
    if not inp.exists() or not out.exists():
        return 0, 0
    strings = inp.read_text().split(TEST_SEPARATOR)
    expected = out.read_text().split("\n")
    matching = 0
    for text, ids in zip(strings, expected, strict=False):
        got = tokenizer(text, add_special_tokens=False).input_ids
        matching += got == [int(x) for x in ids.split()]
    return matching, min(len(strings), len(expected))


def chars_per_token(tokenizer: Any, texts: list[str]) -> float:
    """Characters over tokens (no special tokens) over all `texts`."""
    tokens = sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False).input_ids)
    return sum(map(len, texts)) / tokens


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("vocab_dir", type=Path, help="llama.cpp's models/ folder")
    args = parser.parse_args()
    kinds = {"prose": prose(), "code": code(), "records": records()}
    for name, texts in kinds.items():
        print(f"{name}: {len(texts)} texts, {sum(map(len, texts)):,} characters")
        if not texts:
            return 1
    measured = 0
    for family in FAMILIES:
        gguf = args.vocab_dir / f"ggml-vocab-{family}.gguf"
        if not gguf.exists():
            print(f"{family}: no {gguf.name}", file=sys.stderr)
            continue
        tokenizer = AutoTokenizer.from_pretrained(str(args.vocab_dir), gguf_file=gguf.name)
        ok, total = conversion_check(tokenizer, args.vocab_dir, family)
        per_kind = {name: chars_per_token(tokenizer, texts) for name, texts in kinds.items()}
        # Each kind of text weighs the same (the code alone is 3/4 of the characters).
        overall = sum(per_kind.values()) / len(per_kind)
        error = max(abs(v / overall - 1) for v in per_kind.values())  # tokens = chars / ratio
        shown = ", ".join(f"{k} {v:.2f}" for k, v in per_kind.items())
        print(
            f"{family}: vocab {len(tokenizer):,}; llama.cpp test ids {ok}/{total}; chars/token "
            f"{shown}; mean of the kinds {overall:.2f}; largest error on one kind {error:.0%}"
        )
        measured += 1
    return 0 if measured == len(FAMILIES) else 1


if __name__ == "__main__":
    sys.exit(main())
