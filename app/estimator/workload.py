"""How many tokens a run really processes: truncation, padding or packing, epochs and steps.

The estimator charges for processed tokens, padding included, because padded positions cost
the same FLOPs as real ones. The longest micro-batch (not the average) sets peak memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from app.estimator.spec import DatasetShape, TrainingSpec

# Sequence length when neither the request nor the dataset names one: the context most
# instruction-tuning recipes train at (Alpaca/Vicuna/LitGPT defaults use 512-2048).
DEFAULT_SEQ_LEN = 2048
# With group_by_length, micro-batches are formed inside shuffled mega-batches of this many
# micro-batches, each sorted by length: transformers' `get_length_grouped_indices` uses 50
# (trainer_pt_utils, `mega_batch_mult` capped at 50); the worker uses the same number.
GROUP_BY_LENGTH_MEGABATCH = 50


@dataclass(frozen=True)
class Workload:
    """The token budget of one run, independent of how many GPUs share it."""

    num_examples: int  # sequences per epoch as the data loader yields them (packed or not)
    tokens_per_epoch: float  # real tokens after truncation, no padding
    seq_len: int  # truncation length: no sequence is longer
    peak_len: int  # longest sequence actually computed: sets peak memory
    padded_len: float  # mean positions per sequence actually computed (= seq_len when packed)
    epochs: float
    micro_batch_size: int
    gradient_accumulation_steps: int
    packed: bool
    notes: tuple[str, ...] = ()

    @property
    def sequences(self) -> float:
        """Sequences processed over all epochs."""
        return self.num_examples * self.epochs

    @property
    def processed_tokens(self) -> float:
        """Positions computed over all epochs, padding included."""
        return self.sequences * self.padded_len

    @property
    def tokens_per_micro_batch(self) -> float:
        """Mean positions in one micro-batch on one GPU."""
        return self.micro_batch_size * self.padded_len

    @property
    def micro_batches(self) -> int:
        """Micro-batches over all epochs, summed over GPUs."""
        return max(1, math.ceil(self.sequences / self.micro_batch_size))

    def micro_steps_per_gpu(self, data_parallel: int) -> int:
        """Forward/backward passes each GPU runs when `data_parallel` GPUs share the data."""
        return max(1, math.ceil(self.micro_batches / data_parallel))

    def optimizer_steps(self, data_parallel: int) -> int:
        """Optimizer steps when `data_parallel` GPUs share the data.

        One step is one global batch: micro_batch_size x gradient_accumulation_steps x
        data_parallel sequences, as the worker trains it (worker/training/distributed.py).
        """
        per_step = self.gradient_accumulation_steps * data_parallel
        return max(1, math.ceil(self.micro_batches / per_step))


def expected_longest(mean: float, n: int, shortest: float = 0.0) -> float:
    """Expected longest of `n` example lengths with the given mean and shortest length.

    Lengths are taken as the shortest plus an exponential part (mean `mean - shortest`): for
    i.i.d. exponential lengths the maximum of `n` has mean `mean * H_n` (H_n the n-th harmonic
    number; order statistics of the exponential distribution). Token lengths of instruction and
    chat data are right-skewed, which this matches better than a normal model; and every example
    carries its prompt template, so only the part above the shortest varies and pads. Alpaca
    under LitGPT's template (Llama 2 tokens; histogram in Lightning-AI/litgpt
    tutorials/images/prepare_dataset/alpaca.jpg at commit 8641822: shortest 42, median 110,
    mean ~124 read off it): the longest of 2 / 4 / 8 is 1.24 / 1.49 / 1.74x the mean, this
    model says 1.33 / 1.72 / 2.14x, the exponential from zero 1.50 / 2.08 / 2.72x.
    """
    floor = min(max(shortest, 0.0), mean)
    return floor + (mean - floor) * _harmonic(n)


def _harmonic(n: int) -> float:
    return sum(1.0 / k for k in range(1, n + 1))


def expected_grouped_padding(
    mean: float, micro_batch: int, megabatch: int, shortest: float = 0.0
) -> float:
    """Mean padded length per example when micro-batches are cut from length-sorted groups.

    Lengths are the shortest plus an exponential part, as in `expected_longest`. A mega-batch
    of B = micro_batch x megabatch examples sorted longest first gives micro-batch j the
    (j * micro_batch + 1)-th longest as its padded length, whose mean is
    shortest + (mean - shortest) * (H_B - H_{j * micro_batch}) (exponential order statistics).
    """
    size = micro_batch * megabatch
    h_size = _harmonic(size)
    total = sum(h_size - _harmonic(j * micro_batch) for j in range(megabatch))
    floor = min(max(shortest, 0.0), mean)
    return floor + (mean - floor) * total / megabatch


def build_workload(
    *, dataset: DatasetShape, training: TrainingSpec, max_position_embeddings: int | None
) -> Workload:
    """Tokens, sequences and padding for `dataset` trained as `training` says."""
    notes: list[str] = []
    if training.seq_len is not None:
        seq_len = training.seq_len
    elif dataset.max_tokens is not None:
        seq_len = dataset.max_tokens
    else:
        seq_len = min(DEFAULT_SEQ_LEN, max_position_embeddings or DEFAULT_SEQ_LEN)
        notes.append(f"no seq_len or max_tokens given: assumed {seq_len} tokens")
    if max_position_embeddings is not None and seq_len > max_position_embeddings:
        notes.append(f"seq_len {seq_len} exceeds the model's {max_position_embeddings} positions")

    packed = training.packing
    shortest = 0.0  # unknown: lengths from zero, the most padding
    if dataset.num_examples is not None and dataset.avg_tokens is not None:
        mean_len = min(dataset.avg_tokens, seq_len)
        if dataset.min_tokens is not None:
            shortest = min(float(dataset.min_tokens), mean_len)
        if dataset.avg_tokens > seq_len:
            notes.append(f"examples average {dataset.avg_tokens:.0f} tokens; cut to {seq_len}")
        num_examples = dataset.num_examples
        tokens_per_epoch = num_examples * mean_len
    else:
        # Only a token total: nothing is known about example lengths, so count full sequences.
        assert dataset.total_tokens is not None  # guaranteed by DatasetShape's validator
        tokens_per_epoch = dataset.total_tokens
        mean_len = float(seq_len)
        num_examples = max(1, math.ceil(tokens_per_epoch / seq_len))
        if not packed:
            notes.append("only total_tokens given: counted as full sequences of seq_len")
        packed = True

    peak_len = seq_len
    if packed:
        num_sequences = max(1, math.ceil(tokens_per_epoch / seq_len))
        padded_len = float(seq_len)
    elif training.padding == "max_length":
        num_sequences, padded_len = num_examples, float(seq_len)
    else:
        longest = peak_len = min(dataset.max_tokens or seq_len, seq_len)
        num_sequences = num_examples
        if training.group_by_length:
            padded = expected_grouped_padding(
                mean_len, training.micro_batch_size, GROUP_BY_LENGTH_MEGABATCH, shortest
            )
        else:
            padded = expected_longest(mean_len, training.micro_batch_size, shortest)
        padded_len = max(min(float(longest), padded), mean_len)

    return Workload(
        num_examples=num_sequences,
        tokens_per_epoch=tokens_per_epoch,
        seq_len=seq_len,
        peak_len=peak_len,
        padded_len=padded_len,
        epochs=training.epochs,
        micro_batch_size=training.micro_batch_size,
        gradient_accumulation_steps=training.gradient_accumulation_steps,
        packed=packed,
        notes=tuple(notes),
    )
