"""Token batches for training and evaluation, whatever the source (see docs/contracts.md)."""
from __future__ import annotations

import itertools
from typing import Iterator

import jax
import numpy as np

from simscale.data import synthetic


def host_batch_size(cfg) -> int:
    n_hosts = jax.process_count()
    if cfg.train.batch_size % n_hosts:
        raise ValueError(f"train.batch_size={cfg.train.batch_size} is not divisible by {n_hosts} hosts")
    return cfg.train.batch_size // n_hosts


def batches(cfg, split: str, start_step: int = 0) -> Iterator[np.ndarray]:
    """int32 [B_host, seq_len + 1] batches; train from `start_step`, validation finite."""
    if split not in ("train", "validation"):
        raise ValueError(f"split must be 'train' or 'validation', not {split!r}")
    if cfg.data.source == "synthetic":
        return _synthetic_batches(cfg, split, start_step)
    from simscale.data import pipeline

    return pipeline.batches(cfg, split, start_step)


def _synthetic_batches(cfg, split: str, start_step: int) -> Iterator[np.ndarray]:
    table = synthetic.successor_table(cfg.model.vocab_size, cfg.seed)
    size, length = host_batch_size(cfg), cfg.train.seq_len + 1
    # Each host keeps its share of the global batch, so any number of hosts trains on the same rows.
    first = jax.process_index() * size
    steps = itertools.count(start_step) if split == "train" else range(cfg.train.eval_batches)
    for step in steps:
        yield synthetic.batch(table, cfg.seed, step, cfg.train.batch_size, length, split)[first:first + size]
