"""The held-out eval set of a dataset and the order pilots take their training data in.

Both are decided by the content of each example, never by a seed or the file's line order, so
every job on the same dataset (any seed, any method, any data fraction) evaluates on the same
items and a pilot on 10% of the data trains on a superset of the 5% pilot's examples. An example
goes to the eval set when its content hash is among the smallest: duplicates of an example always
land on the same side, so none is trained on and evaluated at once. The eval set is identified by
a hash of its items' tokens and loss labels (`eval_set_id`): two jobs with the same id were
scored on exactly the same token sequences and can be compared item by item.

Pure functions (hashlib only): the worker calls them when it prepares data, the API reads the
same constants.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence

SPLIT_SALT = b"tunecost-eval-split-v1"  # changing it changes every dataset's eval set
ORDER_SALT = b"tunecost-train-order-v1"
# A mean loss over 512 items has a standard error of ~4% of the items' spread: enough to tell
# methods apart that differ by a few hundredths of a nat, and one pass stays cheap next to training.
MAX_EVAL_ITEMS = 512


def _digest(salt: bytes, content: str) -> bytes:
    return hashlib.sha256(salt + b"\0" + content.encode("utf-8", "surrogatepass")).digest()


def eval_count(n_items: int, fraction: float) -> int:
    """How many of `n_items` examples the eval set holds (0 for fraction 0 or under two items)."""
    if fraction <= 0 or n_items < 2:
        return 0
    return min(max(1, round(n_items * fraction)), n_items - 1, MAX_EVAL_ITEMS)


def split_indexes(contents: Sequence[str], *, fraction: float) -> tuple[list[int], list[int]]:
    """(train, eval) indexes of the examples, each list in file order.

    The eval set is the `eval_count` examples whose salted content hash is smallest (ties by
    position, so it is total).
    """
    n_eval = eval_count(len(contents), fraction)
    if n_eval == 0:
        return list(range(len(contents))), []
    ranked = sorted(range(len(contents)), key=lambda i: (_digest(SPLIT_SALT, contents[i]), i))
    held = set(ranked[:n_eval])
    return [i for i in range(len(contents)) if i not in held], sorted(held)


def fraction_count(n_items: int, fraction: float) -> int:
    """How many training examples a run on `fraction` of the data uses (at least one)."""
    return n_items if fraction >= 1 else max(1, math.ceil(n_items * fraction))


def fraction_indexes(contents: Sequence[str], *, fraction: float) -> list[int]:
    """The training examples a run on `fraction` of the data uses, in file order.

    They are the first `fraction_count` in one fixed content-hash order, so a larger fraction
    holds every example of a smaller one (pilots on 5%, 10%, 20% are nested).
    """
    if fraction >= 1:
        return list(range(len(contents)))
    ranked = sorted(range(len(contents)), key=lambda i: (_digest(ORDER_SALT, contents[i]), i))
    return sorted(ranked[: fraction_count(len(contents), fraction)])


def eval_set_id(items: Iterable[tuple[Sequence[int], Sequence[int]]]) -> str:
    """The id of an eval set: a hash of each item's token ids and loss labels, in order."""
    h = hashlib.sha256(b"tunecost-eval-set-v1")
    count = 0
    for ids, labels in items:
        h.update(f"{len(ids)}:{','.join(map(str, ids))}|{','.join(map(str, labels))};".encode())
        count += 1
    return f"es_{count}_{h.hexdigest()[:24]}"
