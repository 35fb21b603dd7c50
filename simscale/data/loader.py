"""Token batches for training and evaluation, whatever the source (docs/contracts.md).

    data = simscale.data.prepare(cfg)                        # None for data.source='synthetic'
    for tokens_BT1 in loader.batches(data, cfg, "train", start_step): ...

The batch of step s is a pure function of (data, seed, s): global rows [s B, (s+1) B) of the
training rows shuffled by grain from `cfg.seed` (reshuffled each epoch, repeated forever), or of
the synthetic stream, each host taking its own B / hosts of them. Validation: the first
`train.eval_batches` batches of the rows in stored order (wrapping around a small split).
"""
from __future__ import annotations

import itertools
from typing import Callable, Iterator

import jax
import numpy as np

from simscale.data import datasets, synthetic

SPLITS = ("train", "validation")


def host_batch_size(cfg) -> int:
    n_hosts = jax.process_count()
    if cfg.train.batch_size % n_hosts:
        raise ValueError(f"train.batch_size={cfg.train.batch_size} is not divisible by {n_hosts} hosts")
    return cfg.train.batch_size // n_hosts


def batches(data, cfg, split: str, start_step: int = 0) -> Iterator[np.ndarray]:
    """int32 [train.batch_size // hosts, seq_len + 1] batches of `data` (a PreparedData, or None for the
    synthetic stream): train from `start_step` on, validation finite."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    size = host_batch_size(cfg)
    first = jax.process_index() * size  # this host's share: any number of hosts trains on the same rows
    rows = (_synthetic_rows if data is None else _prepared_rows)(data, cfg, split, first, size)
    steps = itertools.count(start_step) if split == "train" else range(cfg.train.eval_batches)
    return map(rows, steps)


def _synthetic_rows(_, cfg, split: str, first: int, size: int) -> Callable[[int], np.ndarray]:
    table = synthetic.successor_table(cfg.model.vocab_size, cfg.seed)
    length = cfg.train.seq_len + 1
    return lambda step: synthetic.batch(table, cfg.seed, step, cfg.train.batch_size, length,
                                        split)[first:first + size]


def _prepared_rows(data, cfg, split: str, first: int, size: int) -> Callable[[int], np.ndarray]:
    import grain

    ds = grain.MapDataset.source(datasets.source("tokens", data.dir, split))
    if split == "train":
        ds = ds.shuffle(seed=cfg.seed).repeat(None)
    B = cfg.train.batch_size
    return lambda step: (np.stack([ds[step * B + first + i]["tokens"] for i in range(size)])
                         .astype(np.int32, copy=False))
