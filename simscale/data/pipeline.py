"""grain over the packed token dataset: deterministic, resumable, per-host batches.

Train: rows are shuffled by grain from `cfg.seed` and reshuffled each epoch
(infinite repetition); the batch for step s holds global rows
[s*B, (s+1)*B) of that order, this host taking its own B/hosts slice, so it is a
pure function of (seed, s). Validation: rows in stored order, the first
`train.eval_batches` batches (wrapping around a small split).
"""
from __future__ import annotations

import itertools
from typing import Iterator

import grain
import jax
import numpy as np

from simscale.data import datasets, prepared
from simscale.data.stream import host_batch_size


def rows(cfg, split: str) -> "grain.MapDataset":
    """The split's rows as a grain MapDataset (train: shuffled and repeated forever)."""
    data = prepared.prepare(cfg)
    ds = grain.MapDataset.source(datasets.source("tokens", data.dir, split))
    return ds.shuffle(seed=cfg.seed).repeat(None) if split == "train" else ds


def batches(cfg, split: str, start_step: int = 0) -> Iterator[np.ndarray]:
    """int32 [train.batch_size // hosts, seq_len + 1] batches (docs/contracts.md)."""
    ds = rows(cfg, split)
    size, global_size = host_batch_size(cfg), cfg.train.batch_size
    first = jax.process_index() * size
    steps = itertools.count(start_step) if split == "train" else range(cfg.train.eval_batches)
    for step in steps:
        base = step * global_size + first
        yield np.stack([ds[base + b]["tokens"] for b in range(size)]).astype(np.int32, copy=False)
