"""A learnable synthetic token stream: a sparse random Markov chain.

Each token has `branching` possible successors, fixed by the seed, so a model
can drive its loss from log(vocab) down towards log(branching). The batch for
step s depends only on (seed, s, split), which makes resumption exact.
"""
from __future__ import annotations

import numpy as np

_SPLIT_OFFSET = {"train": 0, "validation": 1 << 40}


def successor_table(vocab_size: int, seed: int, branching: int = 4) -> np.ndarray:
    rng = np.random.default_rng([seed, 7919])
    return rng.integers(0, vocab_size, size=(vocab_size, branching), dtype=np.int32)


def batch(table: np.ndarray, seed: int, index: int, batch_size: int, length: int,
          split: str = "train") -> np.ndarray:
    """int32 [batch_size, length] sequences for step `index` of `split`."""
    rng = np.random.default_rng([seed, _SPLIT_OFFSET[split] + index])
    vocab_size, branching = table.shape
    out = np.empty((batch_size, length), np.int32)
    out[:, 0] = rng.integers(0, vocab_size, size=batch_size)
    choices = rng.integers(0, branching, size=(batch_size, length - 1))
    for t in range(1, length):
        out[:, t] = table[out[:, t - 1], choices[:, t - 1]]
    return out
