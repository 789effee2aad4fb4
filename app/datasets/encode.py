"""Examples to token ids, the one way the upload's statistics and the worker's training do it.

`encode` is called by `app.datasets.tokens` (counting at upload) and by
`worker.training.data` (training): the same ids and the same prompt boundary in both, so the
estimate's loss-token counts are the worker's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from app.datasets.formats import Example, RecordFormat


@dataclass(frozen=True, slots=True)
class Encoded:
    """An example's token ids and how many leading ones are its prompt (masked out of the loss
    when prompts are masked; 0 for plain text and prompt-less chats)."""

    ids: list[int]
    prompt_tokens: int


def masks_prompt(example: Example) -> bool:
    """Whether masking prompts takes anything of `example` out of the loss."""
    return example.prompt_chars > 0 and example.format is not RecordFormat.TEXT


def encode(examples: Sequence[Example], tokenizer: Any) -> list[Encoded]:
    """Token ids of each example, in order.

    The tokenizer adds its special tokens (BOS...) except to text rendered by its own chat
    template, which already holds them. The prompt is the tokens that end within the prompt's
    characters (fast tokenizers' offsets), or as many tokens as the prompt alone encodes to.
    """
    fast = bool(getattr(tokenizer, "is_fast", False))
    out: list[Encoded | None] = [None] * len(examples)
    for templated in (False, True):
        index = [i for i, e in enumerate(examples) if e.templated is templated]
        if not index:
            continue
        batch = [examples[i] for i in index]
        enc = tokenizer(
            [e.text for e in batch],
            add_special_tokens=not templated,
            return_attention_mask=False,
            return_offsets_mapping=fast,
        )
        for k, (i, example) in enumerate(zip(index, batch, strict=True)):
            ids = list(enc["input_ids"][k])
            prompt = 0
            if masks_prompt(example):
                if fast:
                    ends = [end for _, end in enc["offset_mapping"][k]]
                    while prompt < len(ends) and ends[prompt] <= example.prompt_chars:
                        prompt += 1
                else:
                    alone = tokenizer(example.prompt, add_special_tokens=not templated).input_ids
                    prompt = min(len(alone), len(ids))
            out[i] = Encoded(ids, prompt)
    assert all(e is not None for e in out)  # every index was in one of the two groups
    return [e for e in out if e is not None]


def appends_eos(ids: Sequence[int], eos: int | None) -> bool:
    """Whether training appends EOS (learned) to these ids: when the tokenizer did not."""
    return eos is not None and (not ids or ids[-1] != eos)
