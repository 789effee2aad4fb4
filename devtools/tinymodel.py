"""A tiny Llama-style model and tokenizer, built offline, for the demo and the tests.

The tokenizer is a byte-level BPE trained on a few paragraphs written for this file; the model has
random weights from a `LlamaConfig`. Nothing is downloaded. `make_tiny_dataset` writes a JSONL
dataset in any of the recognised formats from the same text.
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path
from typing import Any

from app.datasets.formats import RecordFormat

BOS, EOS, PAD = "<s>", "</s>", "<pad>"
MLP_RATIO = 2  # intermediate/hidden; Llama uses ~2.7, any ratio is fine for a test model
MAX_POSITIONS = 2048  # longer than any sequence the tests train on

CORPUS = """\
The harbour town wakes before the sun. Fishing boats leave the quay in a long line, their lamps
swinging, and the gulls follow them out past the breakwater. By seven the bakery has opened, the
market stalls are up, and the first ferry of the day is loading cars for the island.

A good recipe is a small program. It names its inputs, states the order of the steps, and says
what the result should look like. Flour, water, salt and yeast become bread only when the steps are
followed with care: mix, rest, fold, shape, proof, and bake until the crust sounds hollow.

Rivers carve valleys slowly. Over thousands of years the water finds the softest rock, and the
valley widens where the current is strongest. When the river floods, it leaves fine silt on the
plain, and farmers have planted there since long before anyone wrote down a calendar.

The library keeps its oldest maps in a cool room with no windows. Each map is stored flat in a
wide drawer, with a sheet of paper between it and the next. Readers wear cotton gloves and may
only use pencils, because ink cannot be removed from old paper.

Learning a language takes patience. At first every sentence is a puzzle, and the learner counts
words on their fingers. After a few months the patterns become familiar: the verb moves to the
end, the article changes with the noun, and the jokes start to make sense.

A train timetable is a promise made in numbers. The eight fifteen leaves at eight fifteen, calls at
four stations, and arrives at nine forty. When the signals fail, the promise is broken, and the
platform fills with people checking their phones and sighing at the board.

In the garden, tomatoes need sun, water and something to climb. Beans fix nitrogen in the soil,
so gardeners plant them where hungry crops will grow next year. Weeds grow anywhere, at any time,
and they never need to be watered.

Question: what is seven times six? Answer: forty two. Question: what is the capital of France?
Answer: Paris. Question: how many days are in a week? Answer: seven. Question: which is larger,
a mouse or an elephant? Answer: an elephant.
"""


def corpus_sentences() -> list[str]:
    """The built-in corpus split into sentences (used for the tokenizer and tiny datasets)."""
    flat = " ".join(CORPUS.split())
    parts = [p.strip() for p in flat.replace("? ", "?|").replace(". ", ".|").split("|")]
    return [p for p in parts if p]


# Turns as `<|role|>`, each closed by EOS; BOS first. The generation prompt is the header a
# reply follows, so the prompt a trainer masks is the template of the turns before the reply.
TINY_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}"
    "\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def make_tiny_model(
    dest: Path,
    *,
    vocab_size: int = 512,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    seed: int = 0,
    chat_template: bool = False,
) -> Path:
    """Write a tiny random-weight LlamaForCausalLM and its trained BPE tokenizer into `dest`
    (with `chat_template`, a Zephyr-style chat template in the tokenizer, as instruct models
    have)."""
    if hidden_size % heads or heads % kv_heads:
        raise ValueError("hidden_size must divide by heads, and heads by kv_heads")
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer(vocab_size)
    if chat_template:
        tokenizer.chat_template = TINY_CHAT_TEMPLATE
    tokenizer.save_pretrained(dest)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * MLP_RATIO,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=MAX_POSITIONS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(dest, safe_serialization=True)
    return dest


def make_tiny_causal_lm(
    dest: Path, *, config: dict[str, Any], vocab_size: int = 256, seed: int = 0
) -> Path:
    """Write a random-weight causal LM of any family (`config` holds `model_type` and its sizes)
    and the trained BPE tokenizer into `dest`; vocabulary and special ids come from the tokenizer.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer(vocab_size)
    tokenizer.save_pretrained(dest)
    sizes = {k: v for k, v in config.items() if k != "model_type"}
    hf_config = AutoConfig.for_model(
        config["model_type"],
        **sizes,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(hf_config).save_pretrained(dest, safe_serialization=True)
    return dest


def save_tokenizer(dest: Path, *, vocab_size: int = 512) -> Any:
    """Train the corpus BPE tokenizer, save it into `dest` and return it (for hand-built models)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer(vocab_size)
    tokenizer.save_pretrained(dest)
    return tokenizer


def _train_tokenizer(vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodes: no <unk>
        show_progress=False,
    )
    core.train_from_iterator(CORPUS.splitlines(), trainer=trainer)
    bos_id = core.token_to_id(BOS)
    # Like Llama's tokenizer: prepend BOS to every encoded text.
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        model_max_length=MAX_POSITIONS,
    )


def make_tiny_dataset(
    dest_file: Path,
    *,
    n: int = 200,
    fmt: RecordFormat | str = RecordFormat.ALPACA,
    seed: int = 0,
) -> Path:
    """Write `n` JSONL records of format `fmt` from the corpus (gzipped when the name ends .gz)."""
    fmt = RecordFormat(fmt)
    rng = random.Random(seed)
    sentences = corpus_sentences()
    dest_file = Path(dest_file)
    dest_file.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(_record(fmt, rng, sentences)) + "\n" for _ in range(n)]
    payload = "".join(lines).encode()
    if dest_file.suffix == ".gz":
        payload = gzip.compress(payload)
    dest_file.write_bytes(payload)
    return dest_file


def _record(fmt: RecordFormat, rng: random.Random, sentences: list[str]) -> dict[str, Any]:
    first, second = rng.sample(sentences, 2)
    match fmt:
        case RecordFormat.TEXT:
            return {"text": f"{first} {second}"}
        case RecordFormat.PROMPT_COMPLETION:
            return {"prompt": f"Continue: {first}\n", "completion": second}
        case RecordFormat.ALPACA:
            return {"instruction": "Repeat the sentence.", "input": first, "output": first}
        case RecordFormat.CHAT:
            return {
                "messages": [
                    {"role": "user", "content": f"Say something after: {first}"},
                    {"role": "assistant", "content": second},
                ]
            }
        case RecordFormat.SHAREGPT:
            return {
                "system": "Answer with one sentence.",
                "conversations": [
                    {"from": "human", "value": f"Say something after: {first}"},
                    {"from": "gpt", "value": second},
                ],
            }
